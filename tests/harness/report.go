package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// RunInfo describes how a report was produced.
type RunInfo struct {
	Command  string
	Started  time.Time
	Finished time.Time
	Config   Config
	// Version is the binary's `meshingest version` line or a commit.
	Version string
	// LoadStart and LoadEnd are /proc/loadavg at start and end: the
	// machine may be shared, and other work there moves every figure.
	LoadStart, LoadEnd string
}

// LoadAvg is the first three fields of /proc/loadavg.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// WriteReport writes the markdown report to path; plot, when not empty, is
// the PNG it links (written by WritePlot), relative to the report.
func WriteReport(path, plotPath string, info RunInfo, results []*Result) error {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cfg := info.Config
	w("# meshingest load and fault harness report\n\n")
	w("Produced by `%s` on %s (%d CPUs, %s/%s, %s), %s to %s. Binary: %s.\n\n",
		info.Command, hostname(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, kernel(),
		info.Started.UTC().Format("2006-01-02 15:04 MST"), info.Finished.UTC().Format("15:04 MST"), info.Version)
	if info.LoadStart != "" {
		w("Load average of the machine (1, 5, 15 min) at start: %s; at the end: %s. ", info.LoadStart, info.LoadEnd)
	}
	w("Load: `loadgen` seed %d, %.0f msg/s steady for %s then a burst of %d; %d + %d receiver SIGKILLs (QoS 1 + QoS 0), %d writer SIGKILLs, about %s apart; database lock %s; one-off faults under %s of load. ",
		cfg.Seed, cfg.Rate, cfg.Steady, cfg.Burst, cfg.ReceiverKills, cfg.QoS0Kills, cfg.WriterKills, cfg.KillGap, cfg.Lock, cfg.FaultLoad)
	w("Every process is the real binary against a real mosquitto and real files; every count below comes from the database, the processes' stats files or /proc.\n\n")

	w("## Summary\n\n| scenario | verdict | messages | lost | double-counted | duration |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		lost, doubled := "—", "—"
		if r.Rec != nil {
			lost = fmt.Sprintf("%d messages, %d observation rows", r.Rec.MessagesLost(), r.Rec.LostObservations)
			if r.Loss == LossCounted {
				lost += fmt.Sprintf(" (%d counted as dropped)", r.CountedLoss)
			}
			doubled = fmt.Sprint(r.Rec.Doubled())
		}
		w("| %s | **%s** | %d | %s | %s | %s |\n", r.Name, r.Verdict(), r.Messages, lost, doubled, r.Duration.Round(time.Second))
	}
	w("\n")
	if plotPath != "" {
		rel, err := filepath.Rel(filepath.Dir(path), plotPath)
		if err != nil {
			rel = plotPath
		}
		w("![writer lag and spool depth over time, one row per scenario](%s)\n\n", filepath.ToSlash(rel))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), "harness-findings.md")); err == nil {
		w("Bugs and gaps the harness found, with the commands that reproduce them: [harness-findings.md](harness-findings.md).\n\n")
	}
	for _, r := range results {
		writeScenario(&b, r)
	}
	w("## How the figures are taken\n\n")
	w("- **Latency**: the publisher records when it publishes the first message of each transmission and of each observation; a poller opens the database every %s (query_only, never taking the write lock) and stamps each new row when it first sees it. Latency is that stamp minus the publish time, so the poll interval is its resolution (the database's own times have one-second precision).\n", 100*time.Millisecond)
	w("- **Lost / double-counted**: the generator knows the rows a correct writer must hold for the messages it handed out (every observation key, each observer's packet_count, each node's advert_count, the dropped_packets rows, the drops without a row). Messages lost = packet_count deficit + missing dropped rows + drops without a row the writer did not count; double-counted = packet_count or advert_count above expectation + observation or dropped rows no message explains.\n")
	w("- **Equal to an undisturbed run**: the same messages published again, without faults, into fresh files; tables compared row by row on natural keys (content hash, observer id, path, public key), without ids and receive-time columns, which differ between any two runs.\n")
	w("- **fsyncs**: strace attached to every thread for the window stated, counting fsync, fdatasync, sync_file_range, syncfs and msync; the receiver also reports its own count in its stats file. **Disk bytes**: `write_bytes` of /proc/PID/io. **CPU**: utime + stime of /proc/PID/stat. **RSS**: VmHWM of /proc/PID/status, read before every kill and at the end; in the steady window also the sum of both processes' PSS (/proc/PID/smaps_rollup, the executable's shared pages counted once) and of their VmRSS, sampled every second.\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func writeScenario(b *strings.Builder, r *Result) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## %s — %s\n\n%s.\n\n", r.Name, r.Verdict(), r.Description)
	if r.Err != "" {
		w("Error: `%s`\n\n", r.Err)
	}
	if len(r.Criteria) > 0 {
		w("| criterion | measured | limit | |\n|---|---|---|---|\n")
		for _, c := range r.Criteria {
			mark := "pass"
			if !c.Pass {
				mark = "**FAIL**"
			}
			w("| %s | %s | %s | %s |\n", c.Name, c.Measured, c.Limit, mark)
		}
		w("\n")
	}
	for _, f := range r.Figures {
		w("- %s: %s\n", f[0], f[1])
	}
	if rec := r.Rec; rec != nil {
		w("- database: %d of %d transmissions, %d of %d observations (%d expected keys missing, %d rows unexplained), %d of %d nodes, %d of %d dropped_packets rows\n",
			rec.FoundTransmissions, rec.ExpectedTransmissions, rec.FoundObservations, rec.ExpectedObservations, rec.LostObservations, rec.ExtraObservations,
			rec.NodesFound, rec.NodesExpected, rec.DroppedRowsFound, rec.DroppedRowsExpected)
		w("- packet_count: %d missing, %d extra; advert_count: %d missing, %d extra\n", rec.PacketCountLost, rec.PacketCountDoubled, rec.AdvertCountLost, rec.AdvertCountDoubled)
		w("- drops expected → counted by the writer: %s%s\n", dropsLine(rec.DropsExpected, rec.DropsCounted), map[bool]string{true: "", false: " (a lower bound: a writer was stopped or killed mid-run, taking its last second of counters with it)"}[rec.ExactDrops])
		for _, ex := range rec.LostExamples {
			w("  - missing: %s\n", ex)
		}
	}
	if len(r.ReceiverDrops) > 0 {
		w("- receiver drops: %s\n", dropsLine(nil, toInt(r.ReceiverDrops)))
	}
	if r.Rec != nil {
		w("- costs over the whole run: receiver %.1f CPU s, %s written, peak RSS %s; writer %.1f CPU s, %s written, peak RSS %s\n",
			r.ReceiverCost.CPUSeconds, mibs(int64(r.ReceiverCost.IO.WriteBytes)), mibs(r.ReceiverCost.HWMBytes),
			r.WriterCost.CPUSeconds, mibs(int64(r.WriterCost.IO.WriteBytes)), mibs(r.WriterCost.HWMBytes))
	}
	if r.Compared {
		w("\n| table vs the undisturbed run | missing | extra | different | examples |\n|---|---|---|---|---|\n")
		for _, d := range r.Diff {
			w("| %s | %d | %d | %d | %s |\n", d.Table, d.Missing, d.Extra, d.Different, strings.ReplaceAll(strings.Join(d.Examples, "; "), "|", "\\|"))
		}
	}
	for _, n := range r.Notes {
		w("\nNote: %s\n", n)
	}
	if r.Dir != "" {
		w("\nFiles (logs, database, spool, stats): `%s`\n", r.Dir)
	}
	w("\n")
}

func dropsLine(expected, counted map[string]int) string {
	keys := map[string]bool{}
	for k := range expected {
		keys[k] = true
	}
	for k := range counted {
		keys[k] = true
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		if expected == nil {
			parts = append(parts, fmt.Sprintf("%s %d", k, counted[k]))
		} else {
			parts = append(parts, fmt.Sprintf("%s %d → %d", k, expected[k], counted[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func toInt(m map[string]int64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown kernel"
	}
	return "Linux " + strings.TrimSpace(string(b))
}
