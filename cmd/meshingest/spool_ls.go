package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/meshingest/meshingest/spool"
)

func spoolLs(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("ls", "ls [--dir DIR | --config FILE] [--json]", stderr, true)
	if code := f.parse(args); code >= 0 {
		return code
	}
	segs, err := spool.ListSegments(f.dir)
	if err != nil {
		return f.fail(err)
	}
	if f.json {
		if segs == nil {
			segs = []spool.SegmentInfo{}
		}
		writeJSON(stdout, segs)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tSTATE\tSPOOL\tRECORDS\tBYTES\tFIRST SEQ\tLAST SEQ\tOLDEST\tNEWEST\tPROBLEM")
	for _, s := range segs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", s.ID, s.State, s.Spool.Short(), s.Records, s.Bytes, s.FirstSeq, s.LastSeq,
			fmtTime(s.Oldest), fmtTime(s.Newest), s.Problem)
	}
	tw.Flush()
	return 0
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339Nano)
}
