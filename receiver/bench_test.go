package receiver

// Benchmarks of the broker → durable spool path, against mosquitto_sub
// writing to a file in the same run:
//
//	go test -run '^$' -bench 'Backlog|Steady' -benchtime 50000x ./receiver/
//
// Backlog benchmarks preload the broker with b.N QoS 1 messages for a
// persistent session, then time how long the subscriber takes to have them
// all: for the receiver, fsynced in the spool and acknowledged; for
// mosquitto_sub, written to a file (no fsync) and acknowledged.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// benchPayload is the first packet message of the demo capture: real
// traffic, a few hundred bytes.
func benchPayload(b *testing.B) (string, []byte) {
	b.Helper()
	r := capture.Demo()
	for {
		m, err := r.Next()
		if err != nil {
			b.Fatalf("no packet message in the demo capture: %v", err)
		}
		if strings.HasSuffix(m.Topic, "/packets") {
			return m.Topic, m.Payload
		}
	}
}

// preload publishes n QoS 1 messages and returns once the broker has
// acknowledged them all.
func preload(b *testing.B, url, topic string, payload []byte, n int) {
	b.Helper()
	pub := publisher(b, url)
	toks := make([]mqtt.Token, 0, 1000)
	for i := 0; i < n; i++ {
		toks = append(toks, pub.Publish(topic, 1, false, payload))
		if len(toks) == cap(toks) || i == n-1 {
			for _, tok := range toks {
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					b.Fatalf("preload: %v", tok.Error())
				}
			}
			toks = toks[:0]
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// subscribeOnce creates the persistent session, so the broker queues the
// backlog for it.
func subscribeOnce(b *testing.B, url, clientID string) {
	b.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	if tok := c.Subscribe("meshcore/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	c.Disconnect(100)
}

func BenchmarkBacklog_QoS1(b *testing.B) {
	for _, inflight := range []int{0, 20} {
		name := "inflightUnlimited"
		if inflight > 0 {
			name = fmt.Sprintf("inflight%d", inflight)
		}
		b.Run(name+"/receiver", func(b *testing.B) { benchReceiverBacklog(b, inflight) })
		b.Run(name+"/mosquitto_sub", func(b *testing.B) { benchMosquittoSubBacklog(b, inflight) })
	}
}

func benchReceiverBacklog(b *testing.B, inflight int) {
	broker := testkit.StartMosquitto(b, testkit.MosquittoOptions{MaxInflight: inflight})
	topic, payload := benchPayload(b)
	subscribeOnce(b, broker.URL(), "bench-receiver")
	preload(b, broker.URL(), topic, payload, b.N)

	dir := b.TempDir()
	app, err := spool.OpenAppender(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r, err := New(Options{
		Sources:   []shared.Source{{Name: "bench", Broker: broker.MQTTURL(), QoS: 1, ClientID: "bench-receiver"}},
		Spool:     app,
		StatsFile: filepath.Join(dir, "stats.json"),
		Log:       zerolog.New(io.Discard),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	before := app.Stats()
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	go func() { done <- r.Run(ctx) }()
	for {
		if st := r.status("bench"); st != nil && st.acked.Load() >= int64(b.N) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	after := app.Stats()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(after.Fsyncs-before.Fsyncs)/float64(b.N), "fsyncs/msg")
}

func benchMosquittoSubBacklog(b *testing.B, inflight int) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		b.Skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
	}
	broker := testkit.StartMosquitto(b, testkit.MosquittoOptions{MaxInflight: inflight})
	topic, payload := benchPayload(b)
	subscribeOnce(b, broker.URL(), "bench-sub")
	preload(b, broker.URL(), topic, payload, b.N)

	out, err := os.Create(filepath.Join(b.TempDir(), "sub.out"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-h", "127.0.0.1", "-p", fmt.Sprint(broker.Port), "-q", "1", "-c", "-i", "bench-sub", "-t", "meshcore/#")
	cmd.Stdout = out
	b.ResetTimer()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	want := int64(b.N) * int64(len(payload)+1)
	for {
		if fi, err := out.Stat(); err == nil && fi.Size() >= want {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	lines := countLines(b, out.Name())
	if lines < b.N {
		b.Fatalf("mosquitto_sub wrote %d lines, want %d", lines, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
}

func countLines(b *testing.B, path string) int {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
	}
	return n
}

// BenchmarkSteady250 publishes 250 msg/s (each iteration is one second of
// traffic) and reports the spool's fsyncs per second with the default
// group window: QoS 0 is what observers publish; QoS 1 groups close after
// the short ack window instead.
//
//	go test -run '^$' -bench Steady250 -benchtime 20x ./receiver/
func BenchmarkSteady250(b *testing.B) {
	for _, qos := range []int{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			broker := testkit.StartMosquitto(b, testkit.MosquittoOptions{})
			topic, payload := benchPayload(b)
			dir := b.TempDir()
			app, err := spool.OpenAppender(filepath.Join(dir, "spool"), spool.Options{})
			if err != nil {
				b.Fatal(err)
			}
			_, stop := runBenchReceiver(b, shared.Source{Name: "bench", Broker: broker.MQTTURL(), QoS: qos, ClientID: "bench-steady"}, app, dir)
			// The publisher is a separate process, so the CPU measured
			// here is the receiver's (and the spool's) alone.
			pubBin, err := exec.LookPath("mosquitto_pub")
			if err != nil {
				b.Skip("mosquitto_pub not installed (apt-get install mosquitto-clients)")
			}
			pub := exec.Command(pubBin, "-h", "127.0.0.1", "-p", fmt.Sprint(broker.Port), "-q", fmt.Sprint(qos), "-t", topic, "-l")
			stdin, err := pub.StdinPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := pub.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { stdin.Close(); pub.Wait() }()
			line := append(append([]byte(nil), payload...), '\n')
			time.Sleep(1500 * time.Millisecond) // let the start-up seal pass
			before := app.Stats()
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			tick := time.NewTicker(4 * time.Millisecond)
			for i := 0; i < b.N*250; i++ {
				<-tick.C
				if _, err := stdin.Write(line); err != nil {
					b.Fatal(err)
				}
			}
			tick.Stop()
			elapsed := time.Since(start)
			cpu := cpuTime() - cpu0
			b.StopTimer()
			after := app.Stats()
			stop()
			b.ReportMetric(float64(after.Fsyncs-before.Fsyncs)/elapsed.Seconds(), "fsyncs/s")
			b.ReportMetric(float64(after.Groups-before.Groups)/elapsed.Seconds(), "groups/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*250), "cpu-ns/msg")
			b.ReportMetric(float64(after.AppendedRecords-before.AppendedRecords)/elapsed.Seconds(), "msg/s")
		})
	}
}

func (r *Receiver) status(name string) *sourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statuses[name]
}

// BenchmarkBurst_QoS0 publishes b.N QoS 0 messages as fast as
// mosquitto_pub (a separate process) can, and reports how many the
// receiver spooled, dropped (every reason) and never saw, and how often an
// append waited for room in the spool's queue (spool.queueFullWaitMs):
//
//	go test -run '^$' -bench Burst_QoS0 -benchtime 1000000x -timeout 30m ./receiver/
//
// The case is a machine with two CPU-bound neighbours (start two
// `sh -c 'while :; do :; done' &` beside it); the load average is logged.
// MESHINGEST_BENCH_QUEUE_BYTES shrinks the queue (default 32 MiB) so that
// it fills on a fast disk too; MESHINGEST_BENCH_QUEUE_WAIT_MS=-1 turns the
// wait off (the old behaviour) for comparison.
func BenchmarkBurst_QoS0(b *testing.B) {
	pubBin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		b.Skip("mosquitto_pub not installed (apt-get install mosquitto-clients)")
	}
	broker := testkit.StartMosquitto(b, testkit.MosquittoOptions{})
	topic, payload := benchPayload(b)
	dir := b.TempDir()
	opts := spool.Options{QueueMaxBytes: int64(getenvInt("MESHINGEST_BENCH_QUEUE_BYTES"))}
	if ms := getenvInt("MESHINGEST_BENCH_QUEUE_WAIT_MS"); ms != 0 {
		opts.QueueFullWait = time.Duration(ms) * time.Millisecond
	}
	app, err := spool.OpenAppender(filepath.Join(dir, "spool"), opts)
	if err != nil {
		b.Fatal(err)
	}
	r, stop := runBenchReceiver(b, shared.Source{Name: "bench", Broker: broker.MQTTURL(), QoS: 0, ClientID: "bench-burst"}, app, dir)
	lines := filepath.Join(dir, "burst.txt")
	f, err := os.Create(lines)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 0; i < b.N; i++ {
		w.Write(payload)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	in, err := os.Open(lines)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	pub := exec.Command(pubBin, "-h", "127.0.0.1", "-p", fmt.Sprint(broker.Port), "-q", "0", "-t", topic, "-l")
	pub.Stdin = in

	st := r.status("bench")
	before := app.Stats()
	b.ResetTimer()
	start := time.Now()
	if err := pub.Run(); err != nil {
		b.Fatalf("mosquitto_pub: %v", err)
	}
	published := time.Since(start)
	// Done when every message received is settled (durable or dropped)
	// and nothing new arrived for 3 s.
	last, since := int64(-1), time.Now()
	for time.Since(since) < 3*time.Second {
		got := st.packetsTotal.Load()
		if got != last || st.durable.Load()+dropsOf(st) < got {
			last, since = got, time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := since.Sub(start)
	b.StopTimer()
	after := app.Stats()
	stop()
	received := st.packetsTotal.Load()
	b.ReportMetric(float64(b.N)/published.Seconds(), "published-msg/s")
	b.ReportMetric(float64(st.durable.Load())/elapsed.Seconds(), "spooled-msg/s")
	b.ReportMetric(float64(int64(b.N)-received), "never-received")
	b.ReportMetric(float64(dropsOf(st)), "dropped")
	b.ReportMetric(float64(after.QueueFullWaits-before.QueueFullWaits), "queue-full-waits")
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("load average %s", strings.Fields(string(load))[0])
	b.Logf("%d published in %s, %d received, %d durable, drops %v, %d disconnects, %d waits for room, %d refused queue_full",
		b.N, published.Round(time.Millisecond), received, st.durable.Load(), dropMap(st), st.disconnectCount.Load(),
		after.QueueFullWaits-before.QueueFullWaits, after.RefusedQueueFull-before.RefusedQueueFull)
}

// dropsOf is every message the source dropped, whatever the reason.
func dropsOf(st *sourceStatus) int64 {
	var n int64
	for _, v := range dropMap(st) {
		n += v
	}
	return n
}

func dropMap(st *sourceStatus) map[string]int64 {
	_, _, c := st.snapshot(time.Now())
	return nonZero(c.Dropped)
}

// benchLog is the receiver's log for a benchmark: discarded, or into the
// file MESHINGEST_BENCH_LOG names.
func benchLog(b *testing.B) zerolog.Logger {
	path := os.Getenv("MESHINGEST_BENCH_LOG")
	if path == "" {
		return zerolog.New(io.Discard)
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return zerolog.New(f).With().Timestamp().Logger()
}

// runBenchReceiver runs a receiver of src into app until it is connected;
// stop ends it. Its log is benchLog's.
func runBenchReceiver(b *testing.B, src shared.Source, app *spool.Appender, dir string) (r *Receiver, stop func()) {
	r, err := New(Options{
		Sources:   []shared.Source{src},
		Spool:     app,
		StatsFile: filepath.Join(dir, "stats.json"),
		Log:       benchLog(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for {
		if st := r.status(src.Name); st != nil && st.connected.Load() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r, func() {
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
