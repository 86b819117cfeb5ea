package broker

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"
)

func startBroker(t *testing.T, opts Options) *Broker {
	t.Helper()
	opts.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	b, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// connect returns a connected paho client; it fails the test when the
// broker refuses it.
func connect(t *testing.T, b *Broker, id string, opts ...func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	c, err := tryConnect(b, id, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func tryConnect(b *Broker, id string, opts ...func(*paho.ClientOptions)) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID(id).
		SetAutoReconnect(false).SetConnectTimeout(30 * time.Second).
		// A loaded machine can hold a ping response past paho's 10 s.
		SetKeepAlive(2 * time.Minute).SetPingTimeout(time.Minute).
		// 3.1.1 only: paho otherwise retries a refused connection as 3.1.
		SetProtocolVersion(4)
	for _, f := range opts {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(40 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	return c, tok.Error()
}

func withCredentials(user, pass string) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) { o.SetUsername(user).SetPassword(pass) }
}

// collector gathers the payloads a subscriber receives.
type collector struct {
	mu   sync.Mutex
	got  map[string]int
	n    int
	want int
	done chan struct{}
}

func newCollector(want int) *collector {
	return &collector{got: map[string]int{}, want: want, done: make(chan struct{})}
}

func (c *collector) handle(_ paho.Client, m paho.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[string(m.Payload())]++
	c.n++
	if c.n == c.want {
		close(c.done)
	}
}

func (c *collector) wait(t *testing.T, timeout time.Duration, b ...*Broker) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.mu.Lock()
		defer c.mu.Unlock()
		var stats any
		if len(b) > 0 {
			stats = b[0].Stats()
		}
		missing := []string{}
		for i := range c.want {
			if k := fmt.Sprintf("m%05d", i); c.got[k] == 0 && len(missing) < 5 {
				missing = append(missing, k)
			}
		}
		t.Fatalf("received %d of %d messages within %s (broker %+v); missing e.g. %v", c.n, c.want, timeout, stats, missing)
	}
}

func TestBroker_Start_DefaultsToLoopbackFreePort(t *testing.T) {
	b := startBroker(t, Options{})
	if !b.Addr().IP.IsLoopback() || b.Addr().Port == 0 {
		t.Fatalf("Addr = %v, want 127.0.0.1 on a kernel-chosen port", b.Addr())
	}
	if want := fmt.Sprintf("mqtt://127.0.0.1:%d", b.Addr().Port); b.URL() != want {
		t.Fatalf("URL = %q, want %q", b.URL(), want)
	}
	other := startBroker(t, Options{})
	if other.Addr().Port == b.Addr().Port {
		t.Fatalf("two brokers on the same port %d", b.Addr().Port)
	}
}

func TestBroker_Start_WildcardListenURLIsLoopback(t *testing.T) {
	b := startBroker(t, Options{Listen: "0.0.0.0:0", Username: "u", Password: "p"})
	if want := fmt.Sprintf("mqtt://127.0.0.1:%d", b.Addr().Port); b.URL() != want {
		t.Fatalf("URL = %q, want %q", b.URL(), want)
	}
	connect(t, b, "c1", withCredentials("u", "p"))
}

func TestBroker_PublishSubscribe_ExactBytesAtQoS0And1(t *testing.T) {
	b := startBroker(t, Options{})
	payloads := [][]byte{
		[]byte(`{"origin":"obs","raw":"11A0"}`),
		{0x00, 0xff, 0x10, 0x80}, // not UTF-8: the broker must not touch bytes
		{},
		[]byte(strings.Repeat("x", 60_000)),
	}
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			col := newCollector(len(payloads))
			sub := connect(t, b, fmt.Sprintf("sub%d", qos))
			topic := fmt.Sprintf("meshcore/SJC/q%d/packets", qos)
			if b.Subscribed(fmt.Sprintf("sub%d", qos), topic) {
				t.Fatal("Subscribed before the subscription")
			}
			if tok := sub.Subscribe("meshcore/#", qos, col.handle); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
			if !b.Subscribed(fmt.Sprintf("sub%d", qos), topic) || b.Subscribed(fmt.Sprintf("sub%d", qos), "other/topic") {
				t.Fatal("Subscribed does not reflect the meshcore/# subscription")
			}
			pub := connect(t, b, fmt.Sprintf("pub%d", qos))
			for _, p := range payloads {
				if tok := pub.Publish(topic, qos, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
			col.wait(t, 10*time.Second)
			for _, p := range payloads {
				if col.got[string(p)] != 1 {
					t.Errorf("payload of %d bytes received %d times, want once", len(p), col.got[string(p)])
				}
			}
		})
	}
	if s := b.Stats(); s.MessagesReceived != int64(2*len(payloads)) || s.MessagesDropped != 0 {
		t.Fatalf("Stats = %+v, want %d received and none dropped", s, 2*len(payloads))
	}
}

func TestBroker_Auth_RefusesWrongOrMissingCredentials(t *testing.T) {
	b := startBroker(t, Options{Username: "observer", Password: "s3cret"})
	if !b.RequiresAuth() {
		t.Fatal("RequiresAuth = false with credentials configured")
	}
	cases := []struct {
		name string
		opts []func(*paho.ClientOptions)
	}{
		{"none", nil},
		{"wrong password", []func(*paho.ClientOptions){withCredentials("observer", "s3cre")}},
		{"wrong user", []func(*paho.ClientOptions){withCredentials("observe", "s3cret")}},
		{"password as user", []func(*paho.ClientOptions){withCredentials("s3cret", "observer")}},
	}
	for i, tc := range cases {
		c, err := tryConnect(b, fmt.Sprintf("bad%d", i), tc.opts...)
		if err == nil {
			c.Disconnect(50)
			t.Errorf("%s: connected, want refusal", tc.name)
			continue
		}
		if !strings.Contains(strings.ToLower(err.Error()), "not authorized") && !strings.Contains(strings.ToLower(err.Error()), "bad user name or password") {
			t.Errorf("%s: error %q, want a not-authorized refusal", tc.name, err)
		}
	}
	if got := b.Stats().AuthRefused; got != int64(len(cases)) {
		t.Errorf("AuthRefused = %d, want %d", got, len(cases))
	}

	// The right credentials publish and subscribe.
	col := newCollector(1)
	sub := connect(t, b, "sub", withCredentials("observer", "s3cret"))
	sub.Subscribe("meshcore/#", 1, col.handle).Wait()
	pub := connect(t, b, "pub", withCredentials("observer", "s3cret"))
	pub.Publish("meshcore/OAK/x/status", 1, false, []byte("ok")).Wait()
	col.wait(t, 5*time.Second)
}

func TestBroker_Start_CredentialsMustComeTogether(t *testing.T) {
	for _, o := range []Options{{Username: "u"}, {Password: "p"}} {
		if _, err := Start(o); !errors.Is(err, ErrCredentials) {
			t.Errorf("Start(%+v) = %v, want ErrCredentials", o, err)
		}
	}
}

func TestBroker_Start_PortInUseNamesTheAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Start(Options{Listen: ln.Addr().String(), Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "broker.listen") {
		t.Fatalf("Start on a used port = %v, want an error naming the address and broker.listen", err)
	}
	if _, err := Start(Options{Listen: "1883", Log: zerolog.Nop()}); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("Start with a bare port = %v, want a host:port hint", err)
	}
}

// A QoS 1 receiver that is restarting must find its backlog held by the
// broker, beyond mochi's default in-flight store of 8,192 (measured.md,
// pitfall 4). mochi may redeliver out of order, so the check is on the set.
func TestBroker_PersistentSession_HoldsBacklogBeyondLibraryDefault(t *testing.T) {
	const n = 10_000
	b := startBroker(t, Options{})
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }

	first := connect(t, b, "receiver", persistent)
	if tok := first.Subscribe("meshcore/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	first.Disconnect(50)

	pub := connect(t, b, "observer")
	var last paho.Token
	for i := range n {
		last = pub.Publish("meshcore/SJC/obs/packets", 1, false, []byte(fmt.Sprintf("m%05d", i)))
	}
	if !last.WaitTimeout(60*time.Second) || last.Error() != nil {
		t.Fatalf("publish: %v (broker %+v)", last.Error(), b.Stats())
	}
	// mochi acknowledges a publish before routing it, and reconnecting while
	// the last one is routed would hit the library's take-over window (see
	// the package documentation), which is not what this test measures. It
	// handles one client's packets in order, so the acknowledgement of a
	// later publish proves the last one routed.
	if tok := pub.Publish("barrier", 1, false, []byte("x")); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("barrier publish: %v", tok.Error())
	}
	if held, ok := b.Unacknowledged("receiver"); !ok || held != n {
		t.Fatalf("Unacknowledged(receiver) = %d, %v; want %d held for the offline session", held, ok, n)
	}
	col := newCollector(n)
	connect(t, b, "receiver", persistent, func(o *paho.ClientOptions) {
		// Registered before Connect: the session delivers right after CONNACK.
		o.SetDefaultPublishHandler(col.handle)
	})
	col.wait(t, 60*time.Second, b)
	if len(col.got) != n {
		t.Fatalf("received %d distinct messages, want %d", len(col.got), n)
	}
	if s := b.Stats(); s.InflightDropped != 0 || s.MessagesDropped != 0 {
		t.Fatalf("broker dropped messages: %+v", s)
	}
}

func TestBroker_Close_StopsListeningAndIsIdempotent(t *testing.T) {
	b := startBroker(t, Options{})
	c := connect(t, b, "c")
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.IsConnectionOpen() {
		t.Error("client still connected after Close")
	}
	if conn, err := net.DialTimeout("tcp", b.Addr().String(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Close", b.Addr())
	}
}
