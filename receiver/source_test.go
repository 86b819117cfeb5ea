package receiver

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// A status replayed by the broker at subscribe time keeps its retained
// flag, and does not count as live traffic; the same topic published live
// afterwards arrives without the flag.
func TestSource_RetainedStatus_KeepsFlag(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	pub := publisher(t, b.URL())
	publish(t, pub, "meshcore/SJC/OBS1/status", 1, true, []byte(`{"status":"online"}`))

	sp := newSpool(t, spool.Options{})
	r := startReceiver(t, sp, shared.Source{Name: "local", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}})
	testkit.WaitFor(t, 5*time.Second, "retained replay", func() bool { _, c := r.source("local"); return c.Durable == 1 })
	st, c := r.source("local")
	if c.Retained != 1 || st.LastPacketUnix != 0 || st.PacketsTotal != 1 {
		t.Fatalf("after the replay: status %+v counters %+v", st, c)
	}
	publish(t, pub, "meshcore/SJC/OBS1/status", 0, false, []byte(`{"status":"online","live":true}`))
	testkit.WaitFor(t, 5*time.Second, "live status", func() bool { _, c := r.source("local"); return c.Durable == 2 })
	r.stop(t)
	recs := sp.records(t)
	if !recs[0].Retained || recs[1].Retained {
		t.Fatalf("retained flags: %v %v, want true false", recs[0].Retained, recs[1].Retained)
	}
	if st, _ := r.source("local"); st.LastPacketUnix == 0 {
		t.Fatal("a live message did not set lastPacketUnix")
	}
}

// iataFilter keeps packets of the listed regions and every status message.
func TestSource_IATAFilter_PacketsOnly(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{})
	r := startReceiver(t, sp, shared.Source{Name: "f", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}, IATAFilter: []string{"SJC"}, QoS: 1})
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("f"); return s.Connected })
	pub := publisher(t, b.URL())
	topics := []string{
		"meshcore/SJC/A/packets", // kept
		"meshcore/OAK/B/packets", // filtered
		"meshcore/OAK/B/status",  // kept: status always passes
		"meshcore/sjc/C/packets", // filtered: compared as it is, like CoreScope
		"meshcore/SJC/D/status",  // kept
		"meshcore/packets",       // filtered: no region
	}
	for _, tp := range topics {
		publish(t, pub, tp, 1, false, []byte(`{}`))
	}
	testkit.WaitFor(t, 5*time.Second, "all six seen and acked", func() bool {
		s, c := r.source("f")
		return s.PacketsTotal == 6 && c.Acked == 6
	})
	r.stop(t)
	var got []string
	for _, rec := range sp.records(t) {
		got = append(got, rec.Topic)
	}
	want := "meshcore/SJC/A/packets meshcore/OAK/B/status meshcore/SJC/D/status"
	if strings.Join(got, " ") != want {
		t.Fatalf("spooled %v, want %s", got, want)
	}
	if _, c := r.source("f"); c.Filtered != 3 {
		t.Fatalf("filtered %d, want 3", c.Filtered)
	}
}

// A password never shows in logs, the stats file or lastError, whether it
// sits in the URL or in the password field.
func TestSource_Password_NeverShown(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{Username: "observer", Password: "s3cret-pw"})
	sp := newSpool(t, spool.Options{})
	good := shared.Source{Name: "good", Broker: "mqtt://observer:s3cret-pw@127.0.0.1:" + itoa(b.Port), Topics: []string{"meshcore/#"}}
	bad := shared.Source{Name: "bad", Broker: b.MQTTURL(), Username: "observer", Password: "wrong-s3cret", Topics: []string{"meshcore/#"}}
	badURL := shared.Source{Name: "badurl", Broker: "mqtt://observer:wrong-inurl@127.0.0.1:" + itoa(b.Port)}
	r := startReceiver(t, sp, good, bad, badURL)
	testkit.WaitFor(t, 5*time.Second, "good connected, bad failed twice", func() bool {
		g, _ := r.source("good")
		_, bc := r.source("bad")
		_, uc := r.source("badurl")
		return g.Connected && bc.ConnectAttempts >= 2 && uc.ConnectAttempts >= 2
	})
	time.Sleep(1100 * time.Millisecond) // one stats file write
	s, _ := r.source("bad")
	if s.LastError == "" || s.Connected {
		t.Fatalf("bad source status %+v", s)
	}
	g, _ := r.source("good")
	if g.Broker != "mqtt://observer:****@127.0.0.1:"+itoa(b.Port) {
		t.Fatalf("good broker shown as %q", g.Broker)
	}
	r.stop(t)
	stats, err := os.ReadFile(r.stats)
	if err != nil {
		t.Fatal(err)
	}
	for _, where := range []struct{ name, text string }{{"logs", r.logs.String()}, {"stats file", string(stats)}} {
		for _, secret := range []string{"s3cret-pw", "wrong-s3cret", "wrong-inurl"} {
			if strings.Contains(where.text, secret) {
				t.Errorf("%s contain the password %q", where.name, secret)
			}
		}
	}
	if !strings.Contains(r.logs.String(), "cannot connect to broker") {
		t.Error("no log line for the failed attempts")
	}
}

// A broker that accepts TCP but never answers must not delay the others.
func TestSource_Unreachable_DoesNotDelayOthers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{})
	start := time.Now()
	r := startReceiver(t, sp,
		shared.Source{Name: "silent", Broker: "mqtt://" + ln.Addr().String(), ConnectTimeoutSec: 30},
		shared.Source{Name: "local", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}})
	testkit.WaitFor(t, 2*time.Second, "local connected", func() bool { s, _ := r.source("local"); return s.Connected })
	pub := publisher(t, b.URL())
	publish(t, pub, "meshcore/SJC/A/packets", 0, false, []byte(`{}`))
	testkit.WaitFor(t, 2*time.Second, "message spooled", func() bool { _, c := r.source("local"); return c.Durable == 1 })
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took %s", took)
	}
	if s, _ := r.source("silent"); s.Connected {
		t.Fatal("silent broker shown connected")
	}
	stopAt := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(stopAt); took > 5*time.Second {
		t.Fatalf("stop took %s with a connection attempt in progress", took)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
