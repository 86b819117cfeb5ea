package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

func spoolStatus(args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags("status", "status [--dir DIR | --config FILE] [--json] [--watch] [--writer-stats FILE]", stdout, stderr, jsonDoc)
	watch := f.fs.Bool("watch", false, "refresh every second with append and drain rates and the time to empty (with --json: a document a line, JSON Lines)")
	wrPath := f.fs.String("writer-stats", "", "with receiver instances: the writer's stats `file`, for each spool's records applied and copies (default: from the configuration)")
	f.instances = true
	if code := f.parse(args); code >= 0 {
		return code
	}
	if l, err := readSpoolLayout(f.dir); err == nil && l.instances() {
		return instancesStatus(f, l, *wrPath, *watch)
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

// spoolDirStatus is `spool status` of a spoolDir of receiver instances:
// each spool as the spool's files tell it, beside what the writer's stats
// file says it did with it.
type spoolDirStatus struct {
	SpoolDir string                `json:"spool_dir"`
	Spools   []instanceSpoolStatus `json:"spools"`
	// NotSpools are subfolders with no identity: the writer does not
	// drain them.
	NotSpools []string `json:"not_spools"`
	// WriterStats is the writer's stats file read ("" none found).
	WriterStats   string     `json:"writer_stats,omitempty"`
	WriterStatsAt *time.Time `json:"writer_stats_at,omitempty"`
}

type instanceSpoolStatus struct {
	// Instance is the receiver instance's name, "" for spoolDir's own.
	Instance string       `json:"instance"`
	Spool    spool.Status `json:"spool"`
	// Writer is the writer's figures for the spool; nil when its stats
	// file does not list it (the writer has not opened it yet, or runs
	// without it).
	Writer *spoolFigures `json:"writer"`
	Error  string        `json:"error,omitempty"`
}

// writerStatsMaxAge is how old the writer's stats file (rewritten every
// second) may be before status says the writer does not run.
const writerStatsMaxAge = 10 * time.Second

func instancesStatus(f *spoolFlags, l spoolLayout, wrPath string, watch bool) int {
	paths := []string{wrPath}
	if wrPath == "" {
		cfg := f.cfg
		if cfg == nil {
			var err error
			if cfg, err = shared.LoadConfig(""); err != nil {
				return f.fail(err)
			}
		}
		paths = writerStatsCandidates(cfg)
	}
	for {
		st := readSpoolDirStatus(f.dir, l, paths)
		switch {
		case f.json:
			writeJSON(f.stdout, st)
		case watch:
			fmt.Fprint(f.stdout, "\033[H\033[2J")
			printSpoolDirStatus(f.stdout, st, paths, time.Now())
		default:
			printSpoolDirStatus(f.stdout, st, paths, time.Now())
		}
		if !watch {
			return 0
		}
		time.Sleep(time.Second)
		var err error
		if l, err = readSpoolLayout(f.dir); err != nil {
			return f.fail(err)
		}
	}
}

func readSpoolDirStatus(dir string, l spoolLayout, writerStats []string) spoolDirStatus {
	st := spoolDirStatus{SpoolDir: dir, NotSpools: l.NotSpools}
	if st.NotSpools == nil {
		st.NotSpools = []string{}
	}
	ws, ok := readWriterSpools(writerStats)
	if ok {
		st.WriterStats, st.WriterStatsAt = ws.Path, &ws.At
	}
	for _, s := range l.Spools {
		is := instanceSpoolStatus{Instance: s.Name}
		var err error
		if is.Spool, err = spool.Inspect(s.Dir); err != nil {
			is.Error = err.Error()
		}
		if is.Spool.Identity != nil {
			if fig, ok := ws.ByIdentity[is.Spool.Identity.ID.String()]; ok {
				is.Writer = &fig
			}
		}
		st.Spools = append(st.Spools, is)
	}
	return st
}

func printSpoolDirStatus(w io.Writer, st spoolDirStatus, writerStats []string, now time.Time) {
	n := 0
	for _, s := range st.Spools {
		if s.Instance != "" {
			n++
		}
	}
	fmt.Fprintf(w, "spoolDir %s: %d receiver instance(s)\n", st.SpoolDir, n)
	switch {
	case st.WriterStatsAt == nil:
		fmt.Fprintf(w, "writer stats: none at %s: records applied and copies unknown (--writer-stats names the file)\n", strings.Join(absPaths(writerStats), " or "))
	case now.Sub(*st.WriterStatsAt) > writerStatsMaxAge:
		fmt.Fprintf(w, "writer stats: %s, written %s ago: the writer is NOT RUNNING; its figures are as it left them\n", st.WriterStats, now.Sub(*st.WriterStatsAt).Round(time.Second))
	default:
		fmt.Fprintf(w, "writer stats: %s, written %s ago\n", st.WriterStats, now.Sub(*st.WriterStatsAt).Round(100*time.Millisecond))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tIDENTITY\tRECEIVER\tTO DRAIN\tOLDEST UNWRITTEN\tWRITER LAG\tAPPLIED\tOTHER'S COPIES\tLATE")
	var notes []string
	for _, s := range st.Spools {
		name := spoolFolder{Name: s.Instance}.label()
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\n", name)
			notes = append(notes, fmt.Sprintf("%s: %s", name, s.Error))
			continue
		}
		sp := s.Spool
		id := "none yet"
		if sp.Identity != nil {
			id = sp.Identity.ID.Short()
			if sp.Identity.Copied {
				notes = append(notes, fmt.Sprintf("%s: A COPY of the folder its identity was given to: its receiver refuses to append (`spool identity --adopt` if it was moved)", name))
			}
		}
		rx := "not running"
		switch {
		case sp.AppenderRunning:
			rx = fmt.Sprintf("pid %d", sp.AppenderPID)
		case !sp.AppenderUpdated.IsZero():
			rx = "NOT RUNNING, last seen " + ago(now.Sub(sp.AppenderUpdated))
		}
		oldest := "-"
		if sp.Oldest != nil {
			oldest = ago(now.Sub(*sp.Oldest))
		}
		lag, applied, copies, late := "-", "-", "-", "-"
		if f := s.Writer; f != nil {
			lag = fmt.Sprintf("%.1fs", f.LagSeconds)
			applied, copies, late = fmt.Sprint(f.RecordsApplied), fmt.Sprint(f.OtherReceiverCopies), fmt.Sprint(f.LateCopies)
		} else if st.WriterStatsAt != nil {
			notes = append(notes, fmt.Sprintf("%s: not in the writer's stats (the writer has not opened it since it started)", name))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", name, id, rx, sp.Records, oldest, lag, applied, copies, late)
		if sp.Full {
			notes = append(notes, fmt.Sprintf("%s: FULL: %s", name, sp.FullReason))
		}
		if sp.DamagedSegments > 0 || sp.UnsealedSegments > 0 || sp.Quarantined > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d damaged and %d unsealed segments, %d in quarantine (spool status --dir %s)", name, sp.DamagedSegments, sp.UnsealedSegments, sp.Quarantined, sp.Dir))
		}
	}
	tw.Flush()
	for _, d := range st.NotSpools {
		notes = append(notes, fmt.Sprintf("%s: not a spool (no identity file): the writer does not drain it", d))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// ago is a duration in the past, as precise as it is worth.
func ago(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%.0fd ago", d.Hours()/24)
	case d >= time.Minute:
		return d.Round(time.Second).String() + " ago"
	}
	return d.Round(100*time.Millisecond).String() + " ago"
}
