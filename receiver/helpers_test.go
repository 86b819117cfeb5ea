package receiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a Receiver started by a test.
type running struct {
	*Receiver
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	stats  string
}

// startReceiver runs a receiver over sp until the test stops it (or ends).
func startReceiver(t *testing.T, sp Spool, sources ...shared.Source) *running {
	t.Helper()
	return startReceiverNotify(t, sp, nil, sources...)
}

func startReceiverNotify(t *testing.T, sp Spool, n *shared.Notifier, sources ...shared.Source) *running {
	t.Helper()
	return startReceiverWith(t, Options{Sources: sources, Spool: sp, Notifier: n})
}

// startReceiverWith fills in the log and the stats file and runs opts.
func startReceiverWith(t *testing.T, opts Options) *running {
	t.Helper()
	logs := &syncBuffer{}
	opts.Log = zerolog.New(io.MultiWriter(logs, testWriter{t})).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	opts.StatsFile = t.TempDir() + "/receiver-stats.json"
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{Receiver: r, logs: logs, cancel: cancel, done: make(chan error, 1), stats: opts.StatsFile}
	go func() { run.done <- r.Run(ctx) }()
	t.Cleanup(func() { run.stop(t) })
	return run
}

// stop shuts the receiver down and returns Run's result; later calls
// return nil.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("receiver did not stop within 10s")
		return nil
	}
}

func (r *running) source(name string) (shared.SourceStatus, SourceCounters) {
	snap := r.Snapshot(time.Now())
	for i, s := range snap.SourceStatuses {
		if s.Name == name {
			return s, snap.Sources[i]
		}
	}
	return shared.SourceStatus{}, SourceCounters{}
}

// testWriter sends log lines to t.Log, so a failing test shows them.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// publisher is a plain paho client publishing test traffic.
func publisher(t testing.TB, url string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())).SetCleanSession(true)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t testing.TB, c mqtt.Client, topic string, qos byte, retained bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// testSpool is a real spool in a temp folder, with a hook that stalls the
// next fsync, as a slow disk would.
type testSpool struct {
	*spool.Appender
	dir   string
	stall atomic.Int64                  // nanoseconds the next fsync waits
	gate  atomic.Pointer[chan struct{}] // the next fsync waits until it is closed
}

func newSpool(t *testing.T, opts spool.Options) *testSpool {
	t.Helper()
	ts := &testSpool{dir: filepath.Join(t.TempDir(), "spool")}
	opts.BeforeSync = func() {
		if d := ts.stall.Swap(0); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if g := ts.gate.Swap(nil); g != nil {
			<-*g
		}
	}
	a, err := spool.OpenAppender(ts.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.Appender = a
	t.Cleanup(func() { a.Close() })
	return ts
}

// stallNextSync makes the next fsync take d.
func (ts *testSpool) stallNextSync(d time.Duration) { ts.stall.Store(int64(d)) }

// holdNextSync makes the next fsync wait until release is called.
func (ts *testSpool) holdNextSync() (release func()) {
	g := make(chan struct{})
	ts.gate.Store(&g)
	var once sync.Once
	return func() { once.Do(func() { close(g) }) }
}

// records reads back every record; call it after the receiver stopped (its
// Close sealed the active segment).
func (ts *testSpool) records(t *testing.T) []spool.Record {
	t.Helper()
	return readSpool(t, ts.dir)
}

// waitQuiet waits until a source has received nothing new for a second and
// the spool has settled everything.
func waitQuiet(t *testing.T, r *running, name string) {
	t.Helper()
	last, since := int64(-1), time.Now()
	testkit.WaitFor(t, 30*time.Second, name+" quiet", func() bool {
		s, _ := r.source(name)
		if s.PacketsTotal != last {
			last, since = s.PacketsTotal, time.Now()
		}
		return time.Since(since) > time.Second && r.Snapshot(time.Now()).Pending == 0
	})
}

// nonZero is the reasons of counters that counted something: every
// reason's counter exists from the start, at zero.
func nonZero(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
