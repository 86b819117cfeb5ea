package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// The harness runs the real program, as an operator would.
func meshingestBinary(t *testing.T) string { return testkit.BinaryPath(t) }

// testConfig is the size the test suite runs the scenarios at, smaller
// than ShortConfig (a 10 s lock, 3 kills, 30 MB huge publishes), so `go test -race ./...` stays inside 20 minutes on a
// loaded 2-core machine. MESHINGEST_LONG_TESTS=1 runs ShortConfig itself.
func testConfig() Config {
	cfg := ShortConfig()
	if testkit.Long() {
		return cfg
	}
	cfg.ReceiverKills, cfg.QoS0Kills, cfg.WriterKills = 3, 2, 3
	cfg.Lock, cfg.LockLead, cfg.LockTail = 10*time.Second, 3*time.Second, 5*time.Second
	cfg.FaultLoad = 6 * time.Second
	cfg.HugePublishes = []HugePublish{{0, 30e6}, {1, 30e6}}
	cfg.ActiveActive, cfg.ReceiverOutage = 10*time.Second, 10*time.Second
	return cfg
}

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.CleanupBinary()
	os.Exit(code)
}

// TestSuite_ShortFaultRuns runs fault scenarios in small (a few kills, a
// 10 s lock: testConfig) against the real binary, a real mosquitto and
// real files, in groups side by side, and checks each scenario's verdict,
// then the report and the plot. By default it runs one scenario of each
// kind (a kill of each process, a lock, a damaged spool, the boundaries of
// one spool and one writer): every fault has a test of its own in its
// package, and here the harness itself is tested. MESHINGEST_LONG_TESTS=1
// runs every scenario; the full runs are `meshingest-harness chaos` and
// `meshingest-harness bench` (docs/harness-report.md).
func TestSuite_ShortFaultRuns(t *testing.T) {
	bin := meshingestBinary(t)
	// Two at a time (-parallel is the core count); each environment's
	// load is light (250 msg/s) on two cores.
	groups := map[string][]string{
		"kills":  {"receiver-kill-qos1", "writer-kill", "db-lock"},
		"bounds": {"two-writers", "spool-wiped-live", "segment-damage"},
	}
	if testkit.Long() {
		groups = map[string][]string{
			"lock":     {"db-lock", "spool-cap"},
			"receiver": {"receiver-kill-qos1", "receiver-kill-qos0", "segment-damage"},
			"writer":   {"writer-kill", "broker-restart", "vacuum-swap"},
			"spool":    {"spool-wiped", "segments-swapped"},
			"bounds":   {"two-writers", "huge-publish", "retained-replay", "spool-wiped-live"},
		}
	}
	var mu sync.Mutex
	var all []*Result
	t.Run("group", func(t *testing.T) {
		for name, only := range groups {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				cfg := testConfig()
				cfg.Binary, cfg.WorkDir, cfg.Only = bin, t.TempDir(), only
				var progress bytes.Buffer
				cfg.Progress = &progress
				suite, err := NewSuite(cfg)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
				defer cancel()
				results := suite.Run(ctx)
				t.Log(progress.String())
				if len(results) != len(only) {
					t.Fatalf("%d results for %d scenarios", len(results), len(only))
				}
				for _, r := range results {
					checkResult(t, r)
				}
				mu.Lock()
				all = append(all, results...)
				mu.Unlock()
			})
		}
	})
	if t.Failed() || len(all) == 0 {
		return
	}
	dir := t.TempDir()
	report, plot := filepath.Join(dir, "report.md"), filepath.Join(dir, "report-lag.png")
	if err := WritePlot(plot, all); err != nil {
		t.Fatal(err)
	}
	info := RunInfo{Command: "go test", Started: time.Now(), Finished: time.Now(), Config: testConfig(), Version: "test"}
	if err := WriteReport(report, plot, info, all); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(report)
	png, _ := os.ReadFile(plot)
	if !bytes.HasPrefix(png, []byte("\x89PNG")) || len(png) < 10_000 {
		t.Errorf("plot is not a PNG image (%d bytes)", len(png))
	}
	for _, r := range all {
		if !strings.Contains(string(md), "## "+r.Name+" — ") {
			t.Errorf("report has no section for %s", r.Name)
		}
	}
	if !strings.Contains(string(md), "](report-lag.png)") {
		t.Errorf("report does not link the plot")
	}
}

func checkResult(t *testing.T, r *Result) {
	t.Helper()
	if r.Err != "" {
		t.Errorf("%s: %s", r.Name, r.Err)
		return
	}
	if r.Rec == nil || r.Messages == 0 {
		t.Errorf("%s: no accounting (%d messages)", r.Name, r.Messages)
		return
	}
	if r.Pass {
		t.Logf("%s: PASS (%d messages)", r.Name, r.Messages)
		return
	}
	for _, c := range r.Criteria {
		switch {
		case c.Pass:
		case c.Timing:
			// This machine is shared: the harness command judges speed.
			t.Logf("%s: %s: measured %s, limit %s (a timing limit: not judged here)", r.Name, c.Name, c.Measured, c.Limit)
		default:
			t.Errorf("%s: %s: measured %s, limit %s", r.Name, c.Name, c.Measured, c.Limit)
		}
	}
	for _, d := range r.Diff {
		if !d.Equal() {
			t.Errorf("%s: table %s differs from the undisturbed run: %d missing, %d extra, %d different: %v", r.Name, d.Table, d.Missing, d.Extra, d.Different, d.Examples)
		}
	}
}
