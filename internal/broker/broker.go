// Package broker is the MQTT broker built into meshingest, so that a small
// deployment needs no mosquitto: `meshingest run` and `meshingest demo`
// start it on 127.0.0.1 for their own receiver, and an operator can make it
// listen on a network address with a username and password for observers to
// publish to directly.
//
// It wraps github.com/mochi-mqtt/server/v2 with the settings meshingest
// needs: a per-client in-flight store large enough to hold a QoS 1 backlog
// while the receiver restarts, credentials compared in constant time, and
// the library's per-message log lines replaced by periodic counters.
//
// Sessions live in memory only. A receiver restarted while the broker runs
// gets its persistent session's backlog back; when the broker itself stops,
// whatever the receiver had not yet acknowledged is gone with it.
//
// A known limit of mochi-mqtt v2.7.9: when a persistent session is taken
// over (the receiver reconnects), a message being routed to that session at
// that very moment can be lost. The library copies the old session's
// in-flight messages to the new one and then clears the old one, without a
// lock against a publish in between. mosquitto does not have this window;
// use it where QoS 1 across receiver restarts must be airtight.
package broker

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
)

// DefaultListen is where the broker listens when no address is configured:
// loopback only, on a port the kernel chooses, for the receiver started by
// the same command.
const DefaultListen = "127.0.0.1:0"

// Options configures Start. The zero value is an anonymous broker on
// DefaultListen.
type Options struct {
	// Listen is the TCP address to accept MQTT connections on, e.g.
	// "0.0.0.0:1883". Empty means DefaultListen.
	Listen string
	// Username and Password, when set, are required of every client. Both
	// or neither: a username without a password would be an open door that
	// looks closed.
	Username, Password string
	// MaxInflight is how many unacknowledged QoS 1/2 messages the broker
	// holds per client, connected or not. mochi's default of 8,192 is
	// reached by a few minutes of observer traffic while a QoS 1 receiver
	// restarts; past it messages are dropped. Zero means 65,535, the
	// protocol's maximum (memory: roughly one payload per held message).
	MaxInflight uint16
	// MaxPendingWrites bounds the messages queued in memory for one
	// connected client that is reading slower than publishers write. Past
	// it, messages for that client are dropped and counted (Stats). Zero
	// means 32,768: a 50,000-message burst to a receiver that reads at
	// 20,000 msg/s fits, at the cost of up to tens of MiB held meanwhile.
	MaxPendingWrites int32
	// Log receives the broker's own log lines. Connection events are at
	// debug level; dropped messages are reported as counters every
	// LogInterval, never per message.
	Log zerolog.Logger
	// LogInterval is how often dropped-message counters are logged when
	// they grew. Zero means 10 s.
	LogInterval time.Duration
}

// FromConfig returns the options for the `broker` section of the
// configuration file.
func FromConfig(c shared.EmbeddedBroker, log zerolog.Logger) Options {
	return Options{Listen: c.Listen, Username: c.Username, Password: c.Password, Log: log}
}

// ErrCredentials is returned by Start when only one of username and
// password is set.
var ErrCredentials = errors.New("broker: username and password must be given together")

// Broker is a running embedded broker.
type Broker struct {
	srv    *mqtt.Server
	addr   *net.TCPAddr
	auth   bool
	log    zerolog.Logger
	done   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	// refused counts connections the credentials hook turned away.
	refused atomic.Int64
}

// Stats are the broker's counters since start.
type Stats struct {
	ClientsConnected int64
	MessagesReceived int64 // PUBLISH packets received from clients
	MessagesSent     int64
	// MessagesDropped counts messages not delivered to a subscriber whose
	// pending-write queue (MaxPendingWrites) was full.
	MessagesDropped int64
	// InflightDropped counts QoS 1/2 messages not stored for a subscriber
	// whose in-flight store (MaxInflight) was full.
	InflightDropped int64
	// Inflight is mochi's gauge of QoS 1/2 messages held unacknowledged for
	// all clients. It drifts (even below zero) after a session take-over;
	// Unacknowledged is exact for one client.
	Inflight int64
	// AuthRefused counts connections refused for bad credentials.
	AuthRefused int64
}

// Start binds the listener and starts serving. It returns once the address
// is bound, so a port in use fails here, with a hint, and not later.
func Start(opts Options) (*Broker, error) {
	if (opts.Username == "") != (opts.Password == "") {
		return nil, ErrCredentials
	}
	listen := opts.Listen
	if listen == "" {
		listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return nil, fmt.Errorf("broker: listen address %q: %v; give host:port, e.g. 0.0.0.0:1883", listen, err)
	}
	if opts.MaxInflight == 0 {
		opts.MaxInflight = 65535
	}
	if opts.MaxPendingWrites == 0 {
		opts.MaxPendingWrites = 32768
	}
	if opts.LogInterval == 0 {
		opts.LogInterval = 10 * time.Second
	}
	log := opts.Log.With().Str("part", "broker").Logger()

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = opts.MaxInflight
	caps.MaximumClientWritesPending = opts.MaxPendingWrites
	// mochi logs through slog; route it to zerolog, keeping only errors:
	// its warnings are per message (a full in-flight store logs once per
	// dropped message), which Stats and the periodic report replace.
	libLog := log.Level(max(zerolog.ErrorLevel, log.GetLevel()))
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(zerolog.NewSlogHandler(libLog)),
		InlineClient: false,
	})

	b := &Broker{srv: srv, auth: opts.Username != "", log: log, done: make(chan struct{})}
	hook := &credentialsHook{log: log, refused: &b.refused}
	if b.auth {
		hook.username, hook.password = []byte(opts.Username), []byte(opts.Password)
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add credentials hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "meshingest", Address: listen})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("broker: listen on %s: %w; is another broker (mosquitto?) using the port? choose another broker.listen", listen, err)
	}
	addr, err := net.ResolveTCPAddr("tcp", tcp.Address())
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("broker: bound address %q: %w", tcp.Address(), err)
	}
	b.addr = addr
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("broker: serve on %s: %w", addr, err)
	}
	b.wg.Add(1)
	go b.reportDrops(opts.LogInterval)

	ev := log.Info().Str("listen", addr.String()).Bool("auth", b.auth).Uint16("maxInflight", opts.MaxInflight)
	ev.Msg("embedded MQTT broker listening")
	if !b.auth && !addr.IP.IsLoopback() {
		log.Warn().Str("listen", addr.String()).Msg("embedded broker accepts anonymous clients on a non-loopback address; set broker.username and broker.password")
	}
	return b, nil
}

// Addr is the bound address (with the real port when DefaultListen was used).
func (b *Broker) Addr() *net.TCPAddr { return b.addr }

// URL is the address a local client connects to, in the configuration's
// form: mqtt://127.0.0.1:PORT. A wildcard listen address (0.0.0.0, ::) is
// reached through loopback.
func (b *Broker) URL() string {
	host := b.addr.IP.String()
	if b.addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "mqtt://" + net.JoinHostPort(host, strconv.Itoa(b.addr.Port))
}

// RequiresAuth reports whether clients must give the configured credentials.
func (b *Broker) RequiresAuth() bool { return b.auth }

// Subscribed reports whether the client with this id holds a subscription
// that matches topic: a publisher about to send to it can wait for this,
// since a message published before the subscription exists goes nowhere.
func (b *Broker) Subscribed(clientID, topic string) bool {
	subs := b.srv.Topics.Subscribers(topic)
	_, ok := subs.Subscriptions[clientID]
	return ok
}

// Unacknowledged is the number of QoS 1/2 messages the broker holds for
// the client with this id (connected or not) that it has not acknowledged;
// false when the broker has no session for it.
func (b *Broker) Unacknowledged(clientID string) (int, bool) {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok {
		return 0, false
	}
	return cl.State.Inflight.Len(), true
}

// Stats returns the counters since start.
func (b *Broker) Stats() Stats {
	i := b.srv.Info.Clone()
	return Stats{
		ClientsConnected: i.ClientsConnected,
		MessagesReceived: i.MessagesReceived,
		MessagesSent:     i.MessagesSent,
		MessagesDropped:  i.MessagesDropped,
		InflightDropped:  i.InflightDropped,
		Inflight:         i.Inflight,
		AuthRefused:      b.refused.Load(),
	}
}

// Close disconnects every client and stops listening. It is idempotent.
func (b *Broker) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	close(b.done)
	b.wg.Wait()
	return b.srv.Close()
}

// reportDrops logs dropped-message counters when they grew, at most once
// per interval: a slow or absent subscriber can make the broker drop
// thousands of messages a second, and the log must stay readable.
func (b *Broker) reportDrops(every time.Duration) {
	defer b.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var last Stats
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
		}
		s := b.Stats()
		if s.MessagesDropped > last.MessagesDropped || s.InflightDropped > last.InflightDropped {
			b.log.Warn().
				Int64("droppedSlowSubscriber", s.MessagesDropped-last.MessagesDropped).
				Int64("droppedInflightFull", s.InflightDropped-last.InflightDropped).
				Stringer("over", every).
				Msg("embedded broker dropped messages for a subscriber that could not keep up; check that the receiver is running and its spool is not full")
		}
		if s.AuthRefused > last.AuthRefused {
			b.log.Warn().Int64("refused", s.AuthRefused-last.AuthRefused).Stringer("over", every).
				Msg("embedded broker refused connections with wrong or missing credentials")
		}
		last = s
	}
}

// credentialsHook admits clients with the configured username and password
// (any client when none is configured) and lets an admitted client publish
// and subscribe to any topic.
type credentialsHook struct {
	mqtt.HookBase
	username, password []byte // nil: anonymous clients allowed
	log                zerolog.Logger
	refused            *atomic.Int64
}

func (h *credentialsHook) ID() string { return "meshingest-credentials" }

func (h *credentialsHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *credentialsHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.username == nil {
		return true
	}
	// Compare both, always, in constant time: neither the username nor the
	// password may be guessed byte by byte from response times.
	userOK := subtle.ConstantTimeCompare(pk.Connect.Username, h.username)
	passOK := subtle.ConstantTimeCompare(pk.Connect.Password, h.password)
	if userOK&passOK == 1 {
		return true
	}
	h.refused.Add(1)
	h.log.Debug().Str("client", cl.ID).Str("remote", cl.Net.Remote).Str("username", string(pk.Connect.Username)).
		Msg("refused MQTT connection: wrong username or password")
	return false
}

func (h *credentialsHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
