package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

const spoolUsage = `usage: meshingest spool <command> [--dir DIR | --config FILE] [flags]

Inspects and maintains the spool while the receiver and the writer run.
Read commands never wait on the receiver's active segment.

  status      depth, oldest/newest record, active segment, writer position (--watch)
  ls          the segment files
  peek        the next records the writer will read (-n N)
  dump        every record in the sealed segments
  verify      check every checksum; exit 1 when anything is damaged
  export      write the sealed records as JSONL (corpus format) to stdout
  import      append a JSONL capture (needs the receiver stopped)
  quarantine  ls | requeue [NAME...]
  identity    the folder's spool identity (--adopt: a moved folder is the original)

--dir DIR names the spool folder; otherwise spoolDir from --config FILE
(or MESHINGEST_SPOOL_DIR). Every command but import refuses a folder that
is not a spool. --json prints one JSON document (status, ls, verify,
quarantine, identity), or one per record, a line each (JSON Lines: peek,
dump, status --watch). 'meshingest spool <command> -h' shows its flags.
`

func runSpool(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, spoolUsage)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stdout, spoolUsage)
		return 0
	}
	sub := map[string]func([]string, io.Writer, io.Writer) int{
		"status":     spoolStatus,
		"ls":         spoolLs,
		"peek":       spoolPeek,
		"dump":       spoolDump,
		"verify":     spoolVerify,
		"export":     spoolExport,
		"import":     spoolImport,
		"quarantine": spoolQuarantine,
		"identity":   spoolIdentity,
	}
	run, ok := sub[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "meshingest spool: unknown command %q\n\n%s", args[0], spoolUsage)
		return 2
	}
	return run(args[1:], os.Stdout, os.Stderr)
}

// jsonOutput is what --json prints.
type jsonOutput int

const (
	noJSON    jsonOutput = iota
	jsonDoc              // one JSON document
	jsonLines            // one JSON document per record, a line each
)

// spoolArgs is what a spool command takes besides its flags.
type spoolArgs int

const (
	noArgs    spoolArgs = iota // a stray argument (a path without --dir) is refused
	itemNames                  // quarantine item names, never paths
	oneFile                    // exactly one file (or -)
)

// spoolFlags are the flags every spool command takes.
type spoolFlags struct {
	fs             *flag.FlagSet
	name           string
	dir            string
	config         string
	json           bool
	stdout, stderr io.Writer
	usage          string
	spool          shared.SpoolConfig
	args           spoolArgs
	// mayCreate lets the command make the spool folder (import); every
	// other command refuses a folder that is not a spool.
	mayCreate bool
	// instances lets the folder be a spoolDir of receiver instances
	// (status): one whose subfolders are the spools.
	instances bool
	// cfg is the configuration when --config was given or needed.
	cfg *shared.Config
}

func newSpoolFlags(name, usage string, stdout, stderr io.Writer, out jsonOutput) *spoolFlags {
	f := &spoolFlags{fs: flag.NewFlagSet("spool "+name, flag.ContinueOnError), name: name, stdout: stdout, stderr: stderr, usage: usage}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.dir, "dir", "", "spool folder `DIR` (default: spoolDir from --config)")
	f.fs.StringVar(&f.config, "config", "", "config.json `FILE` giving spoolDir")
	switch out {
	case jsonDoc:
		f.fs.BoolVar(&f.json, "json", false, "print one JSON document")
	case jsonLines:
		f.fs.BoolVar(&f.json, "json", false, "print one JSON document per record, a line each (JSON Lines)")
	}
	f.fs.Usage = func() {
		fmt.Fprintf(f.fs.Output(), "usage: meshingest spool %s\n\n", usage)
		f.fs.PrintDefaults()
	}
	return f
}

// parse parses args and resolves the spool folder; a non-negative code
// means "exit with it". Help that was asked for goes to stdout. A
// positional argument a command does not take is refused, and so is a
// folder that is not a spool (unless the command may create it).
func (f *spoolFlags) parse(args []string) int {
	if status, ok := parseFlagsTo(f.fs, args, f.stdout); !ok {
		return status
	}
	switch f.args {
	case noArgs:
		if f.fs.NArg() > 0 {
			fmt.Fprintf(f.stderr, "meshingest spool %s: unexpected argument %q: give the folder with --dir (-h lists the flags)\n", f.name, f.fs.Arg(0))
			return 2
		}
	case itemNames:
		for _, a := range f.fs.Args() {
			if strings.ContainsRune(a, '/') {
				fmt.Fprintf(f.stderr, "meshingest spool %s: %q: give item names as quarantine ls shows them, and the folder with --dir\n", f.name, a)
				return 2
			}
		}
	case oneFile:
		if f.fs.NArg() != 1 {
			f.fs.Usage()
			return 2
		}
	}
	if f.dir == "" {
		cfg, err := shared.LoadConfig(f.config)
		if err != nil {
			fmt.Fprintf(f.stderr, "meshingest spool %s: %v\n", f.name, err)
			return 2
		}
		f.dir, f.spool, f.cfg = cfg.SpoolDir, cfg.Spool, cfg
	} else if f.config != "" {
		if cfg, err := shared.LoadConfig(f.config); err == nil {
			f.spool, f.cfg = cfg.Spool, cfg
		}
	}
	if f.instances {
		if l, err := readSpoolLayout(f.dir); err == nil && l.instances() {
			return -1
		}
	}
	if !f.mayCreate {
		if err := spool.CheckFolder(f.dir); err != nil {
			return f.fail(err)
		}
	}
	return -1
}

func (f *spoolFlags) fail(err error) int {
	fmt.Fprintf(f.stderr, "meshingest spool %s: %v\n", f.name, err)
	return 1
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

func openInspectReader(f *spoolFlags, onDamage func(spool.QuarantineEvent)) (*spool.Reader, error) {
	return spool.OpenReader(f.dir, spool.ReaderOptions{Inspect: true, OnQuarantine: onDamage})
}
