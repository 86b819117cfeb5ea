package receiver

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/mosquittotest"
	"github.com/meshingest/meshingest/shared"
)

// QoS 1 while the spool refuses: nothing is acknowledged that is not on
// disk, the broker keeps the rest, and a reconnect brings every held
// message back once the spool accepts again. Nothing is lost.
func TestSource_QoS1SpoolRefuses_BrokerRedelivers(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	sp := newFakeSpool(200)
	r := startReceiver(t, sp, shared.Source{Name: "q1", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}, QoS: 1, ClientID: "bp-test"})
	waitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("q1"); return s.Connected })

	sp.mu.Lock()
	sp.stall = 1500 * time.Millisecond
	sp.mu.Unlock()
	pub := publisher(t, b.URL())
	const n = 2000
	for i := 0; i < n; i++ {
		pub.Publish("meshcore/SJC/O/packets", 1, false, fmt.Sprintf("m%05d", i))
	}
	unique := func() int {
		m := map[string]bool{}
		for _, rec := range sp.records() {
			m[string(rec.Payload)] = true
		}
		return len(m)
	}
	waitFor(t, 30*time.Second, "every message in the spool", func() bool { return unique() == n })
	_, c := r.source("q1")
	if c.Held[reasonQueueFull] == 0 || c.RedeliveryReconnects == 0 {
		t.Fatalf("the spool never refused, or no redelivery: %+v", c)
	}
	if len(c.Dropped) != 0 {
		t.Fatalf("QoS 1 messages dropped: %v", c.Dropped)
	}
	t.Logf("held %v, %d redelivery reconnects, %d records for %d messages", c.Held, c.RedeliveryReconnects, len(sp.records()), n)
}

// QoS 0 while the spool stalls: the client stays connected (the handler
// never waits), messages past the in-memory bound are dropped and counted,
// the rest land.
func TestSource_QoS0SpoolStalls_DropsCountedNoDisconnect(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{})
	sp := newFakeSpool(300)
	r := startReceiver(t, sp, shared.Source{Name: "q0", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}})
	waitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("q0"); return s.Connected })
	sp.mu.Lock()
	sp.stall = 3 * time.Second
	sp.mu.Unlock()
	pub := publisher(t, b.URL())
	const n = 1000
	for i := 0; i < n; i++ {
		publish(t, pub, "meshcore/SJC/O/packets", 0, false, []byte(fmt.Sprintf("m%05d", i)))
	}
	waitFor(t, 10*time.Second, "all seen", func() bool { s, _ := r.source("q0"); return s.PacketsTotal == n })
	waitFor(t, 10*time.Second, "settled", func() bool { return r.Snapshot(time.Now()).Pending == 0 })
	s, c := r.source("q0")
	if s.ConnectCount != 1 || s.DisconnectCount != 0 {
		t.Fatalf("the stall disconnected the source: %+v", s)
	}
	dropped := c.Dropped[reasonQueueFull]
	if dropped == 0 || c.Durable+dropped != n || int64(len(sp.records())) != c.Durable {
		t.Fatalf("durable %d + dropped %d != %d (records %d)", c.Durable, dropped, n, len(sp.records()))
	}
}
