package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meshingest/meshingest/internal/demo"
	"github.com/meshingest/meshingest/shared"
)

const demoUsage = `usage: meshingest demo [--dir DIR]

Runs the whole pipeline on real traffic: starts an embedded MQTT broker, the
receiver and the writer (as 'meshingest run' does), replays the 531 real
MQTT messages built into the binary, waits until every one is in the
database, and prints what the database holds. Needs nothing but this binary.

flags:
`

func runDemo(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), demoUsage); fs.PrintDefaults() }
	dir := fs.String("dir", "", "new or empty `folder` for the database, spool and logs (default: a new temporary folder, kept)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up when the writer has not drained everything by then")
	if status, ok := parseFlagsOnly(fs, args); !ok {
		return status
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "meshingest-demo-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshingest demo:", err)
			return 1
		}
		*dir = d
	}
	ctx, _, stop := shared.SignalContext(context.Background())
	defer stop()
	fmt.Printf("meshingest demo in %s\n", *dir)
	if _, err := demo.Run(ctx, demo.Options{Dir: *dir, Timeout: *timeout, Out: os.Stdout}); err != nil {
		fmt.Fprintln(os.Stderr, "meshingest", err)
		return 1
	}
	return 0
}
