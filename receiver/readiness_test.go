package receiver

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

func (ns *notifySocket) messages() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	var out []string
	for _, m := range ns.got {
		out = append(out, m.msg)
	}
	return out
}

// count counts the notices that start with prefix and contain contains.
// (mosquitto, started with NOTIFY_SOCKET set, sends a bare READY=1 of its
// own: the receiver's READY=1 comes with a STATUS line.)
func (ns *notifySocket) count(prefix, contains string) int {
	n := 0
	for _, m := range ns.messages() {
		if strings.HasPrefix(m, prefix) && strings.Contains(m, contains) {
			n++
		}
	}
	return n
}

// A spool under its free-disk floor from the start can take nothing: the
// receiver never says READY=1 (before, it did, and then dropped 100 % of
// QoS 0), its status line, stats file and metrics say NOT READY and why,
// and an error with the bytes free and the floor is logged.
func TestReceiver_SpoolUnderFloor_NotReady(t *testing.T) {
	ns := listenNotify(t, "0")
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{MinFreeBytes: 1 << 60})
	r := startReceiverNotify(t, sp, shared.NewNotifier(), shared.Source{Name: "local", Broker: b.MQTTURL()})
	testkit.WaitFor(t, 10*time.Second, "a NOT READY status line", func() bool { return ns.count("STATUS=", "NOT READY") > 0 })
	testkit.WaitFor(t, 5*time.Second, "the NOT READY error", func() bool {
		return strings.Contains(r.logs.String(), `"level":"error"`) && strings.Contains(r.logs.String(), "NOT READY") &&
			strings.Contains(r.logs.String(), `"min_free_bytes":1152921504606846976`)
	})
	if n := ns.count("READY=1\n", ""); n != 0 {
		t.Fatalf("READY=1 sent %d times although nothing can be appended: %q", n, ns.messages())
	}
	snap := r.Snapshot(time.Now())
	if snap.Ready || !strings.Contains(snap.NotReady, "spool.minFreeBytes") {
		t.Fatalf("snapshot ready=%v notReady=%q", snap.Ready, snap.NotReady)
	}
}

// blockableSpool reports the spool blocked while the test says so.
type blockableSpool struct {
	*testSpool
	blocked atomic.Pointer[string]
}

func (s *blockableSpool) Stats() spool.AppenderStats {
	st := s.testSpool.Stats()
	if b := s.blocked.Load(); b != nil {
		st.Blocked, st.Full, st.FullReason = *b, true, *b
	}
	return st
}

// READY=1 goes out once the spool can take messages again, and a spool
// that fills up later shows as NOT READY in the status line and the stats
// file, and READY again when space is back.
func TestReceiver_SpoolBlockedThenFreed_ReadyOnce(t *testing.T) {
	ns := listenNotify(t, "0")
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := &blockableSpool{testSpool: newSpool(t, spool.Options{})}
	reason := "the spool holds 10 bytes, the cap is 10 (spool.maxBytes)"
	sp.blocked.Store(&reason)
	r := startReceiverNotify(t, sp, shared.NewNotifier(), shared.Source{Name: "local", Broker: b.MQTTURL()})
	testkit.WaitFor(t, 10*time.Second, "a NOT READY status line", func() bool { return ns.count("STATUS=", "NOT READY") > 0 })
	if ns.count("READY=1\n", "") != 0 {
		t.Fatal("READY=1 while blocked")
	}
	sp.blocked.Store(nil)
	testkit.WaitFor(t, 10*time.Second, "READY=1", func() bool { return ns.count("READY=1\n", "") == 1 })
	if s := r.Snapshot(time.Now()); !s.Ready {
		t.Fatalf("not ready after space came back: %q", s.NotReady)
	}
	sp.blocked.Store(&reason)
	before := ns.count("STATUS=", "NOT READY")
	testkit.WaitFor(t, 10*time.Second, "NOT READY again", func() bool {
		s, ok := readStats(r.stats)
		return ok && !s.Ready && strings.Contains(s.NotReady, "spool.maxBytes") && ns.count("STATUS=", "NOT READY") > before
	})
	sp.blocked.Store(nil)
	testkit.WaitFor(t, 10*time.Second, "ready again", func() bool { s, ok := readStats(r.stats); return ok && s.Ready })
	if n := ns.count("READY=1\n", ""); n != 1 {
		t.Fatalf("READY=1 sent %d times, want once", n)
	}
}
