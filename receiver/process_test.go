package receiver

// Tests that run `meshingest receive` as a real child process: built once
// per test binary, killed with real signals.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
)

func meshingestBinary(t *testing.T) string { return testkit.BinaryPath(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.CleanupBinary()
	os.Exit(code)
}

// child is one `meshingest receive` process.
type child struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error
}

func startChild(t *testing.T, config string, env ...string) *child {
	t.Helper()
	c := &child{stderr: &syncBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(meshingestBinary(t), "receive", "--config", config)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
	})
	return c
}

func (c *child) wait(t *testing.T, timeout time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case <-c.exited:
	case <-time.After(timeout):
		t.Fatalf("child did not exit within %s; stderr:\n%s", timeout, c.stderr)
	}
	return c.cmd.ProcessState.ExitCode(), time.Since(start)
}

func writeConfig(t *testing.T, path string, cfg map[string]any) {
	t.Helper()
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readStats reads the child's stats file; ok is false while it is missing.
func readStats(path string) (Snapshot, bool) {
	var s Snapshot
	data, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(data, &s) != nil {
		return s, false
	}
	return s, true
}

// readSpool returns every record in the spool's sealed segments.
func readSpool(t *testing.T, dir string) []spool.Record {
	t.Helper()
	r, err := spool.OpenReader(dir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := r.Cursor(spool.Position{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	var recs []spool.Record
	for {
		rec, _, err := cur.Next()
		if errors.Is(err, io.EOF) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
}

// QoS 1 across 20 SIGKILLs: a publisher sends numbered QoS 1 messages the
// whole time; the receiver is killed at random moments and restarted. In
// the end every message is in the spool; a message stored twice (its ack was
// lost with the process) carries the DUP flag on every later copy.
func TestProcess_SIGKILL20Times_QoS1NothingLost(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	stats := filepath.Join(dir, "receiver-stats.json")
	config := filepath.Join(dir, "config.json")
	writeConfig(t, config, map[string]any{
		"mqttSources": []map[string]any{{"name": "q1", "broker": b.MQTTURL(), "qos": 1, "clientId": "sigkill-test", "topics": []string{"meshcore/#"}}},
		"spoolDir":    spoolDir,
		"receiver":    map[string]any{"statsFile": stats},
	})
	// The session must exist on the broker before the first message, or
	// the broker keeps nothing for it.
	first := startChild(t, config)
	testkit.WaitFor(t, 10*time.Second, "first child subscribed", func() bool {
		s, ok := readStats(stats)
		return ok && len(s.SourceStatuses) == 1 && s.SourceStatuses[0].Connected
	})

	// The publisher runs until the last kill, at about 1,000 msg/s. A
	// message counts once the broker acknowledged it: from then on it is
	// the receiver's to keep.
	pub := publisher(t, b.URL())
	const rate = 1000
	stopPub := make(chan struct{})
	var published []int
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		type sent struct {
			i   int
			tok mqtt.Token
		}
		var batch []sent
		for i := 0; ; i++ {
			batch = append(batch, sent{i, pub.Publish("meshcore/SJC/OBS/packets", 1, false, fmt.Sprintf("%06d", i))})
			if len(batch) < rate/100 {
				continue
			}
			for _, m := range batch {
				if m.tok.WaitTimeout(5*time.Second) && m.tok.Error() == nil {
					published = append(published, m.i)
				}
			}
			batch = batch[:0]
			select {
			case <-stopPub:
				return
			default:
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second / rate)))
		}
	}()

	c := first
	for kill := 0; kill < 20; kill++ {
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.wait(t, 5*time.Second)
		c = startChild(t, config)
	}
	lastStart := time.Now()
	close(stopPub)
	<-done
	n := len(published)
	// Let the last child drain the broker: stop once nothing new arrived
	// for two seconds.
	last, still := int64(-1), time.Now()
	testkit.WaitFor(t, 60*time.Second, "the last child to drain the broker", func() bool {
		s, ok := readStats(stats)
		if !ok || s.PID != c.cmd.Process.Pid {
			return false
		}
		if s.Durable != last {
			last, still = s.Durable, time.Now()
		}
		return s.Pending == 0 && time.Since(still) > 2*time.Second
	})
	c.cmd.Process.Signal(syscall.SIGTERM)
	if code, took := c.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after %s; stderr:\n%s", code, took, c.stderr)
	}

	recs := readSpool(t, spoolDir)
	copies := map[string]int{}
	dups, beforeKills := 0, 0
	for _, rec := range recs {
		if rec.ReceivedAt.Before(lastStart) {
			beforeKills++
		}
		p := string(rec.Payload)
		copies[p]++
		if copies[p] > 1 {
			dups++
			if !rec.Duplicate {
				t.Errorf("record seq %d is copy %d of %q without the DUP flag", rec.Seq, copies[p], p)
			}
		}
	}
	var missing []string
	for _, i := range published {
		if copies[fmt.Sprintf("%06d", i)] == 0 {
			missing = append(missing, fmt.Sprintf("%06d", i))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d messages missing from the spool, e.g. %v", len(missing), n, missing[:min(10, len(missing))])
	}
	if beforeKills < n/10 {
		t.Fatalf("the killed children stored only %d records; the kills did not hit a running stream; last child:\n%s", beforeKills, c.stderr)
	}
	t.Logf("%d messages, %d records (%d redelivered duplicates) after 20 SIGKILLs; %d stored by the killed children", n, len(recs), dups, beforeKills)
}

// SIGTERM: intake stops, the last group is committed and the segment
// sealed, exit status 0 within 5 s — and what was received is readable.
func TestProcess_SIGTERM_FlushesAndExits0Within5s(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	stats := filepath.Join(dir, "stats.json")
	config := filepath.Join(dir, "config.json")
	writeConfig(t, config, map[string]any{
		"mqttSources": []map[string]any{{"name": "local", "broker": b.MQTTURL()}},
		"spoolDir":    filepath.Join(dir, "spool"),
		"receiver":    map[string]any{"statsFile": stats},
	})
	c := startChild(t, config)
	testkit.WaitFor(t, 10*time.Second, "connected", func() bool {
		s, ok := readStats(stats)
		return ok && len(s.SourceStatuses) == 1 && s.SourceStatuses[0].Connected
	})
	pub := publisher(t, b.URL())
	for i := 0; i < 200; i++ {
		publish(t, pub, "meshcore/SJC/O/packets", 0, false, []byte(fmt.Sprintf("m%d", i)))
	}
	testkit.WaitFor(t, 5*time.Second, "200 received", func() bool {
		s, ok := readStats(stats)
		return ok && s.SourceStatuses[0].PacketsTotal == 200
	})
	c.cmd.Process.Signal(syscall.SIGTERM)
	code, took := c.wait(t, 10*time.Second)
	if code != 0 || took > 5*time.Second {
		t.Fatalf("exit %d after %s; stderr:\n%s", code, took, c.stderr)
	}
	if recs := readSpool(t, filepath.Join(dir, "spool")); len(recs) != 200 {
		t.Fatalf("%d records in the sealed spool, want 200", len(recs))
	}
}

// SIGHUP reloads the sources from the file: the new one connects, the
// unchanged one is not touched.
func TestProcess_SIGHUP_ReloadsSources(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	stats := filepath.Join(dir, "stats.json")
	config := filepath.Join(dir, "config.json")
	cfg := map[string]any{
		"mqttSources": []map[string]any{{"name": "a", "broker": b.MQTTURL()}},
		"spoolDir":    filepath.Join(dir, "spool"),
		"receiver":    map[string]any{"statsFile": stats},
	}
	writeConfig(t, config, cfg)
	c := startChild(t, config)
	connected := func(names ...string) func() bool {
		return func() bool {
			s, ok := readStats(stats)
			if !ok || len(s.SourceStatuses) != len(names) {
				return false
			}
			for i, st := range s.SourceStatuses {
				if st.Name != names[i] || !st.Connected || st.ConnectCount != 1 {
					return false
				}
			}
			return true
		}
	}
	testkit.WaitFor(t, 10*time.Second, "a connected", connected("a"))
	cfg["mqttSources"] = []map[string]any{{"name": "a", "broker": b.MQTTURL()}, {"name": "b", "broker": b.MQTTURL()}}
	writeConfig(t, config, cfg)
	c.cmd.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "a untouched and b connected", connected("a", "b"))

	// A broken file on SIGHUP changes nothing and says why.
	os.WriteFile(config, []byte(`{"mqttSources": [{"name": "a", "broker": "ftp://x"}]}`), 0o600)
	c.cmd.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 5*time.Second, "the reload error logged", func() bool { return strings.Contains(c.stderr.String(), "not reloaded") })
	time.Sleep(1100 * time.Millisecond)
	if !connected("a", "b")() {
		t.Fatal("a bad reload changed the sources")
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := c.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, c.stderr)
	}
}

// A bad configuration is one line naming the field, exit status 2, before
// anything connects or the spool is created.
func TestProcess_BadConfig_OneLineNamingTheField(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, config, field string
	}{
		{"bad scheme", `{"mqttSources": [{"name": "x", "broker": "http://u:secretpw@h"}], "spoolDir": "SPOOL"}`, "mqttSources[0].broker"},
		{"unknown option", `{"mqttSources": [{"name": "x", "broker": "mqtt://h", "qso": 1}], "spoolDir": "SPOOL"}`, "mqttSources[0]"},
		{"bad qos", `{"mqttSources": [{"name": "x", "broker": "mqtt://h", "qos": 2}], "spoolDir": "SPOOL"}`, "mqttSources[0].qos"},
		{"not JSON", `{"mqttSources": [`, "line 1"},
		{"no source", `{"spoolDir": "SPOOL"}`, "mqttSources"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spoolDir := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			path := filepath.Join(dir, "config.json")
			os.WriteFile(path, []byte(strings.ReplaceAll(c.config, "SPOOL", spoolDir)), 0o600)
			var stderr bytes.Buffer
			cmd := exec.Command(meshingestBinary(t), "receive", "--config", path)
			cmd.Env = append(os.Environ(), "MQTT_BROKER=", "MESHINGEST_SPOOL_DIR=")
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("err %v, want exit status 2", err)
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(out, "\n") || !strings.Contains(out, c.field) || strings.Contains(out, "secretpw") {
				t.Fatalf("stderr %q: want one line naming %s, no password", out, c.field)
			}
			if _, err := os.Stat(spoolDir); err == nil {
				t.Fatal("the spool folder was created for a bad configuration")
			}
		})
	}
}

// SIGHUP reloads logLevel and the sources; a changed setting the receiver
// cannot apply while it runs is named in a warning (by key, never its
// value), and an unknown top-level key is warned about at start.
func TestProcess_SIGHUP_LogLevelAndRestartNotice(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	stats := filepath.Join(dir, "receiver-stats.json")
	config := filepath.Join(dir, "config.json")
	base := map[string]any{
		"mqttSources":  []map[string]any{{"name": "local", "broker": b.MQTTURL()}},
		"spoolDir":     filepath.Join(dir, "spool"),
		"receiver":     map[string]any{"statsFile": stats},
		"logLevel":     "warn",
		"someOtherKey": 1,
	}
	writeConfig(t, config, base)
	c := startChild(t, config)
	testkit.WaitFor(t, 10*time.Second, "connected", func() bool {
		s, ok := readStats(stats)
		return ok && len(s.SourceStatuses) == 1 && s.SourceStatuses[0].Connected
	})
	if strings.Contains(c.stderr.String(), "connected and subscribed") {
		t.Fatal("an info line at logLevel warn")
	}
	if n := strings.Count(c.stderr.String(), `unknown top-level key \"someOtherKey\"`); n != 1 {
		t.Fatalf("%d warnings about someOtherKey, want 1:\n%s", n, c.stderr)
	}
	base["logLevel"] = "debug"
	base["spool"] = map[string]any{"groupWindowMs": 200}
	base["mqttSources"] = []map[string]any{{"name": "local", "broker": b.MQTTURL()}, {"name": "second", "broker": b.MQTTURL(), "password": "s3cret"}}
	writeConfig(t, config, base)
	c.cmd.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "the reload lines", func() bool {
		out := c.stderr.String()
		return strings.Contains(out, `"from":"warn","to":"debug"`) && strings.Contains(out, "SIGHUP: log level changed") &&
			strings.Contains(out, `"keys":["spool.groupWindowMs"]`) && strings.Contains(out, "take effect when the receiver is restarted")
	})
	testkit.WaitFor(t, 10*time.Second, "the second source", func() bool {
		s, ok := readStats(stats)
		return ok && len(s.SourceStatuses) == 2 && s.SourceStatuses[1].Connected
	})
	if strings.Contains(c.stderr.String(), "s3cret") {
		t.Fatal("the reload logged a password")
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := c.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
