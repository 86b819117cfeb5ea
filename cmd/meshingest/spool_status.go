package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/meshingest/meshingest/spool"
)

func spoolStatus(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("status", "status [--dir DIR | --config FILE] [--json] [--watch]", stderr, true)
	watch := f.fs.Bool("watch", false, "refresh every second with append and drain rates and the time to empty")
	if code := f.parse(args); code >= 0 {
		return code
	}
	st, err := spool.Inspect(f.dir)
	if err != nil {
		return f.fail(err)
	}
	if !*watch {
		if f.json {
			writeJSON(stdout, st)
		} else {
			printStatus(stdout, st, nil)
		}
		return 0
	}
	prev, r := st, rates{}
	for {
		time.Sleep(time.Second)
		cur, err := spool.Inspect(f.dir)
		if err != nil {
			return f.fail(err)
		}
		r = spoolRates(prev, cur, r)
		if f.json {
			writeJSON(stdout, struct {
				spool.Status
				Rates rates `json:"rates"`
			}{cur, r})
		} else {
			fmt.Fprint(stdout, "\033[H\033[2J")
			printStatus(stdout, cur, &r)
		}
		if cur.AppenderUpdated.After(prev.AppenderUpdated) || !cur.AppenderRunning {
			prev = cur
		} else {
			prev.At, prev.WriterPosition, prev.Records = cur.At, cur.WriterPosition, cur.Records
		}
	}
}

type rates struct {
	AppendPerSec float64 `json:"append_per_s"`
	DrainPerSec  float64 `json:"drain_per_s"`
	// ETASeconds is the time to empty at these rates; -1 when not draining
	// faster than appending.
	ETASeconds float64 `json:"eta_s"`
}

// spoolRates derives rates from two readings: appends from the appender's
// counter over the time between its own status updates (it publishes once
// a second, out of step with us), drains from the advance of the writer's
// position (Seqs are contiguous within a segment).
func spoolRates(prev, cur spool.Status, last rates) rates {
	r := last
	if dt := cur.AppenderUpdated.Sub(prev.AppenderUpdated).Seconds(); dt > 0 && cur.AppendedRecords >= prev.AppendedRecords {
		r.AppendPerSec = float64(cur.AppendedRecords-prev.AppendedRecords) / dt
	} else if !cur.AppenderRunning {
		r.AppendPerSec = 0
	}
	if dt := cur.At.Sub(prev.At).Seconds(); dt > 0 {
		var from, to uint64
		if prev.WriterPosition != nil {
			from = prev.WriterPosition.Seq
		}
		if cur.WriterPosition != nil {
			to = cur.WriterPosition.Seq
		}
		r.DrainPerSec = 0
		if from > 0 && to > from {
			r.DrainPerSec = float64(to-from) / dt
		}
	}
	r.ETASeconds = -1
	if cur.Records == 0 {
		r.ETASeconds = 0
	} else if net := r.DrainPerSec - r.AppendPerSec; net > 0 {
		r.ETASeconds = float64(cur.Records) / net
	}
	return r
}

func printStatus(w io.Writer, st spool.Status, r *rates) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "spool\t%s\n", st.Dir)
	fmt.Fprintf(tw, "identity\t%s\n", identityLine(st.Identity))
	fmt.Fprintf(tw, "to drain\t%d records in %d segments, %s\n", st.Records, st.Segments, humanBytes(st.Bytes))
	if st.Oldest != nil {
		fmt.Fprintf(tw, "oldest\t%s (%s ago)\n", st.Oldest.Format(time.RFC3339Nano), time.Since(*st.Oldest).Round(time.Second))
		fmt.Fprintf(tw, "newest\t%s (%s ago)\n", st.Newest.Format(time.RFC3339Nano), time.Since(*st.Newest).Round(time.Second))
	}
	switch {
	case st.AppenderRunning && st.Active != nil:
		fmt.Fprintf(tw, "active segment\t%d: %d records, %s, receiver pid %d\n", st.Active.ID, st.Active.Records, humanBytes(st.Active.Bytes), st.AppenderPID)
	case st.AppenderRunning:
		fmt.Fprintf(tw, "active segment\tnone (receiver pid %d writes each group as a sealed segment)\n", st.AppenderPID)
	default:
		fmt.Fprintf(tw, "receiver\tnot running\n")
	}
	if st.Full {
		fmt.Fprintf(tw, "FULL\t%s\n", st.FullReason)
	}
	if st.WriterPosition != nil {
		fmt.Fprintf(tw, "writer position\tsegment %d, seq %d\n", st.WriterPosition.Segment, st.WriterPosition.Seq)
	} else {
		fmt.Fprintf(tw, "writer position\tunknown (no writer-position.json yet)\n")
	}
	fmt.Fprintf(tw, "files\t%d sealed, %d unsealed, %d damaged, %s in all; %d in quarantine\n",
		st.SealedSegments, st.UnsealedSegments, st.DamagedSegments, humanBytes(st.TotalBytes), st.Quarantined)
	if r != nil {
		eta := "never at these rates"
		if r.ETASeconds >= 0 {
			eta = (time.Duration(r.ETASeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "rates\tappend %.0f/s, drain %.0f/s, empty in %s\n", r.AppendPerSec, r.DrainPerSec, eta)
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
