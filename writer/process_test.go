package writer

import (
	"bufio"
	"cmp"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/stats"
)

// The tests and benchmarks that need "a real writer process" run the
// meshingest binary, built once per test run from ../cmd/meshingest.

func meshingestBinary(t testing.TB) string { return testkit.BinaryPath(t) }

// processSetup is the files of one writer process.
type processSetup struct {
	Dir       string
	Config    string // config file
	DB        string
	Spool     string
	StatsFile string
	LogFile   string
	// readyBefore is how many "writer ready" lines the log held when the
	// last process was started.
	readyBefore int
}

// newProcessSetup writes a configuration for a writer process in dir.
// extra is merged into the configuration object.
func newProcessSetup(t testing.TB, dir string, extra map[string]any) *processSetup {
	t.Helper()
	p := &processSetup{
		Dir: dir, Config: filepath.Join(dir, "config.json"), DB: filepath.Join(dir, "meshcore.db"),
		Spool: filepath.Join(dir, "spool"), StatsFile: filepath.Join(dir, "stats.json"), LogFile: filepath.Join(dir, "writer.log"),
	}
	cfg := map[string]any{
		"dbPath":       p.DB,
		"spoolDir":     p.Spool,
		"hashChannels": []string{"#test", "#wardriving", "#bot", "#chat"},
		"logLevel":     cmp.Or(os.Getenv("MESHINGEST_TEST_LOGLEVEL"), "info"),
		"writer":       map[string]any{"statsFile": p.StatsFile},
	}
	for k, v := range extra {
		if m, ok := v.(map[string]any); ok && k == "writer" {
			for wk, wv := range m {
				cfg["writer"].(map[string]any)[wk] = wv
			}
			continue
		}
		cfg[k] = v
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(p.Config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs `meshingest write --config` with its log appended to LogFile.
// wrap, if given, is a command line the writer runs under (strace).
func (p *processSetup) start(t testing.TB, env ...string) *exec.Cmd {
	t.Helper()
	log, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p.LogFile)
	p.readyBefore = strings.Count(string(b), "writer ready")
	cmd := exec.Command(meshingestBinary(t), "write", "--config", p.Config)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log.Close()
	return cmd
}

// waitReady waits until the writer process logged that it is ready
// (for the n-th time in this setup's log).
func (p *processSetup) waitReady(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(p.LogFile)
		if strings.Count(string(b), "writer ready") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer not ready; log:\n%s", tail(p.LogFile, 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; the writer must exit 0.
func stopProcess(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("writer exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("writer did not stop within 30 s of SIGTERM")
	}
}

// readStats reads the writer's stats file.
func (p *processSetup) readStats(t testing.TB) (stats.File, bool) {
	t.Helper()
	b, err := os.ReadFile(p.StatsFile)
	if err != nil {
		return stats.File{}, false
	}
	var f stats.File
	if err := json.Unmarshal(b, &f); err != nil {
		return stats.File{}, false
	}
	return f, true
}

// waitDrained waits until no sealed segment is left in the spool: the
// writer has committed every record and released the spool.
func (p *processSetup) waitDrained(t testing.TB, timeout time.Duration) time.Time {
	t.Helper()
	p.waitReady(t, p.readyBefore+1)
	deadline := time.Now().Add(timeout)
	for {
		if n := sealedSegments(t, p.Spool); n == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool not drained within %v; writer log:\n%s", timeout, tail(p.LogFile, 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSettled is waitDrained, then waits until the jobs have derived again
// what the nodes the drain taught them change: only then are
// neighbor_edges and resolved_path final. writer/jobs/rederive.go keeps
// what is left in meshingest_state (paths_rederive); no row: no jobs.
func (p *processSetup) waitSettled(t testing.TB, timeout time.Duration) time.Time {
	t.Helper()
	end := p.waitDrained(t, timeout)
	db := writertest.OpenRaw(t, p.DB)
	defer db.Close()
	deadline := time.Now().Add(timeout)
	for {
		var v string
		err := db.QueryRow(`SELECT value FROM meshingest_state WHERE key = 'paths_rederive'`).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) || err == nil && strings.Contains(v, `"keys":[]`) && !strings.Contains(v, `"full":true`) {
			return end
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs not settled within %v (%v %s); writer log:\n%s", timeout, err, v, tail(p.LogFile, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// procIO reads another process's /proc/<pid>/io (what it reads from
// /proc/self/io itself).
func procIO(pid int) (shared.ProcIO, error) { return shared.ReadProcIO(pid) }

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// cpuSeconds is the user+system CPU time a process has used.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks (USER_HZ = 100)
}
