package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/meshingest/meshingest/spool"
)

func spoolQuarantine(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: meshingest spool quarantine ls|requeue [--dir DIR | --config FILE] [--json] [NAME...]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	if len(args) == 0 || (args[0] != "ls" && args[0] != "requeue") {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if args[0] == "ls" {
		return quarantineLs(args[1:], stdout, stderr)
	}
	return quarantineRequeue(args[1:], stdout, stderr)
}

func quarantineLs(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("quarantine ls", "quarantine ls [--dir DIR | --config FILE] [--json]", stdout, stderr, jsonDoc)
	if code := f.parse(args); code >= 0 {
		return code
	}
	items, err := spool.ListQuarantine(f.dir)
	if err != nil {
		return f.fail(err)
	}
	if f.json {
		if items == nil {
			items = []spool.QuarantineItem{}
		}
		writeJSON(stdout, items)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tBYTES\tSEGMENT\tQUARANTINED\tREASON")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", it.Name, it.Kind, it.Bytes, it.Segment, it.At.Format(time.RFC3339), it.Reason)
	}
	tw.Flush()
	return 0
}

func quarantineRequeue(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("quarantine requeue", "quarantine requeue [--dir DIR | --config FILE] [--json] [NAME...]", stdout, stderr, jsonDoc)
	f.args = itemNames
	if code := f.parse(args); code >= 0 {
		return code
	}
	app, err := spool.OpenAppender(f.dir, spool.OptionsFromConfig(f.spool))
	if err != nil {
		if errors.Is(err, spool.ErrLocked) {
			fmt.Fprintf(stderr, "meshingest spool quarantine requeue: %v\nstop the receiver, requeue, then start it again\n", err)
			return 1
		}
		return f.fail(err)
	}
	results, err := spool.Requeue(app, f.fs.Args())
	if cerr := app.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return f.fail(err)
	}
	status := 0
	if f.json {
		if results == nil {
			results = []spool.RequeueResult{}
		}
		writeJSON(stdout, results)
	}
	for _, r := range results {
		if r.Err != "" {
			status = 1
		}
		if f.json {
			continue
		} else if r.Err != "" {
			fmt.Fprintf(stdout, "%s: kept in quarantine: %s\n", r.Name, r.Err)
		} else {
			fmt.Fprintf(stdout, "%s: requeued\n", r.Name)
		}
	}
	if !f.json {
		fmt.Fprintf(stdout, "%d items processed\n", len(results))
	}
	return status
}
