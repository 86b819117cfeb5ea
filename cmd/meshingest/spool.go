package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

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
(or MESHINGEST_SPOOL_DIR). --json prints JSON on every read command.
`

func runSpool(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, spoolUsage)
		if len(args) == 0 {
			return 2
		}
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

// spoolFlags are the flags every spool command takes.
type spoolFlags struct {
	fs      *flag.FlagSet
	name    string
	dir     string
	config  string
	json    bool
	stderr  io.Writer
	usage   string
	spool   shared.SpoolConfig
	hasJSON bool
}

func newSpoolFlags(name, usage string, stderr io.Writer, withJSON bool) *spoolFlags {
	f := &spoolFlags{fs: flag.NewFlagSet("spool "+name, flag.ContinueOnError), name: name, stderr: stderr, usage: usage, hasJSON: withJSON}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.dir, "dir", "", "spool folder `DIR` (default: spoolDir from --config)")
	f.fs.StringVar(&f.config, "config", "", "config.json `FILE` giving spoolDir")
	if withJSON {
		f.fs.BoolVar(&f.json, "json", false, "print JSON")
	}
	f.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: meshingest spool %s\n\n", usage)
		f.fs.PrintDefaults()
	}
	return f
}

// parse parses args and resolves the spool folder; a non-negative code
// means "exit with it".
func (f *spoolFlags) parse(args []string) int {
	if status, ok := parseFlags(f.fs, args); !ok {
		return status
	}
	if f.dir == "" {
		cfg, err := shared.LoadConfig(f.config)
		if err != nil {
			fmt.Fprintf(f.stderr, "meshingest spool %s: %v\n", f.name, err)
			return 2
		}
		f.dir, f.spool = cfg.SpoolDir, cfg.Spool
	} else if f.config != "" {
		if cfg, err := shared.LoadConfig(f.config); err == nil {
			f.spool = cfg.Spool
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
