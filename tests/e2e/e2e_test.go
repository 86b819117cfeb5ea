// Package e2e runs meshingest as an operator does: the real binary, built
// once, as separate processes (receive, write, run, replay, demo, systemd),
// against a real mosquitto or the embedded broker, with real files. Every
// test ends at the exact totals the corpus documents
// (docs/reference/corpus.md).
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/internal/dbsummary"
	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
)

// binary is the meshingest executable built by TestMain.
var binary string

func TestMain(m *testing.M) {
	// MESHINGEST_TEST_RACE=1 builds the processes with the race detector
	// (slower).
	var err error
	if binary, err = testkit.BuildBinary(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	testkit.CleanupBinary()
	os.Exit(code)
}

// want is what the corpus documents for a firmware-correct,
// CoreScope-compatible writer fed every line of real-packets.jsonl.
var want = dbsummary.Summary{
	Transmissions: 498, Observations: 498, Observers: 31, Nodes: 90,
	AdvertCountSum: 102, DroppedPackets: 0, ObserverMetrics: 30,
	ByPayloadType: []dbsummary.Count{
		{Name: "GRP_TXT", N: 165}, {Name: "ADVERT", N: 102}, {Name: "RESPONSE", N: 78}, {Name: "REQ", N: 60},
		{Name: "TXT_MSG", N: 44}, {Name: "PATH", N: 20}, {Name: "ANON_REQ", N: 17}, {Name: "TRACE", N: 8}, {Name: "CONTROL", N: 4},
	},
	Channels: []dbsummary.Count{
		{Name: "#test", N: 35}, {Name: "#wardriving", N: 17}, {Name: "#bot", N: 14}, {Name: "Public", N: 13}, {Name: "#chat", N: 2},
	},
	Undecrypted: 84,
}

const corpusMessages = 531

func sameSummary(a, b dbsummary.Summary) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// env is a scratch deployment: a folder with a configuration, a database
// and a spool.
type env struct {
	t      *testing.T
	dir    string
	config string
	db     string
	spool  string
	stats  string // the writer's CoreScope stats file
}

func newEnv(t *testing.T, extra map[string]any) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.db = filepath.Join(e.dir, "data", "meshcore.db")
	e.spool = filepath.Join(e.dir, "data", "spool")
	e.stats = filepath.Join(e.dir, "data", "corescope-ingestor-stats.json")
	e.config = filepath.Join(e.dir, "config.json")
	cfg := map[string]any{
		"dbPath":       e.db,
		"channelKeys":  map[string]string{"Public": "8b3387e9c5cdea6ac9e5edbaa115cd72"},
		"hashChannels": []string{"#test", "#wardriving", "#bot", "#chat"},
		"writer":       map[string]any{"statsFile": e.stats},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(e.config, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// proc is one meshingest process.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs the binary with args; its output goes to a log file that is
// shown when the test fails.
func (e *env) start(name string, extraEnv []string, args ...string) *proc {
	e.t.Helper()
	logPath := filepath.Join(e.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(testkit.BinaryPath(e.t), args...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(cleanEnv(), extraEnv...)
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	e.t.Cleanup(func() {
		p.stop(e.t, syscall.SIGKILL, 5*time.Second)
		if e.t.Failed() {
			out, _ := os.ReadFile(logPath)
			e.t.Logf("---- %s log:\n%s", name, tail(out, 6000))
		}
	})
	return p
}

// stop signals the process and waits for it to exit; it returns the exit
// code (-1 for a signal).
func (p *proc) stop(t *testing.T, sig syscall.Signal, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within %s of %s", p.cmd.Args[1], timeout, sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// cleanEnv is this environment without the variables that override the
// configuration file or speak to systemd.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "DB_PATH", "MQTT_BROKER", "MQTT_TOPIC", "MESHINGEST_SPOOL_DIR", "CORESCOPE_INGESTOR_STATS",
			"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		out = append(out, kv)
	}
	return out
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// writeCorpus puts the embedded real capture in a file, as an operator
// would have it.
func (e *env) writeCorpus() string {
	path := filepath.Join(e.dir, "real-packets.jsonl")
	if err := os.WriteFile(path, capture.DemoBytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// replay runs `meshingest replay` to completion.
func (e *env) replay(brokerURL string, qos int, file string) {
	e.t.Helper()
	cmd := exec.Command(testkit.BinaryPath(e.t), "replay", "--broker", brokerURL, "--qos", fmt.Sprint(qos), "--quiet", file)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("replay: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("replayed: %d messages", corpusMessages)) {
		e.t.Fatalf("replay did not report %d messages:\n%s", corpusMessages, out)
	}
}

// receiverStats is the part of the receiver's stats file the tests read.
type receiverStats struct {
	PID            int `json:"pid"`
	SourceStatuses []struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
	} `json:"source_statuses"`
}

func (e *env) readReceiverStats() (receiverStats, error) {
	var s receiverStats
	data, err := os.ReadFile(filepath.Join(e.spool, "receiver-stats.json"))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(data, &s)
}

type writerStats struct {
	Meshingest struct {
		PID int `json:"pid"`
	} `json:"meshingest"`
}

func (e *env) readWriterStats() (writerStats, error) {
	var s writerStats
	data, err := os.ReadFile(e.stats)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(data, &s)
}

// waitSubscribed waits until the receiver reports every source connected:
// a message published before would be lost to it.
func (e *env) waitSubscribed(timeout time.Duration) receiverStats {
	e.t.Helper()
	var last receiverStats
	testkit.WaitFor(e.t, timeout, "the receiver to connect", func() bool {
		s, err := e.readReceiverStats()
		if err != nil || len(s.SourceStatuses) == 0 {
			return false
		}
		last = s
		for _, src := range s.SourceStatuses {
			if !src.Connected {
				return false
			}
		}
		return true
	})
	return last
}

// waitTotals waits until the database holds the corpus's totals and the
// spool is drained, then checks that nothing more arrives: a doubled
// observation or advert count would show up as a change.
func (e *env) waitTotals(timeout time.Duration) {
	e.t.Helper()
	var got dbsummary.Summary
	var lastErr error
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(e.db); err == nil {
			got, lastErr = dbsummary.Read(context.Background(), e.db)
			if lastErr == nil && sameSummary(got, want) && e.spoolDrained() {
				break
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("database after %s: %+v (err %v)\nwant %+v", timeout, got, lastErr, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	again, err := dbsummary.Read(context.Background(), e.db)
	if err != nil || !sameSummary(again, want) {
		e.t.Fatalf("database changed after reaching the totals: %+v (err %v)", again, err)
	}
}

// spoolDrained reports the spool's own view: nothing queued in memory and
// nothing on disk past the writer's position.
func (e *env) spoolDrained() bool {
	st, err := spool.ReadAppenderStatus(e.spool)
	if err != nil {
		return false
	}
	pos, err := spool.ReadWriterPosition(e.spool)
	return err == nil && st.Stats.QueuedRecords == 0 && pos.Seq+1 >= st.Stats.NextSeq
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}

// lines returns the log file's lines that contain every one of words.
func lines(t *testing.T, path string, words ...string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		for _, w := range words {
			if !strings.Contains(sc.Text(), w) {
				continue next
			}
		}
		out = append(out, sc.Text())
	}
	return out
}
