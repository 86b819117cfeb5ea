package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshingest/meshingest/deploy"
	"github.com/meshingest/meshingest/shared"
)

const systemdUsage = `usage: meshingest systemd print [--out DIR] [flags]
       meshingest systemd install [--root DIR] [--now] [flags]

print writes the two units (meshingest-receiver.service,
meshingest-writer.service) and the sysusers.d entry into DIR, or shows them
on standard output. install puts them under /etc, creates the user with
systemd-sysusers, reloads systemd and, with --now, enables and starts both.

flags:
`

func runSystemd(args []string) int {
	if len(args) == 0 || (args[0] != "print" && args[0] != "install") {
		fmt.Fprint(os.Stderr, systemdUsage)
		fmt.Fprintln(os.Stderr, "  (run 'meshingest systemd print -h' for the flags)")
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("systemd "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, systemdUsage); fs.PrintDefaults() }
	binary := fs.String("binary", deploy.DefaultBinary, "absolute `path` of the meshingest binary the units run")
	config := fs.String("config", deploy.DefaultConfig, "absolute `path` of the configuration file (CoreScope's config.json works)")
	user := fs.String("user", deploy.DefaultUser, "the user both services run as")
	out := fs.String("out", "", "print: write the files into this `folder` instead of standard output")
	root := fs.String("root", "/", "install: the root to install below (an image being prepared)")
	now := fs.Bool("now", false, "install: enable and start both services")
	if status, ok := parseFlagsOnly(fs, args[1:]); !ok {
		return status
	}

	p := deploy.Params{Binary: *binary, Config: *config, User: *user}
	// The configuration's folders become ReadWritePaths= (those outside
	// the state directory) and RequiresMountsFor=. A configuration not
	// written yet has the default folders.
	cfgPath := filepath.Join(*root, *config)
	cfg, err := shared.LoadConfig(cfgPath)
	if err != nil && !isMissingConfig(cfgPath) {
		fmt.Fprintf(os.Stderr, "meshingest systemd %s: %v\n", sub, err)
		return 1
	}
	p.FromConfig(cfg)
	files, err := deploy.Render(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshingest systemd %s: %v\n", sub, err)
		return 2
	}

	switch {
	case sub == "print" && *out == "":
		for _, f := range files {
			fmt.Printf("# ---- %s (install in /%s)\n%s\n", f.Name, f.Dir, f.Data)
		}
	case sub == "print":
		if err := deploy.WriteFiles(*out, files); err != nil {
			fmt.Fprintln(os.Stderr, "meshingest", err)
			return 1
		}
		for _, f := range files {
			fmt.Fprintf(os.Stderr, "wrote %s (install in /%s)\n", filepath.Join(*out, f.Name), f.Dir)
		}
	default:
		err := deploy.Install(files, p, deploy.InstallOptions{Root: *root, Enable: *now, Out: os.Stdout})
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshingest", err)
			return 1
		}
	}
	return 0
}

func isMissingConfig(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}
