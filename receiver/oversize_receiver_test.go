package receiver

// The oversize guard end to end: a real mosquitto between publishers and
// the receiver.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// rawPublisher is testkit.RawPublisher failing the test on an error.
type rawPublisher struct {
	t testing.TB
	p *testkit.RawPublisher
}

func dialRawPublisher(t testing.TB, addr string) *rawPublisher {
	t.Helper()
	p, err := testkit.DialRawPublisher(addr, "raw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &rawPublisher{t: t, p: p}
}

// publish sends size zero bytes to topic; at QoS 1 it waits for the PUBACK.
func (r *rawPublisher) publish(topic string, qos byte, size int) {
	r.t.Helper()
	if err := r.p.Publish(topic, qos, size); err != nil {
		r.t.Fatal(err)
	}
}

// Publishes over spool.maxPayloadBytes, among small ones, at QoS 0 and 1:
// the small ones are all stored, the large ones counted as oversized and,
// at QoS 1, acknowledged; the connection stays up, and no stand-in marker
// reaches the spool. A payload of exactly the limit is stored.
func TestReceiver_OversizedPublish_DroppedCountedAcked(t *testing.T) {
	const limit = 64 << 10
	for _, qos := range []int{0, 1} {
		t.Run("qos"+strconv.Itoa(qos), func(t *testing.T) {
			b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
			sp := newSpool(t, spool.Options{MaxPayloadBytes: limit})
			r := startReceiverWith(t, Options{Spool: sp, MaxPayloadBytes: limit,
				Sources: []shared.Source{{Name: "local", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}, QoS: qos}}})
			testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })

			pub := publisher(t, b.URL())
			raw := dialRawPublisher(t, "127.0.0.1:"+strconv.Itoa(b.Port))
			var want []string
			small := func(n int) {
				for range n {
					p := fmt.Sprintf("small-%03d", len(want))
					publish(t, pub, "meshcore/SEA/OBS/packets", 1, false, []byte(p))
					want = append(want, p)
				}
			}
			small(20)
			raw.publish("meshcore/SEA/BIG/packets", 1, 2<<20)
			small(20)
			raw.publish("meshcore/SEA/BIG/packets", 0, limit+1)
			small(20)
			raw.publish("meshcore/SEA/EDGE/packets", 1, limit) // stored
			small(20)
			stored := int64(len(want) + 1)
			testkit.WaitFor(t, 20*time.Second, "small messages durable, oversized counted", func() bool {
				_, c := r.source("local")
				return c.Durable == stored && c.Dropped[reasonOversized] == 2
			})
			st, c := r.source("local")
			if st.DisconnectCount != 0 || st.ConnectCount != 1 {
				t.Fatalf("connection did not stay up: %d connects, %d disconnects (%s)", st.ConnectCount, st.DisconnectCount, st.LastError)
			}
			if qos == 1 {
				// Every QoS 1 message is acknowledged, the oversized one
				// included (the other was published at QoS 0).
				testkit.WaitFor(t, 5*time.Second, "all acked", func() bool { _, c := r.source("local"); return c.Acked == stored+1 })
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			recs := sp.records(t)
			var got []string
			for _, rec := range recs {
				switch {
				case rec.Topic == "meshcore/SEA/EDGE/packets" && len(rec.Payload) == limit:
				case strings.HasPrefix(string(rec.Payload), "small-"):
					got = append(got, string(rec.Payload))
				default:
					t.Fatalf("unexpected record in the spool: topic %s, %d bytes %q", rec.Topic, len(rec.Payload), rec.Payload[:min(len(rec.Payload), 40)])
				}
			}
			if strings.Join(got, ",") != strings.Join(want, ",") || len(recs) != len(want)+1 {
				t.Fatalf("spool holds %d small records (%d in all), want %d", len(got), len(recs), len(want))
			}
			if c.Dropped[reasonOversized] != 2 || len(nonZero(c.Dropped)) != 1 {
				t.Fatalf("drops %v, want 2 oversized only", c.Dropped)
			}
		})
	}
}

// vmHWM is a process's peak resident memory, from /proc/PID/status.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// The case, on the real binary: 100 MB and 260 MB publishes at
// QoS 0 and 1 reach a receiver with two sources (one subscribed at QoS 0,
// one at QoS 1) among a steady stream of small messages. The receiver's
// peak RSS stays within 64 MiB plus a small multiple of maxPayloadBytes
// (it went to 533 MB before), neither connection drops, every small
// message is stored by both sources, and the large ones are counted as
// oversized drops. The normal suite sends one 100 MB publish at each QoS
// (the full set takes minutes on a loaded machine under -race);
// MESHINGEST_HUGE_PUBLISHES=full sends the five, 760 MB.
func TestProcess_HugePublishes_BoundedMemoryNoDisconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 760 MB through mosquitto")
	}
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	stats := filepath.Join(dir, "receiver-stats.json")
	config := filepath.Join(dir, "config.json")
	spoolDir := filepath.Join(dir, "spool")
	writeConfig(t, config, map[string]any{
		"mqttSources": []map[string]any{
			{"name": "q0", "broker": b.MQTTURL(), "qos": 0, "topics": []string{"meshcore/#"}},
			{"name": "q1", "broker": b.MQTTURL(), "qos": 1, "clientId": "huge-q1", "topics": []string{"meshcore/#"}},
		},
		"spoolDir": spoolDir,
		"receiver": map[string]any{"statsFile": stats},
	})
	c := startChild(t, config)
	testkit.WaitFor(t, 15*time.Second, "both sources connected", func() bool {
		s, ok := readStats(stats)
		return ok && len(s.SourceStatuses) == 2 && s.SourceStatuses[0].Connected && s.SourceStatuses[1].Connected
	})

	// Small messages all along, about 200 a second, each acknowledged by
	// the broker before the next.
	pub := publisher(t, b.URL())
	stop := make(chan struct{})
	var mu sync.Mutex
	var sent []string
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := fmt.Sprintf("small-%06d", i)
			tok := pub.Publish("meshcore/SEA/OBS/packets", 1, false, p)
			if tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
				mu.Lock()
				sent = append(sent, p)
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	raw := dialRawPublisher(t, "127.0.0.1:"+strconv.Itoa(b.Port))
	huge := []struct {
		qos  byte
		size int
	}{{0, 100e6}, {1, 100e6}}
	if os.Getenv("MESHINGEST_HUGE_PUBLISHES") == "full" {
		huge = append(huge, []struct {
			qos  byte
			size int
		}{{0, 100e6}, {1, 260e6}, {0, 260e6}}...)
	}
	for _, h := range huge {
		raw.publish("meshcore/SEA/HUGE/packets", h.qos, h.size)
	}
	testkit.WaitFor(t, 10*time.Minute, "the huge publishes counted by both sources", func() bool {
		s, ok := readStats(stats)
		return ok && len(s.Sources) == 2 && s.Sources[0].Dropped[reasonOversized] == int64(len(huge)) &&
			s.Sources[1].Dropped[reasonOversized] == int64(len(huge))
	})
	time.Sleep(500 * time.Millisecond) // small messages after the last huge one
	close(stop)
	pubWG.Wait()
	n := int64(len(sent))
	testkit.WaitFor(t, time.Minute, "every small message durable in both sources", func() bool {
		s, ok := readStats(stats)
		return ok && s.Sources[0].Durable == n && s.Sources[1].Durable == n && s.Pending == 0
	})
	hwm := vmHWM(t, c.cmd.Process.Pid)
	s, _ := readStats(stats)
	c.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := c.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, c.stderr)
	}

	const bound = 64<<20 + 8*spool.DefaultMaxPayloadBytes
	t.Logf("receiver peak RSS (VmHWM) %.1f MiB after %d huge publishes (bound %.1f MiB); %d small messages", float64(hwm)/(1<<20), len(huge), float64(bound)/(1<<20), n)
	if hwm > bound {
		t.Errorf("receiver peak RSS %d bytes, over 64 MiB + 8 x maxPayloadBytes (%d)", hwm, bound)
	}
	for _, st := range s.SourceStatuses {
		if st.DisconnectCount != 0 || st.ConnectCount != 1 {
			t.Errorf("source %s: %d connects, %d disconnects (%s)", st.Name, st.ConnectCount, st.DisconnectCount, st.LastError)
		}
	}
	for _, sc := range s.Sources {
		if len(nonZero(sc.Dropped)) != 1 {
			t.Errorf("source %s dropped %v; want only %d oversized", sc.Name, sc.Dropped, len(huge))
		}
	}
	var huge1 int64
	for _, h := range huge {
		if h.qos == 1 {
			huge1++
		}
	}
	if s.Sources[1].Acked != n+huge1 {
		t.Errorf("q1 acked %d, want %d (small + huge at QoS 1)", s.Sources[1].Acked, n+huge1)
	}
	per := map[string]map[string]int{}
	for _, rec := range readSpool(t, spoolDir) {
		if per[rec.Source] == nil {
			per[rec.Source] = map[string]int{}
		}
		if !bytes.HasPrefix(rec.Payload, []byte("small-")) {
			t.Fatalf("source %s stored a %d-byte record on %s", rec.Source, len(rec.Payload), rec.Topic)
		}
		per[rec.Source][string(rec.Payload)]++
	}
	for _, src := range []string{"q0", "q1"} {
		for _, p := range sent {
			if per[src][p] == 0 {
				t.Fatalf("source %s lost %s", src, p)
			}
		}
	}
}
