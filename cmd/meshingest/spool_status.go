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
	prev := st
	for {
		time.Sleep(time.Second)
		cur, err := spool.Inspect(f.dir)
		if err != nil {
			return f.fail(err)
		}
		r := spoolRates(prev, cur)
		if f.json {
			writeJSON(stdout, struct {
				spool.Status
				Rates rates `json:"rates"`
			}{cur, r})
		} else {
			fmt.Fprint(stdout, "\033[H\033[2J")
			printStatus(stdout, cur, &r)
		}
		prev = cur
	}
}

type rates struct {
	AppendPerSec float64 `json:"append_per_s"`
	DrainPerSec  float64 `json:"drain_per_s"`
	// ETASeconds is the time to empty at these rates; -1 when not draining
	// faster than appending.
	ETASeconds float64 `json:"eta_s"`
}

// spoolRates derives rates from two readings: appended from the
// appender's counter, drained as appended minus the growth of the depth.
func spoolRates(prev, cur spool.Status) rates {
	dt := cur.At.Sub(prev.At).Seconds()
	var r rates
	if dt <= 0 {
		return r
	}
	appended := float64(0)
	if cur.AppendedRecords >= prev.AppendedRecords {
		appended = float64(cur.AppendedRecords - prev.AppendedRecords)
	}
	r.AppendPerSec = appended / dt
	r.DrainPerSec = max((appended-(float64(cur.Records)-float64(prev.Records)))/dt, 0)
	r.ETASeconds = -1
	if net := r.DrainPerSec - r.AppendPerSec; net > 0 {
		r.ETASeconds = float64(cur.Records) / net
	} else if cur.Records == 0 {
		r.ETASeconds = 0
	}
	return r
}

func printStatus(w io.Writer, st spool.Status, r *rates) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "spool\t%s\n", st.Dir)
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
