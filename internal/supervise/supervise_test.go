package supervise

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/rs/zerolog"
)

// The test binary doubles as the child process: with SUPERVISE_TEST_CHILD
// set it runs one of the behaviours below instead of the tests. Each child
// appends its events to the file in SUPERVISE_TEST_LOG.
func TestMain(m *testing.M) {
	if mode := os.Getenv("SUPERVISE_TEST_CHILD"); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

func child(mode string) int {
	logf := func(format string, args ...any) {
		f, err := os.OpenFile(os.Getenv("SUPERVISE_TEST_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(f, format+"\n", args...)
		f.Close()
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	logf("start %d %d", os.Getpid(), time.Now().UnixNano())
	switch mode {
	case "run":
		<-term
		logf("stop %d", os.Getpid())
		return 0
	case "crash-once":
		marker := os.Getenv("SUPERVISE_TEST_LOG") + ".crashed"
		if _, err := os.Stat(marker); err != nil {
			os.WriteFile(marker, nil, 0o600)
			return 3
		}
		<-term
		logf("stop %d", os.Getpid())
		return 0
	case "crash":
		return 3
	case "ignore-term":
		for range term {
			logf("ignored %d", os.Getpid())
		}
	case "supervisor":
		// A supervisor of one "run" child, to be SIGKILLed by the test.
		sup := New([]Process{self("grandchild", "run", os.Getenv("SUPERVISE_TEST_LOG"))}, Options{Log: zerolog.Nop()})
		sup.Run(context.Background())
	}
	return 0
}

// self is a Process running this test binary in the given child mode.
func self(name, mode, logPath string) Process {
	exe, _ := os.Executable()
	env := append(Environ(os.Environ(), "SUPERVISE_TEST_CHILD", "SUPERVISE_TEST_LOG"),
		"SUPERVISE_TEST_CHILD="+mode, "SUPERVISE_TEST_LOG="+logPath)
	return Process{Name: name, Path: exe, Args: []string{"-test.run=^$"}, Env: env, Stderr: os.Stderr}
}

type event struct {
	kind string
	pid  int
	at   time.Time
}

func events(t *testing.T, path string) []event {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pid, _ := strconv.Atoi(fields[1])
		e := event{kind: fields[0], pid: pid}
		if len(fields) > 2 {
			ns, _ := strconv.ParseInt(fields[2], 10, 64)
			e.at = time.Unix(0, ns)
		}
		out = append(out, e)
	}
	return out
}

func count(evs []event, kind string) int {
	n := 0
	for _, e := range evs {
		if e.kind == kind {
			n++
		}
	}
	return n
}

// waitTimeout is how long a test waits for a child to start or stop: many
// times what a quiet machine needs, for a loaded one.
const waitTimeout = 60 * time.Second

func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t))
}

// runSupervisor runs sup until the returned stop is called; stop waits for
// Run to return and reports how long that took.
func runSupervisor(sup *Supervisor) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx); close(done) }()
	return func() time.Duration {
		start := time.Now()
		cancel()
		<-done
		return time.Since(start)
	}
}

func TestSupervisor_Run_RestartsACrashedChild(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events")
	sup := New([]Process{self("writer", "crash-once", logPath)}, Options{MinBackoff: 50 * time.Millisecond, Log: testLog(t)})
	stop := runSupervisor(sup)
	defer stop()
	testkit.WaitFor(t, waitTimeout, "the restart", func() bool { return count(events(t, logPath), "start") == 2 && sup.Status()[0].Running })
	st := sup.Status()[0]
	if st.Starts != 2 || st.LastExit != "exit status 3" {
		t.Fatalf("Status = %+v, want 2 starts after an exit status 3", st)
	}
	stop()
	if evs := events(t, logPath); count(evs, "stop") != 1 {
		t.Fatalf("events %v: the restarted child was not stopped cleanly", evs)
	}
}

func TestSupervisor_Run_RestartsASIGKILLedChild(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events")
	sup := New([]Process{self("receiver", "run", logPath), self("writer", "run", logPath+".w")},
		Options{MinBackoff: 50 * time.Millisecond, Log: testLog(t)})
	stop := runSupervisor(sup)
	defer stop()
	testkit.WaitFor(t, waitTimeout, "both children", func() bool { st := sup.Status(); return st[0].Running && st[1].Running })
	first := sup.Status()[0].PID
	writerPID := sup.Status()[1].PID
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, waitTimeout, "the receiver's restart", func() bool {
		st := sup.Status()[0]
		return st.Running && st.PID != first
	})
	if st := sup.Status(); st[0].Starts != 2 || st[0].LastExit != "signal: killed" || st[1].PID != writerPID || st[1].Starts != 1 {
		t.Fatalf("Status = %+v; want the receiver restarted after a kill and the writer untouched", st)
	}
}

func TestSupervisor_Stop_EveryChildStopsCleanlyOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	sup := New([]Process{self("receiver", "run", filepath.Join(dir, "r")), self("writer", "run", filepath.Join(dir, "w"))},
		Options{Log: testLog(t)})
	stop := runSupervisor(sup)
	testkit.WaitFor(t, waitTimeout, "both children", func() bool {
		return count(events(t, filepath.Join(dir, "r")), "start") == 1 && count(events(t, filepath.Join(dir, "w")), "start") == 1
	})
	pids := []int{sup.Status()[0].PID, sup.Status()[1].PID}
	if took := stop(); took > 5*time.Second {
		t.Fatalf("stop took %s", took)
	}
	for _, name := range []string{"r", "w"} {
		if n := count(events(t, filepath.Join(dir, name)), "stop"); n != 1 {
			t.Errorf("child %s logged %d clean stops, want 1", name, n)
		}
	}
	for i, st := range sup.Status() {
		if st.Running || st.LastExit != "exit status 0" {
			t.Errorf("after stop: %+v", st)
		}
		if alive(pids[i]) {
			t.Errorf("child %d still alive", pids[i])
		}
	}
}

func TestSupervisor_Stop_KillsAChildThatIgnoresSIGTERM(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events")
	sup := New([]Process{self("stuck", "ignore-term", logPath)}, Options{StopTimeout: 300 * time.Millisecond, Log: testLog(t)})
	stop := runSupervisor(sup)
	testkit.WaitFor(t, waitTimeout, "the child", func() bool { return count(events(t, logPath), "start") == 1 })
	took := stop()
	if took < 300*time.Millisecond || took > 5*time.Second {
		t.Fatalf("stop took %s, want the 300ms timeout then a kill", took)
	}
	if st := sup.Status()[0]; st.LastExit != "signal: killed" {
		t.Fatalf("LastExit = %q, want signal: killed", st.LastExit)
	}
	if count(events(t, logPath), "ignored") != 1 {
		t.Fatal("the child never saw the SIGTERM")
	}
}

func TestSupervisor_Run_BackoffDoublesUpToTheMaximum(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events")
	var logs lockedBuffer
	sup := New([]Process{self("broken", "crash", logPath)}, Options{
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, Log: zerolog.New(&logs),
	})
	stop := runSupervisor(sup)
	testkit.WaitFor(t, waitTimeout, "six starts", func() bool { return count(events(t, logPath), "start") >= 6 })
	stop()

	// The policy, as the supervisor logged it for each crash.
	var chosen []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct{ Message, RestartIn string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.RestartIn != "" {
			chosen = append(chosen, rec.RestartIn)
		}
	}
	want := []string{"100ms", "200ms", "400ms", "400ms", "400ms"}
	if len(chosen) < len(want) || !slices.Equal(chosen[:len(want)], want) {
		t.Fatalf("back-offs chosen = %q, want %q first", chosen, want)
	}
	// And it waited at least that long (an upper bound would measure the
	// machine's load: a child takes a while to start on a busy one).
	evs := events(t, logPath)
	for i, w := range want {
		d, _ := time.ParseDuration(w)
		if gap := evs[i+1].at.Sub(evs[i].at); gap < d {
			t.Errorf("gap before start %d = %s, shorter than the back-off %s", i+2, gap, d)
		}
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// When the supervisor itself is SIGKILLed, its children must not run on
// unsupervised: they receive SIGTERM (Pdeathsig) and stop cleanly.
func TestSupervisor_KilledSupervisor_ChildrenAreStopped(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events")
	p := self("supervisor", "supervisor", logPath)
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The supervisor logs its own start; its child logs the second one.
	testkit.WaitFor(t, waitTimeout, "the grandchild", func() bool { return count(events(t, logPath), "start") == 2 })
	grandchild := events(t, logPath)[1].pid
	cmd.Process.Kill()
	cmd.Wait()
	testkit.WaitFor(t, waitTimeout, "the grandchild to stop", func() bool { return count(events(t, logPath), "stop") == 1 })
	testkit.WaitFor(t, waitTimeout, "the grandchild to exit", func() bool { return !alive(grandchild) })
}

// alive reports whether pid runs; a zombie waiting for a reaper (PID 1 in
// a container may never reap) counts as gone.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}

func TestEnviron_DropsNamedVariables(t *testing.T) {
	got := Environ([]string{"NOTIFY_SOCKET=/run/x", "PATH=/bin", "NOTIFY_SOCKETX=1", "WATCHDOG_USEC=5"}, "NOTIFY_SOCKET", "WATCHDOG_USEC")
	if strings.Join(got, " ") != "PATH=/bin NOTIFY_SOCKETX=1" {
		t.Fatalf("Environ = %q", got)
	}
}
