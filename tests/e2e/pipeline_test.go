package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/dbsummary"
	"github.com/meshingest/meshingest/internal/testkit"
)

// The production shape: mosquitto, `meshingest receive` and `meshingest
// write` as three processes, the corpus replayed by `meshingest replay`.
func TestE2E_MosquittoReceiveWrite_EndAtTheCorpusTotals(t *testing.T) {
	for _, qos := range []int{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			broker := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
			e := newEnv(t, map[string]any{
				"mqttSources": []map[string]any{{"name": "local", "broker": broker.MQTTURL(), "qos": qos}},
			})
			receiver := e.start("receive", nil, "receive", "--config", e.config)
			writer := e.start("write", nil, "write", "--config", e.config)
			e.waitSubscribed(30 * time.Second)
			e.replay(broker.MQTTURL(), qos, e.writeCorpus())
			e.waitTotals(60 * time.Second)
			for _, p := range []*proc{receiver, writer} {
				if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
					t.Errorf("%s exited %d after SIGTERM, want 0", p.cmd.Args[1], code)
				}
			}
		})
	}
}

// The single-box shape: `meshingest run` with its embedded broker
// listening on a configured address, fed by `meshingest replay`. Midway the
// writer child is SIGKILLed: run restarts it, and the database still ends
// at the exact totals (nothing lost, nothing counted twice).
func TestE2E_RunEmbeddedBroker_SurvivesAWriterCrash(t *testing.T) {
	port := testkit.FreePort(t)
	e := newEnv(t, map[string]any{"broker": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", port)}})
	run := e.start("run", nil, "run", "--config", e.config)
	rs := e.waitSubscribed(30 * time.Second)

	var ws writerStats
	testkit.WaitFor(t, 2*time.Minute, "the writer's stats", func() bool {
		var err error
		ws, err = e.readWriterStats()
		return err == nil && ws.Meshingest.PID > 0
	})
	firstWriter := ws.Meshingest.PID
	// The corpus at 200 msg/s takes about 2.7 s; the writer dies 1 s in.
	replay := e.start("replay", nil, "replay", "--broker", fmt.Sprintf("mqtt://127.0.0.1:%d", port),
		"--qos", "1", "--rate", "200", "--quiet", e.writeCorpus())
	time.Sleep(time.Second)
	if err := syscall.Kill(firstWriter, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the writer child %d: %v", firstWriter, err)
	}
	<-replay.done
	if code := replay.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("replay exited %d", code)
	}
	e.waitTotals(90 * time.Second)

	ws, _ = e.readWriterStats()
	if ws.Meshingest.PID == firstWriter || !alive(ws.Meshingest.PID) {
		t.Fatalf("writer pid %d after killing %d: not restarted", ws.Meshingest.PID, firstWriter)
	}
	if got := lines(t, run.log, "child exited unexpectedly", `"writer"`); len(got) != 1 {
		t.Errorf("run logged %d writer crashes, want 1:\n%s", len(got), strings.Join(got, "\n"))
	}

	// SIGHUP reaches the receiver (it reloads its sources) and stops no one.
	run.cmd.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, time.Minute, "the receiver's reload", func() bool { return len(lines(t, run.log, "sources reloaded")) == 1 })
	time.Sleep(500 * time.Millisecond)
	if got := lines(t, run.log, "child exited unexpectedly"); len(got) != 1 {
		t.Errorf("after SIGHUP, %d child crashes logged, want only the killed writer:\n%s", len(got), strings.Join(got, "\n"))
	}

	if code := run.stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Errorf("run exited %d after SIGTERM, want 0", code)
	}
	for _, pid := range []int{rs.PID, ws.Meshingest.PID} {
		if alive(pid) {
			t.Errorf("child %d still running after run stopped", pid)
		}
	}
	if got := lines(t, run.log, "child stopped", "exit status 0"); len(got) != 2 {
		t.Errorf("run logged %d clean child stops, want 2:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// `meshingest run` with no broker at all in the configuration starts the
// embedded one on 127.0.0.1 and points the receiver at it; the database
// and spool default to ./data/.
func TestE2E_RunWithoutConfig_DefaultsUnderData(t *testing.T) {
	dir := t.TempDir()
	e := &env{t: t, dir: dir, db: filepath.Join(dir, "data", "meshcore.db"), spool: filepath.Join(dir, "data", "spool")}
	run := e.start("run", []string{"CORESCOPE_INGESTOR_STATS=" + filepath.Join(dir, "stats.json")}, "run")
	rs := e.waitSubscribed(30 * time.Second)
	if len(rs.SourceStatuses) != 1 || rs.SourceStatuses[0].Name != "embedded" {
		t.Fatalf("receiver sources = %+v, want the embedded broker", rs.SourceStatuses)
	}
	testkit.WaitFor(t, 2*time.Minute, "the database under ./data", func() bool {
		_, err := os.Stat(e.db)
		return err == nil
	})
	if code := run.stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Errorf("run exited %d after SIGTERM, want 0", code)
	}
}

// README command 1, as a newcomer runs it.
func TestE2E_Demo_PrintsTheCorpusTotalsAndExitsZero(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	cmd := exec.Command(testkit.BinaryPath(t), "demo", "--dir", dir)
	cmd.Env = append(cleanEnv(), "DB_PATH=/nonexistent/must-not-be-used.db")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "demo.log"))
		t.Fatalf("demo: %v\n%s\n---- demo.log\n%s", err, out, tail(log, 6000))
	}
	for _, line := range []string{"transmissions  ", "498", "observers", "31", "90 (adverts counted: 102)",
		"GRP_TXT 165, ADVERT 102", "#test 35, #wardriving 17, #bot 14, Public 13, #chat 2",
		"spool depth", "0 records", "lag", filepath.Join(dir, "meshcore.db")} {
		if !strings.Contains(string(out), line) {
			t.Errorf("demo output lacks %q:\n%s", line, out)
		}
	}
	got, err := dbsummary.Read(t.Context(), filepath.Join(dir, "meshcore.db"))
	if err != nil || !sameSummary(got, want) {
		t.Fatalf("demo database: %+v (err %v)\nwant %+v", got, err, want)
	}
	// A second demo into the same folder would add to it: refused.
	again := exec.Command(testkit.BinaryPath(t), "demo", "--dir", dir)
	again.Env = cleanEnv()
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Fatalf("demo into a used folder: %v\n%s", err, out)
	}
}

// The printed units verify clean, pointing at the real binary.
func TestE2E_SystemdPrint_VerifyIsClean(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed; run: apt-get install systemd (.ci/run does it)")
	}
	e := newEnv(t, map[string]any{"dbPath": "/srv/corescope/meshcore.db"})
	out := filepath.Join(e.dir, "units")
	cmd := exec.Command(testkit.BinaryPath(t), "systemd", "print", "--out", out, "--binary", binary, "--config", e.config)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd print: %v\n%s", err, msg)
	}
	for _, unit := range []string{"meshingest-receiver.service", "meshingest-writer.service"} {
		v := exec.Command(analyze, "verify", filepath.Join(out, unit))
		v.Env = append(cleanEnv(), "SYSTEMD_LOG_COLOR=0")
		msg, err := v.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(msg))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, msg)
		}
	}
	writer, _ := os.ReadFile(filepath.Join(out, "meshingest-writer.service"))
	if !strings.Contains(string(writer), "ReadWritePaths=/srv/corescope\n") {
		t.Errorf("writer unit does not make the configured database folder writable:\n%s", writer)
	}
}
