package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mainChildEnv makes the test binary run meshingest's own dispatch with
// the arguments after "--": a real process, without building the binary.
const mainChildEnv = "MESHINGEST_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainChildEnv) == "1" {
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		os.Exit(dispatch(args))
	}
	os.Exit(m.Run())
}

// cpuTicks is a process's user plus system time in clock ticks
// (/proc/PID/stat fields 14 and 15).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// An idle writer on a spool that never held a record used a whole core:
// a retention task, due but not runnable before the first record, cut
// every wait to zero and the writer re-listed the folder in a loop.
func TestWrite_IdleOnNeverUsedSpool_UsesNoCore(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"dbPath": "`+filepath.Join(dir, "db.sqlite")+`", "spoolDir": "`+filepath.Join(dir, "spool")+
		`", "writer": {"statsFile": "`+filepath.Join(dir, "stats.json")+`"}}`), 0o600)
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$", "--", "write", "--config", cfg)
	cmd.Env = append(os.Environ(), mainChildEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Ready once the stats file is written: the database is open.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "stats.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer wrote no stats file in 60 s")
		}
	}
	// Start-up work (migrations, the jobs' first runs) and a loaded
	// machine's scheduling can fill any one window; a busy loop fills every
	// one. So the writer passes when one of several windows is quiet.
	const (
		window  = 10 * time.Second
		windows = 6
		quiet   = 10 // ticks are 10 ms: 1 % of a core over 10 s
	)
	var used []int64
	for range windows {
		before := cpuTicks(t, cmd.Process.Pid)
		time.Sleep(window)
		used = append(used, cpuTicks(t, cmd.Process.Pid)-before)
		if used[len(used)-1] <= quiet {
			t.Logf("the idle writer used %v ticks (10 ms) of CPU in windows of %v", used, window)
			return
		}
	}
	t.Fatalf("the idle writer used %v ticks of CPU in windows of %v, never ≤ %d (1 %% of a core; a busy loop uses ~1000)", used, window, quiet)
}
