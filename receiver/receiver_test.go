package receiver

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

func demoMessages(t *testing.T) []capture.Message {
	t.Helper()
	var msgs []capture.Message
	r := capture.Demo()
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) != 531 {
		t.Fatalf("demo capture has %d messages, want 531", len(msgs))
	}
	return msgs
}

// The real capture, published to a real mosquitto, lands in the spool
// exactly: same count, topics and payload bytes, in order.
func TestReceiver_Corpus_LandsExactly(t *testing.T) {
	msgs := demoMessages(t)
	for _, qos := range []int{0, 1} {
		t.Run(map[int]string{0: "qos0", 1: "qos1"}[qos], func(t *testing.T) {
			b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
			sp := newSpool(t, spool.Options{})
			r := startReceiver(t, sp, shared.Source{Name: "local", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}, QoS: qos})
			testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })

			pub := publisher(t, b.URL())
			for _, m := range msgs {
				publish(t, pub, m.Topic, 1, false, m.Payload)
			}
			testkit.WaitFor(t, 10*time.Second, "531 durable", func() bool { _, c := r.source("local"); return c.Durable == 531 })
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			recs := sp.records(t)
			if len(recs) != len(msgs) {
				t.Fatalf("spool has %d records, want %d", len(recs), len(msgs))
			}
			for i, m := range msgs {
				rec := recs[i]
				if rec.Topic != m.Topic || !bytes.Equal(rec.Payload, m.Payload) {
					t.Fatalf("record %d: topic %q payload %q, want %q %q", i, rec.Topic, rec.Payload, m.Topic, m.Payload)
				}
				if rec.Source != "local" || rec.Broker != b.MQTTURL() || rec.Retained || rec.Duplicate || int(rec.QoS) != qos {
					t.Fatalf("record %d metadata: %+v", i, rec)
				}
				if rec.ReceivedAt.IsZero() || rec.ReceivedAt.Location() != time.UTC {
					t.Fatalf("record %d received at %v", i, rec.ReceivedAt)
				}
			}
			st, c := r.source("local")
			if st.PacketsTotal != 531 || st.PacketsLast5m != 531 || c.Appended != 531 {
				t.Fatalf("status %+v counters %+v", st, c)
			}
			if qos == 1 && c.Acked != 531 {
				t.Fatalf("acked %d, want 531", c.Acked)
			}
		})
	}
}
