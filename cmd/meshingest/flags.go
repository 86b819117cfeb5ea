package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/meshingest/meshingest/shared"
)

// parseFlags parses the flags of a subcommand and says whether it goes on;
// when it does not, status is the exit status: 0 after -h, 2 after a bad
// flag (the flag package has printed why). Help that was asked for goes
// to standard output (for a pager or grep), the usage after a mistake to
// fs's output, standard error by default. Positional arguments are left
// in fs.Args(). fs.Usage must write to fs.Output().
func parseFlags(fs *flag.FlagSet, args []string) (status int, ok bool) {
	return parseFlagsTo(fs, args, os.Stdout)
}

// parseFlagsTo is parseFlags with help going to stdout.
func parseFlagsTo(fs *flag.FlagSet, args []string, stdout io.Writer) (status int, ok bool) {
	errOut := fs.Output()
	var printed bytes.Buffer
	fs.SetOutput(&printed)
	err := fs.Parse(args)
	fs.SetOutput(errOut)
	switch {
	case errors.Is(err, flag.ErrHelp):
		stdout.Write(printed.Bytes())
		return 0, false
	case err != nil:
		errOut.Write(printed.Bytes())
		return 2, false
	}
	return 0, true
}

// parseFlagsOnly is parseFlags for a subcommand that takes no positional
// argument: a stray one is refused (exit status 2) rather than ignored, so
// `meshingest write config.json` does not run with the defaults.
func parseFlagsOnly(fs *flag.FlagSet, args []string) (status int, ok bool) {
	return parseFlagsOnlyTo(fs, args, os.Stdout)
}

// parseFlagsOnlyTo is parseFlagsOnly with help going to stdout.
func parseFlagsOnlyTo(fs *flag.FlagSet, args []string, stdout io.Writer) (status int, ok bool) {
	if status, ok := parseFlagsTo(fs, args, stdout); !ok {
		return status, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "meshingest %s: unexpected argument %q: this command takes flags only (-h lists them)\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// loadConfig loads the configuration for the subcommand fs parses flags
// for, printing the error (which names the file and the field) on fs's
// output.
func loadConfig(fs *flag.FlagSet, path string) (*shared.Config, bool) {
	cfg, err := shared.LoadConfig(path)
	if err != nil {
		fmt.Fprintf(fs.Output(), "meshingest %s: %v\n", fs.Name(), err)
		return nil, false
	}
	return cfg, true
}
