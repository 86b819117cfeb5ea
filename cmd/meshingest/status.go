package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshingest/meshingest/deploy"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

const statusUsage = `usage: meshingest status [--config FILE] [--max-age D] [--receiver-stats FILE] [--writer-stats FILE]

Prints one line per process, the receiver's and the writer's health as
their stats files (rewritten every second) record it: healthy (its loop
runs) and ready (it does its job), or why not. For a shell or a cron check;
it reads files only and works whether or not metricsListen is set.

The stats files are where the configuration puts them; with the defaults,
where the systemd units put them is looked at too (the receiver's in
/run/meshingest, the writer's in /var/lib/meshingest), and the freshest
file found is used.

With receiver instances (receive --instance NAME, spools in
<spoolDir>/NAME) there is a receiver line per instance, each from its own
stats file (receiver-stats-NAME.json), and under the writer's line its
figures per spool: unwritten, lag, records applied, copies recognised as
another receiver's. An instance that is down makes the exit status 1:
the other still receives, but a restart of it would now lose messages.

Exit status: 0 when both are healthy and ready; 1 when one is unhealthy,
or its stats file is missing or older than --max-age (the process is not
running); 3 when both run but one is not ready; 2 for bad flags or
configuration.

flags:
`

// Where the systemd units (deploy/systemd) put the stats files that the
// configuration's defaults would put elsewhere: RuntimeDirectory=meshingest
// for the receiver's, CORESCOPE_INGESTOR_STATS for the writer's. A test
// checks them against the unit files.
var (
	unitReceiverStats = "/run/meshingest/receiver-stats.json"
	unitWriterStats   = filepath.Join(deploy.StateDir, "corescope-ingestor-stats.json")
)

func runStatus(args []string) int { return statusCommand(args, os.Stdout, os.Stderr, time.Now()) }

// Exit statuses of `meshingest status`.
const (
	statusOK       = 0
	statusDown     = 1
	statusNotReady = 3
)

func statusCommand(args []string, stdout, stderr io.Writer, now time.Time) int {
	fset := flag.NewFlagSet("status", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath := fset.String("config", "", "configuration `file` (CoreScope's config.json plus meshingest's keys); none: defaults and environment")
	maxAge := fset.Duration("max-age", 10*time.Second, "a stats file older than this `duration` means its process is not running")
	rxPath := fset.String("receiver-stats", "", "the receiver's stats `file` (default: from the configuration)")
	wrPath := fset.String("writer-stats", "", "the writer's stats `file` (default: from the configuration)")
	fset.Usage = func() { fmt.Fprint(fset.Output(), statusUsage); fset.PrintDefaults() }
	if status, ok := parseFlagsOnlyTo(fset, args, stdout); !ok {
		return status
	}
	cfg, ok := loadConfig(fset, *configPath)
	if !ok {
		return 2
	}
	rx, wr := receiverStatsCandidates(cfg), writerStatsCandidates(cfg)
	if *rxPath != "" {
		rx = []string{*rxPath}
	}
	if *wrPath != "" {
		wr = []string{*wrPath}
	}
	type process struct {
		name  string
		paths []string
		read  func([]byte) (processHealth, error)
	}
	procs := []process{{"receiver", rx, readReceiverHealth}}
	layout, err := readSpoolLayout(cfg.SpoolDir)
	if err != nil {
		fmt.Fprintf(stderr, "meshingest status: %v\n", err)
	}
	if layout.instances() {
		// One line per receiver instance, each from its own stats file
		// (receive --instance NAME), and one for spoolDir's own receiver
		// only if it has a spool there.
		procs = procs[:0]
		for _, s := range layout.Spools {
			p := process{"receiver", rx, readReceiverHealth}
			if s.Name != "" {
				p.name, p.paths = "receiver "+s.Name, make([]string, len(rx))
				for i, path := range rx {
					p.paths[i] = shared.InstanceStatsFile(path, s.Name)
				}
			}
			procs = append(procs, p)
		}
	}
	procs = append(procs, process{"writer", wr, readWriterHealth})
	exit := statusOK
	for _, p := range procs {
		line, code := processStatus(p.name, p.paths, p.read, *maxAge, now)
		fmt.Fprintln(stdout, line)
		exit = worse(exit, code)
	}
	if layout.instances() {
		printWriterSpools(stdout, layout, wr)
	}
	return exit
}

// printWriterSpools prints, under the writer's line, its figures for each
// receiver instance's spool, and names the folders it does not drain.
func printWriterSpools(w io.Writer, layout spoolLayout, writerStats []string) {
	ws, _ := readWriterSpools(writerStats)
	for _, s := range layout.Spools {
		id, err := spool.ReadIdentity(s.Dir)
		if err != nil {
			fmt.Fprintf(w, "  spool %s: %v\n", s.label(), err)
			continue
		}
		f, ok := ws.ByIdentity[id.ID.String()]
		if !ok {
			fmt.Fprintf(w, "  spool %s (%s): not in the writer's stats (the writer has not opened it since it started)\n", s.label(), id.ID.Short())
			continue
		}
		fmt.Fprintf(w, "  spool %s (%s): %s\n", s.label(), id.ID.Short(), figuresLine(f))
	}
	for _, d := range layout.NotSpools {
		fmt.Fprintf(w, "  %s: not a spool (no identity file): the writer does not drain it\n", d)
	}
}

func worse(a, b int) int {
	rank := map[int]int{statusOK: 0, statusNotReady: 1, statusDown: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// processHealth is what status reads from a stats file.
type processHealth struct {
	SampledAt time.Time
	PID       int
	Health    *shared.HealthState // nil: the file records none (an older meshingest)
	Summary   string
}

// processStatus reads the freshest of paths and says, in one line, how
// the process is.
func processStatus(name string, paths []string, read func([]byte) (processHealth, error), maxAge time.Duration, now time.Time) (string, int) {
	var best *processHealth
	var bestPath string
	var problems []string
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		h, err := read(data)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", path, err))
			continue
		}
		if best == nil || h.SampledAt.After(best.SampledAt) {
			best, bestPath = &h, path
		}
	}
	if best == nil {
		why := "no stats file at " + strings.Join(absPaths(paths), " or ") + " (is it running? --" + strings.Fields(name)[0] + "-stats names another file)"
		if len(problems) > 0 {
			why = strings.Join(problems, "; ")
		}
		return fmt.Sprintf("%s: DOWN: %s", name, why), statusDown
	}
	age := now.Sub(best.SampledAt)
	where := fmt.Sprintf("(pid %d, %s, written %s ago)", best.PID, bestPath, age.Round(100*time.Millisecond))
	switch h := best.Health; {
	case age > maxAge:
		return fmt.Sprintf("%s: DOWN: its stats file was last written %s ago, over --max-age %s: not running %s", name, age.Round(time.Second), maxAge, where), statusDown
	case h == nil:
		return fmt.Sprintf("%s: UNKNOWN: the stats file records no health (a meshingest older than this one?) %s", name, where), statusDown
	case !h.Healthy:
		return fmt.Sprintf("%s: UNHEALTHY: %s %s", name, h.Unhealthy, where), statusDown
	case !h.Ready:
		return fmt.Sprintf("%s: NOT READY: %s; %s %s", name, h.NotReady, best.Summary, where), statusNotReady
	}
	return fmt.Sprintf("%s: ok: %s %s", name, best.Summary, where), statusOK
}

func absPaths(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i], _ = filepath.Abs(p)
	}
	return out
}

// receiverStatsCandidates are where the receiver's stats may be: where
// the configuration says, and, when it says nothing, where the units put
// them.
func receiverStatsCandidates(cfg *shared.Config) []string {
	paths := []string{cfg.Receiver.StatsFile}
	if cfg.Receiver.StatsFile == filepath.Join(cfg.SpoolDir, "receiver-stats.json") {
		paths = append(paths, unitReceiverStats)
	}
	return withUnitDir(paths)
}

func writerStatsCandidates(cfg *shared.Config) []string {
	paths := []string{cfg.Writer.StatsFile}
	if cfg.Writer.StatsFile == shared.DefaultStatsPath {
		paths = append(paths, unitWriterStats)
	}
	return withUnitDir(paths)
}

// withUnitDir adds, for each relative path, the same path below the
// units' working directory, where the services resolve it.
func withUnitDir(paths []string) []string {
	out := paths
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			out = append(out, filepath.Join(deploy.StateDir, p))
		}
	}
	return out
}

func readReceiverHealth(data []byte) (processHealth, error) {
	var f struct {
		SampledAt string `json:"sampledAt"`
		PID       int    `json:"pid"`
		shared.HealthState
		Healthy        *bool                 `json:"healthy"` // absent in files of older versions
		SourceStatuses []shared.SourceStatus `json:"source_statuses"`
		Spool          struct {
			DepthRecords uint64 `json:"depth_records"`
		} `json:"spool"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return processHealth{}, err
	}
	h, err := newProcessHealth(f.SampledAt, f.PID)
	if err != nil {
		return h, err
	}
	if f.Healthy != nil {
		f.HealthState.Healthy = *f.Healthy
		h.Health = &f.HealthState
	}
	up := 0
	for _, s := range f.SourceStatuses {
		if s.Connected {
			up++
		}
	}
	h.Summary = fmt.Sprintf("%d/%d sources connected, spool depth %d records", up, len(f.SourceStatuses), f.Spool.DepthRecords)
	return h, nil
}

func readWriterHealth(data []byte) (processHealth, error) {
	var f struct {
		SampledAt  string `json:"sampledAt"`
		Meshingest struct {
			PID        int                 `json:"pid"`
			Health     *shared.HealthState `json:"health"`
			LagSeconds float64             `json:"lag_seconds"`
			Depth      int64               `json:"spool_depth_records"`
			Messages   int64               `json:"messages"`
		} `json:"meshingest"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return processHealth{}, err
	}
	h, err := newProcessHealth(f.SampledAt, f.Meshingest.PID)
	h.Health = f.Meshingest.Health
	h.Summary = fmt.Sprintf("lag %.0fs, spool depth %d records, %d messages written", f.Meshingest.LagSeconds, f.Meshingest.Depth, f.Meshingest.Messages)
	return h, err
}

func newProcessHealth(sampledAt string, pid int) (processHealth, error) {
	at, err := time.Parse(time.RFC3339Nano, sampledAt)
	if err != nil {
		return processHealth{}, fmt.Errorf("not a meshingest stats file (sampledAt %q)", sampledAt)
	}
	return processHealth{SampledAt: at, PID: pid}, nil
}
