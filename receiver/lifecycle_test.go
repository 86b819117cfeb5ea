package receiver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// The broker restarts in the middle of a QoS 1 stream: the receiver is back
// within 5 s of the broker's return, nothing is lost, and the counters add
// up.
func TestReceiver_BrokerRestart_ReconnectsWithin5s(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{Persistence: true})
	sp := newSpool(t, spool.Options{})
	r := startReceiver(t, sp, shared.Source{Name: "local", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}, QoS: 1, ClientID: "restart-test"})
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })

	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("restart-pub").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond)
	pub := mqtt.NewClient(o)
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	const n = 1500
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; i < n; i++ {
			for {
				tok := pub.Publish("meshcore/SJC/OBS/packets", 1, false, fmt.Sprintf("msg-%05d", i))
				if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "some traffic", func() bool { _, c := r.source("local"); return c.Durable > 200 })
	b.Stop()
	testkit.WaitFor(t, 5*time.Second, "disconnect noticed", func() bool { s, _ := r.source("local"); return !s.Connected })
	time.Sleep(4 * time.Second) // long enough for the backoff to reach its cap
	b.Restart(0)
	back := time.Now()
	testkit.WaitFor(t, 5*time.Second, "reconnected within 5s of the broker's return", func() bool {
		s, _ := r.source("local")
		return s.Connected && s.ConnectCount == 2
	})
	t.Logf("reconnected %s after the broker came back", time.Since(back).Round(time.Millisecond))
	<-published
	waitQuiet(t, r, "local")
	r.stop(t)
	seen := map[string]bool{}
	for _, rec := range sp.records(t) {
		seen[string(rec.Payload)] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages in the spool, want %d", len(seen), n)
	}
	s, c := r.source("local")
	if s.ConnectCount != 2 || s.DisconnectCount != 2 || s.LastError == "" {
		// two disconnects: the broker's stop, then our clean stop
		t.Errorf("status %+v", s)
	}
	recs := int64(len(sp.records(t)))
	// Acks sent just before the drop are lost; the broker redelivers
	// those messages, so a few records are stored twice and acked once.
	if s.PacketsTotal != c.Appended || c.Appended != c.Durable || c.Durable != recs || c.Acked > recs || c.Acked < n {
		t.Errorf("counters do not add up: packetsTotal %d appended %d durable %d acked %d records %d", s.PacketsTotal, c.Appended, c.Durable, c.Acked, recs)
	}
	if len(nonZero(c.Dropped))+len(nonZero(c.Held)) != 0 {
		t.Errorf("drops %v held %v", c.Dropped, c.Held)
	}
}

// SIGHUP's reload: an unchanged source stays connected, a changed one is
// restarted with its counters, a new one starts, a removed one goes.
func TestReceiver_Reload_KeepsUnchangedSources(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{})
	a := shared.Source{Name: "a", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}}
	bs := shared.Source{Name: "b", Broker: b.MQTTURL(), Topics: []string{"other/#"}}
	r := startReceiver(t, sp, a, bs)
	both := func() bool {
		sa, _ := r.source("a")
		sb, _ := r.source("b")
		return sa.Connected && sb.Connected
	}
	testkit.WaitFor(t, 5*time.Second, "both connected", both)
	pub := publisher(t, b.URL())
	publish(t, pub, "other/x", 1, false, []byte("1"))
	testkit.WaitFor(t, 5*time.Second, "b got one", func() bool { s, _ := r.source("b"); return s.PacketsTotal == 1 })

	if err := r.Reload([]shared.Source{{Name: "a", Broker: "ftp://nope"}}); err == nil {
		t.Fatal("an invalid reload was accepted")
	}
	b2 := bs
	b2.Topics = []string{"meshcore/#"}
	c := shared.Source{Name: "c", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}}
	if err := r.Reload([]shared.Source{a, b2, c}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "b and c connected", func() bool {
		sb, _ := r.source("b")
		sc, _ := r.source("c")
		return sb.Connected && sb.ConnectCount == 2 && sc.Connected
	})
	publish(t, pub, "meshcore/SJC/O/packets", 1, false, []byte("2"))
	testkit.WaitFor(t, 5*time.Second, "a, b and c got it", func() bool {
		sa, _ := r.source("a")
		sb, _ := r.source("b")
		sc, _ := r.source("c")
		return sa.PacketsTotal == 1 && sb.PacketsTotal == 2 && sc.PacketsTotal == 1
	})
	if sa, _ := r.source("a"); sa.ConnectCount != 1 || sa.DisconnectCount != 0 {
		t.Fatalf("unchanged source a was reconnected: %+v", sa)
	}
	if err := r.Reload([]shared.Source{a, c}); err != nil {
		t.Fatal(err)
	}
	snap := r.Snapshot(time.Now())
	var names []string
	for _, s := range snap.SourceStatuses {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "a,c" {
		t.Fatalf("sources after removing b: %v", names)
	}
	if sa, _ := r.source("a"); sa.ConnectCount != 1 || !sa.Connected {
		t.Fatalf("source a after the second reload: %+v", sa)
	}
}

// The stats file: fresh every second, 0600, the writer can read it, and it
// carries the CoreScope-shaped per-source status.
func TestReceiver_StatsFile_ReadableByWriter(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	r := startReceiver(t, newSpool(t, spool.Options{}), shared.Source{Name: "local", Broker: b.MQTTURL()})
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })
	publish(t, publisher(t, b.URL()), "meshcore/SJC/O/packets", 0, false, []byte("x"))
	var snap *shared.ReceiverSnapshot
	testkit.WaitFor(t, 3*time.Second, "a stats file showing the message", func() bool {
		s, err := shared.ReadReceiverSnapshot(r.stats, 2*time.Second, time.Now())
		if err != nil || len(s.SourceStatuses) != 1 || s.SourceStatuses[0].PacketsTotal != 1 {
			return false
		}
		snap = s
		return true
	})
	st := snap.SourceStatuses[0]
	if st.Name != "local" || !st.Connected || st.ConnectCount != 1 || st.PacketsLast5m != 1 || st.LastPacketUnix == 0 {
		t.Fatalf("status %+v", st)
	}
	if live := snap.SourceLiveness["local"]; live.LastReceiptUnix != st.LastPacketUnix {
		t.Fatalf("liveness %+v", live)
	}
	if snap.PID != os.Getpid() {
		t.Fatalf("pid %d", snap.PID)
	}
	fi, err := os.Stat(r.stats)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	raw, _ := os.ReadFile(r.stats)
	for _, key := range []string{`"sources"`, `"appended"`, `"durable"`, `"spool"`, `"dropped"`, `"held"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("stats file lacks %s", key)
		}
	}
}

// sd_notify: READY=1 once every source has tried to connect (one of them
// cannot), STATUS= one line, WATCHDOG=1 while appends progress.
func TestReceiver_Notify_ReadyStatusWatchdog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "400000")
	t.Setenv("WATCHDOG_PID", "")

	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	messages := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	logs := &syncBuffer{}
	_ = logs
	r := startReceiverNotify(t, newSpool(t, spool.Options{}), shared.NewNotifier(),
		shared.Source{Name: "local", Broker: b.MQTTURL()},
		shared.Source{Name: "down", Broker: "mqtt://127.0.0.1:1"})
	testkit.WaitFor(t, 5*time.Second, "READY, STATUS and two WATCHDOGs", func() bool {
		var ready, status, dogs int
		for _, m := range messages() {
			switch {
			case strings.HasPrefix(m, "READY=1\nSTATUS="):
				ready++
			case strings.HasPrefix(m, "STATUS="):
				status++
			case m == "WATCHDOG=1":
				dogs++
			}
		}
		return ready == 1 && status >= 1 && dogs >= 2
	})
	r.stop(t)
	for _, m := range messages() {
		if strings.HasPrefix(m, "STATUS=") && strings.Contains(strings.TrimPrefix(m, "STATUS="), "\n") {
			t.Errorf("status is not one line: %q", m)
		}
	}
	testkit.WaitFor(t, 2*time.Second, "STOPPING=1", func() bool { return contains(messages(), "STOPPING=1") })
	t.Log(messages())
}

// notifySocket listens where sd_notify sends, and records what arrives.
type notifySocket struct {
	mu  sync.Mutex
	got []notice
}

type notice struct {
	at  time.Time
	msg string
}

func listenNotify(t *testing.T, watchdogUsec string) *notifySocket {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", watchdogUsec)
	t.Setenv("WATCHDOG_PID", "")
	ns := &notifySocket{}
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.got = append(ns.got, notice{time.Now(), string(buf[:n])})
			ns.mu.Unlock()
		}
	}()
	return ns
}

func (ns *notifySocket) watchdogs(from, to time.Time) int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := 0
	for _, m := range ns.got {
		if m.msg == "WATCHDOG=1" && !m.at.Before(from) && m.at.Before(to) {
			n++
		}
	}
	return n
}

// WATCHDOG=1 stops while the spool settles nothing with records waiting,
// and comes back when it recovers.
func TestReceiver_Watchdog_StopsWhileSpoolStuck(t *testing.T) {
	ns := listenNotify(t, "200000") // pet every 100 ms
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{GroupWindow: 50 * time.Millisecond})
	r := startReceiverWith(t, Options{
		Sources:    []shared.Source{{Name: "local", Broker: b.MQTTURL()}},
		Spool:      sp,
		Notifier:   shared.NewNotifier(),
		StuckAfter: 300 * time.Millisecond,
	})
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })
	sp.stallNextSync(2 * time.Second)
	stallFrom := time.Now()
	publish(t, publisher(t, b.URL()), "meshcore/SJC/O/packets", 0, false, []byte("x"))
	testkit.WaitFor(t, 5*time.Second, "the stalled record durable", func() bool { _, c := r.source("local"); return c.Durable == 1 })
	recovered := time.Now()
	time.Sleep(500 * time.Millisecond)
	// Petting goes on for StuckAfter (and a group window), then stops
	// until the fsync returns.
	quiet := ns.watchdogs(stallFrom.Add(600*time.Millisecond), recovered.Add(-100*time.Millisecond))
	if quiet != 0 {
		t.Errorf("%d WATCHDOG=1 while the spool was stuck", quiet)
	}
	if n := ns.watchdogs(recovered, time.Now()); n < 2 {
		t.Errorf("only %d WATCHDOG=1 after the spool recovered", n)
	}
	if !strings.Contains(r.logs.String(), "no longer petting the systemd watchdog") {
		t.Error("no log line when the watchdog stopped being petted")
	}
}

// The Prometheus metrics show the same counters as the stats file.
func TestReceiver_Metrics_Served(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	reg := shared.NewRegistry()
	r := startReceiverWith(t, Options{
		Sources:  []shared.Source{{Name: "local", Broker: b.MQTTURL(), QoS: 1}},
		Spool:    newSpool(t, spool.Options{}),
		Registry: reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := shared.ServeMetrics(ctx, "127.0.0.1:0", reg, r.Health(), r.log)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })
	pub := publisher(t, b.URL())
	for i := 0; i < 3; i++ {
		publish(t, pub, "meshcore/SJC/O/packets", 1, false, []byte("x"))
	}
	testkit.WaitFor(t, 5*time.Second, "3 acked", func() bool { _, c := r.source("local"); return c.Acked == 3 })
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`meshingest_receiver_messages_total{source="local"} 3`,
		`meshingest_receiver_durable_messages_total{source="local"} 3`,
		`meshingest_receiver_acked_messages_total{source="local"} 3`,
		`meshingest_receiver_source_connected{source="local"} 1`,
		`meshingest_receiver_source_connects_total{source="local"} 1`,
		`meshingest_receiver_pending_records 0`,
		`meshingest_receiver_ready 1`,
		`meshingest_receiver_healthy 1`,
		`meshingest_receiver_spool_depth_records `,
		`meshingest_receiver_spool_disk_free_bytes `,
		`meshingest_receiver_spool_fsync_p99_seconds `,
		`meshingest_build_info{commit=`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, reason := range DropReasons() {
		if want := `meshingest_receiver_dropped_messages_total{reason="` + reason + `",source="local"} 0`; !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, reason := range HeldReasons() {
		if want := `meshingest_receiver_held_messages_total{reason="` + reason + `",source="local"} 0`; !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Nothing drains this spool: its depth holds the three records, and
	// the oldest one's age grows (the appender scans once a second).
	age := regexp.MustCompile(`(?m)^meshingest_receiver_spool_oldest_record_age_seconds (\S+)`)
	depth := regexp.MustCompile(`(?m)^meshingest_receiver_spool_depth_records (\d+)`)
	testkit.WaitFor(t, 10*time.Second, "the depth and the oldest record's age", func() bool {
		resp, err := http.Get("http://" + addr.String() + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a, d := age.FindSubmatch(b), depth.FindSubmatch(b)
		return a != nil && d != nil && string(a[1]) != "0" && string(d[1]) == "3"
	})
	if fsyncs := regexp.MustCompile(`(?m)^meshingest_receiver_spool_fsyncs_total (\d+)`).FindStringSubmatch(string(body)); fsyncs == nil || fsyncs[1] == "0" {
		t.Errorf("fsyncs_total %v after 3 durable messages", fsyncs)
	}
}

// A disk that stalls at shutdown does not keep the process: Run returns
// within 5 s, with an error saying what was not committed.
func TestReceiver_Shutdown_StalledDiskWithin5s(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{})
	r := startReceiver(t, sp, shared.Source{Name: "local", Broker: b.MQTTURL(), QoS: 1})
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("local"); return s.Connected })
	sp.stallNextSync(6 * time.Second)
	publish(t, publisher(t, b.URL()), "meshcore/SJC/O/packets", 1, false, []byte("x"))
	testkit.WaitFor(t, 2*time.Second, "appended", func() bool { _, c := r.source("local"); return c.Appended == 1 })
	time.Sleep(100 * time.Millisecond) // the group is in its fsync now
	start := time.Now()
	err := r.stop(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	if err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("err = %v, want the spool close timeout", err)
	}
	if _, c := r.source("local"); c.Acked != 0 {
		t.Fatal("a message was acknowledged before it was on disk")
	}
}
