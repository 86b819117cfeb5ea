package receiver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// serveHealth serves r's metrics listener and returns its base URL.
func serveHealth(t *testing.T, r *running) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr, err := shared.ServeMetrics(ctx, "127.0.0.1:0", shared.NewRegistry(), r.Health(), r.log)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addr.String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A broker that stays away was logged at every attempt (every 3 s: 28,800
// lines a day). Now the first failure is logged, the next ones wait a
// minute and more, and the connection that finally works says how many
// attempts failed.
func TestSource_UnreachableBroker_FirstFailureLoggedThenDecays(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	b.Stop()
	r := startReceiver(t, newSpool(t, spool.Options{}), shared.Source{Name: "away", Broker: b.MQTTURL()})
	testkit.WaitFor(t, 30*time.Second, "five failed attempts", func() bool { _, c := r.source("away"); return c.ConnectAttempts >= 5 })
	if n := strings.Count(r.logs.String(), "cannot connect to broker"); n != 1 {
		t.Fatalf("%d lines for 5 failed attempts within seconds, want 1:\n%s", n, r.logs.String())
	}
	if !strings.Contains(r.logs.String(), `"retry_ms":`) {
		t.Error("the back-off is not logged in ms")
	}
	// Ready meanwhile: the source is retrying within its back-off.
	if s := r.Snapshot(time.Now()); !s.Ready || !s.Healthy {
		t.Fatalf("ready %v (%q) healthy %v (%q) while retrying", s.Ready, s.NotReady, s.Healthy, s.Unhealthy)
	}
	b.Restart(0)
	testkit.WaitFor(t, 10*time.Second, "connected", func() bool { s, _ := r.source("away"); return s.Connected })
	testkit.WaitFor(t, 5*time.Second, "the connect line", func() bool {
		return strings.Contains(r.logs.String(), `"failed_attempts":`) && strings.Contains(r.logs.String(), "connected and subscribed")
	})
}

// A spool that settles nothing while records wait makes /-/healthy answer
// 503 with the reason, and 200 again once it settles.
func TestReceiver_Health_StalledSpool_Unhealthy(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{})
	r := startReceiverWith(t, Options{Sources: []shared.Source{{Name: "local", Broker: b.MQTTURL()}}, Spool: sp, StuckAfter: 300 * time.Millisecond})
	base := serveHealth(t, r)
	testkit.WaitFor(t, 10*time.Second, "ready", func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 })
	if code, body := get(t, base+"/-/healthy"); code != 200 || body != "OK\n" {
		t.Fatalf("/-/healthy = %d %q before the stall", code, body)
	}
	sp.stallNextSync(4 * time.Second)
	publish(t, publisher(t, b.URL()), "meshcore/SJC/O/packets", 0, false, []byte("x"))
	var body string
	testkit.WaitFor(t, 10*time.Second, "/-/healthy 503", func() bool {
		var code int
		code, body = get(t, base+"/-/healthy")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "settled nothing") || strings.Count(body, "\n") != 1 {
		t.Fatalf("/-/healthy body %q, want one line with the reason", body)
	}
	testkit.WaitFor(t, 15*time.Second, "healthy again", func() bool { code, _ := get(t, base+"/-/healthy"); return code == 200 })
	testkit.WaitFor(t, 5*time.Second, "the stats file says healthy", func() bool { s, ok := readStats(r.stats); return ok && s.Healthy })
}

// failingSpool settles every record with an error while fail is set, as a
// disk that returns EIO would.
type failingSpool struct {
	*testSpool
	fail atomic.Bool
}

func (s *failingSpool) Append(rec spool.Record, done func(error)) error {
	if s.fail.Load() {
		go done(errors.New("write segment: input/output error"))
		return nil
	}
	return s.testSpool.Append(rec, done)
}

// Appends that do not reach disk make the receiver not ready (503 at
// /-/ready with the error), and ready again after the next that does.
func TestReceiver_Ready_FailingWrites_NotReady(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := &failingSpool{testSpool: newSpool(t, spool.Options{})}
	r := startReceiver(t, sp, shared.Source{Name: "local", Broker: b.MQTTURL()})
	base := serveHealth(t, r)
	testkit.WaitFor(t, 10*time.Second, "ready", func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 })
	pub := publisher(t, b.URL())
	sp.fail.Store(true)
	publish(t, pub, "meshcore/SJC/O/packets", 0, false, []byte("x"))
	var body string
	testkit.WaitFor(t, 10*time.Second, "/-/ready 503", func() bool {
		var code int
		code, body = get(t, base+"/-/ready")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "spool writes fail: write segment: input/output error") {
		t.Fatalf("/-/ready body %q", body)
	}
	if _, c := r.source("local"); c.Dropped[reasonWriteFailed] != 1 {
		t.Fatalf("drops %v, want one write_failed", c.Dropped)
	}
	sp.fail.Store(false)
	publish(t, pub, "meshcore/SJC/O/packets", 0, false, []byte("y"))
	testkit.WaitFor(t, 10*time.Second, "ready again", func() bool { code, _ := get(t, base+"/-/ready"); return code == 200 })
}

// Every drop and hold reason has its counter from the start, at zero, in
// the stats file and the metrics.
func TestReceiver_DropCounters_ZeroFromStart(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	r := startReceiver(t, newSpool(t, spool.Options{}), shared.Source{Name: "local", Broker: b.MQTTURL()})
	testkit.WaitFor(t, 10*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })
	_, c := r.source("local")
	for _, reason := range DropReasons() {
		if v, ok := c.Dropped[reason]; !ok || v != 0 {
			t.Errorf("dropped[%s] = %d, %v; want 0, present", reason, v, ok)
		}
	}
	for _, reason := range HeldReasons() {
		if v, ok := c.Held[reason]; !ok || v != 0 {
			t.Errorf("held[%s] = %d, %v; want 0, present", reason, v, ok)
		}
	}
}
