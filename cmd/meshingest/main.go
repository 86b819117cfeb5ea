// Command meshingest ingests MeshCore packets from MQTT into CoreScope's
// SQLite database through a durable on-disk spool.
//
// Each subcommand lives in its own file; main only dispatches.
package main

import (
	"fmt"
	"os"
)

// command is one subcommand: its name, a one-line summary for the usage
// text, and the function that runs it with the remaining arguments. run
// returns the process exit status.
type command struct {
	name    string
	summary string
	run     func(args []string) int
}

// commands lists every subcommand in the order the usage text shows them.
func commands() []command {
	return []command{
		{"demo", "see it work: embedded broker, both stages, the real capture replayed, a summary", runDemo},
		{"receive", "subscribe to the MQTT sources and append every message to the spool", runReceive},
		{"run", "run the receiver and the writer as supervised children (embedded broker if none is configured)", runRun},
		{"write", "drain the spool into CoreScope's SQLite database until SIGTERM", runWrite},
		{"redecode", "decode stored transmissions again after channel keys were added", runRedecode},
		{"spool", "inspect and maintain the spool: status, ls, peek, dump, verify, export, import, quarantine", runSpool},
		{"replay", "publish a JSONL capture to an MQTT broker", runReplay},
		{"decode", "decode MeshCore frames (hex) and print what would be stored", runDecode},
		{"systemd", "print or install the systemd units of the two services", runSystemd},
		{"version", "print the version, the commit and the build date (also --version)", runVersion},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

func dispatch(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		return runVersion(args[1:])
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:])
		}
	}
	fmt.Fprintf(os.Stderr, "meshingest: unknown command %q; run 'meshingest help' for the list\n", args[0])
	return 2
}

func usage() {
	fmt.Fprintln(os.Stderr, "meshingest: MeshCore MQTT packets into CoreScope's SQLite database, through a durable spool")
	fmt.Fprintln(os.Stderr)
	fmt.Fprintln(os.Stderr, "usage: meshingest <command> [flags] [args]")
	fmt.Fprintln(os.Stderr)
	for _, c := range commands() {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(os.Stderr)
	fmt.Fprintln(os.Stderr, "'meshingest <command> -h' shows a command's flags.")
}
