package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/internal/testkit"
)

// subscriber records every message a real broker delivers, by topic and
// exact payload bytes.
type subscriber struct {
	mu    sync.Mutex
	got   map[string]int // topic + "\x00" + payload → count
	n     int
	bytes int64
	at    []time.Time
}

func subscribe(t *testing.T, b *testkit.Mosquitto, qos byte) *subscriber {
	t.Helper()
	s := &subscriber{got: map[string]int{}}
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano())).
		SetAutoReconnect(false).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.got[m.Topic()+"\x00"+string(m.Payload())]++
			s.n++
			s.bytes += int64(len(m.Payload()))
			s.at = append(s.at, time.Now())
		})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	if tok := c.Subscribe("#", qos, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return s
}

// waitFor waits until the subscriber has n messages, then a little longer
// to catch any extra one.
func (s *subscriber) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		got := s.n
		s.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber got %d of %d messages", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n != n {
		t.Fatalf("subscriber got %d messages, want exactly %d", s.n, n)
	}
}

// demoMessages is the embedded real capture as the broker must deliver it.
func demoMessages(t *testing.T) (want map[string]int, n int, bytes int64) {
	t.Helper()
	want = map[string]int{}
	r := capture.Demo()
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return want, n, bytes
		}
		if err != nil {
			t.Fatal(err)
		}
		want[m.Topic+"\x00"+string(m.Payload)]++
		n++
		bytes += int64(len(m.Payload))
	}
}

func TestRun_DemoCapture_EveryMessageExactBytes(t *testing.T) {
	want, n, wantBytes := demoMessages(t)
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
			sub := subscribe(t, b, qos)
			var progress []Stats
			st, err := Run(context.Background(), BytesSource(capture.DemoBytes()), Options{
				Broker: b.MQTTURL(), QoS: qos, Passes: 1,
				Progress: func(s Stats) { progress = append(progress, s) },
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if st.Published != int64(n) || st.PayloadBytes != wantBytes {
				t.Fatalf("Stats = %+v, want %d messages, %d payload bytes", st, n, wantBytes)
			}
			if len(progress) == 0 || !progress[len(progress)-1].Done || progress[len(progress)-1].Published != int64(n) {
				t.Fatalf("last progress report = %+v, want a final report of %d", progress, n)
			}
			sub.waitFor(t, n)
			if sub.bytes != wantBytes {
				t.Errorf("subscriber got %d payload bytes, want %d", sub.bytes, wantBytes)
			}
			for k, c := range want {
				if sub.got[k] != c {
					topic, _, _ := strings.Cut(k, "\x00")
					t.Fatalf("message on %s delivered %d times, want %d", topic, sub.got[k], c)
				}
			}
		})
	}
}

func TestRun_Passes_PlaysTheCaptureNTimes(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sub := subscribe(t, b, 1)
	_, n, _ := demoMessages(t)
	st, err := Run(context.Background(), BytesSource(capture.DemoBytes()), Options{Broker: b.MQTTURL(), QoS: 1, Passes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != int64(3*n) || st.Pass != 3 {
		t.Fatalf("Stats = %+v, want %d published over 3 passes", st, 3*n)
	}
	sub.waitFor(t, 3*n)
}

func TestRun_PassesZero_LoopsUntilCancelled(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	_, n, _ := demoMessages(t)
	st, err := Run(ctx, BytesSource(capture.DemoBytes()), Options{
		Broker: b.MQTTURL(), QoS: 1, Passes: 0,
		Progress: func(s Stats) {
			if s.Published > int64(2*n) {
				cancel()
			}
		},
		ProgressEvery: time.Millisecond,
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if st.Published <= int64(2*n) || st.Pass < 3 {
		t.Fatalf("Stats = %+v, want more than two passes before the cancel", st)
	}
}

func TestRun_Rate_SpacesMessages(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sub := subscribe(t, b, 0)
	// 100 messages at 200/s: about half a second; without the cap, a few ms.
	data := syntheticCapture(100, time.Time{}, 0)
	start := time.Now()
	if _, err := Run(context.Background(), BytesSource(data), Options{Broker: b.MQTTURL(), Rate: 200, Passes: 1}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 450*time.Millisecond || took > 5*time.Second {
		t.Fatalf("100 messages at 200/s took %s, want about 500ms", took)
	}
	sub.waitFor(t, 100)
}

func TestRun_Speed_KeepsTheCaptureTimelineScaled(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sub := subscribe(t, b, 1)
	// Five messages one capture-second apart, played 4× faster: 1 s in
	// all, 250 ms between messages. A 10-minute hole is cut to MaxGap.
	base := time.Date(2026, 3, 29, 15, 0, 0, 0, time.UTC)
	data := syntheticCapture(5, base, time.Second)
	lines := strings.SplitAfter(string(data), "\n")
	hole := syntheticCapture(1, base.Add(14*time.Minute), 0)
	data = []byte(strings.Join(lines, "") + string(hole))

	start := time.Now()
	if _, err := Run(context.Background(), BytesSource(data), Options{
		Broker: b.MQTTURL(), QoS: 1, Speed: 4, MaxGap: 2 * time.Second, Passes: 1,
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// 4 s of capture gaps + the hole cut to 2 s = 6 s of capture time / 4.
	if took < 1400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("replay took %s, want about 1.5 s", took)
	}
	sub.waitFor(t, 6)
	// Offsets from the first arrival, not gaps between neighbours: one
	// message delayed in delivery would make two gaps wrong.
	for i := 1; i < 5; i++ {
		want := time.Duration(i) * 250 * time.Millisecond
		if off := sub.at[i].Sub(sub.at[0]); off < want-150*time.Millisecond || off > want+600*time.Millisecond {
			t.Errorf("message %d arrived %s after the first, want about %s", i, off, want)
		}
	}
}

func TestRun_BadLine_StopsWithTheLineNumber(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	data := string(syntheticCapture(2, time.Time{}, 0)) + "{not json\n" + string(syntheticCapture(1, time.Time{}, 0))
	path := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Validate(FileSource(path))
	if !errors.Is(err, capture.ErrBadLine) || !strings.Contains(err.Error(), "line 3") || n != 2 {
		t.Fatalf("Validate = %d, %v; want 2 good lines then a bad-line error naming line 3", n, err)
	}
	st, err := Run(context.Background(), FileSource(path), Options{Broker: b.MQTTURL(), QoS: 1, Passes: 1})
	if !errors.Is(err, capture.ErrBadLine) || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "2 messages were published") {
		t.Fatalf("Run = %v, want an error naming line 3 and the 2 published", err)
	}
	if st.Published != 2 {
		t.Fatalf("published %d before the bad line, want 2", st.Published)
	}
}

func TestRun_BrokerDown_SaysSo(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	url := b.MQTTURL()
	b.Stop()
	_, err := Run(context.Background(), BytesSource(capture.DemoBytes()), Options{Broker: url, Passes: 1})
	if err == nil || !strings.Contains(err.Error(), url) {
		t.Fatalf("Run against a stopped broker = %v, want a connect error naming %s", err, url)
	}
}

func TestRun_Credentials_FromURLAndOptions(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{Username: "obs", Password: "pw"})
	data := syntheticCapture(3, time.Time{}, 0)
	withUser := strings.Replace(b.MQTTURL(), "mqtt://", "mqtt://obs:pw@", 1)
	if _, err := Run(context.Background(), BytesSource(data), Options{Broker: withUser, Passes: 1}); err != nil {
		t.Fatalf("credentials in the URL: %v", err)
	}
	if _, err := Run(context.Background(), BytesSource(data), Options{Broker: b.MQTTURL(), Username: "obs", Password: "pw", Passes: 1}); err != nil {
		t.Fatalf("credentials in options: %v", err)
	}
	_, err := Run(context.Background(), BytesSource(data), Options{Broker: strings.Replace(b.MQTTURL(), "mqtt://", "mqtt://obs:wrong@", 1), Passes: 1})
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong password = %v, want a refusal that does not print the password", err)
	}
}

func TestFileSource_StdinPlaysOnce(t *testing.T) {
	src := FileSource("-")
	if _, err := src(); err != nil {
		t.Fatal(err)
	}
	if _, err := src(); !errors.Is(err, ErrStdinOnce) {
		t.Fatalf("second open of stdin = %v, want ErrStdinOnce", err)
	}
}

// syntheticCapture returns n capture lines on distinct topics; with a
// non-zero start they carry received_at start, start+step, ...
func syntheticCapture(n int, start time.Time, step time.Duration) []byte {
	var out []byte
	for i := range n {
		m := capture.Message{
			Topic:   fmt.Sprintf("meshcore/TST/obs%d/packets", i),
			Payload: []byte(fmt.Sprintf(`{"raw":"%04X","n":%d}`, i, i)),
		}
		if !start.IsZero() {
			m.ReceivedAt = start.Add(time.Duration(i) * step)
		}
		out = capture.AppendLine(out, m)
	}
	return out
}
