package receiver

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/shared"
)

// pahoSchemes maps the URL schemes CoreScope's config accepts to the ones
// paho dials: plain TCP, TLS, and MQTT over WebSocket (with or without TLS).
var pahoSchemes = map[string]string{
	"mqtt":  "tcp",
	"tcp":   "tcp",
	"mqtts": "ssl",
	"ssl":   "ssl",
	"tls":   "ssl",
	"ws":    "ws",
	"wss":   "wss",
}

// defaultPorts are used when the URL names none, as mosquitto listens by
// default. WebSocket URLs keep paho's HTTP default.
var defaultPorts = map[string]string{"tcp": "1883", "ssl": "8883"}

// brokerEndpoint is a source's broker URL split into what paho needs: the
// URL it dials (no credentials in it) and the credentials, which come from
// the URL's userinfo unless the source sets username/password explicitly.
type brokerEndpoint struct {
	dial     string // e.g. ssl://host:8883, ws://host:9001/mqtt
	tls      bool
	username string
	password string
}

func parseBroker(src shared.Source) (brokerEndpoint, error) {
	u, err := url.Parse(src.Broker)
	if err != nil {
		return brokerEndpoint{}, fmt.Errorf("broker URL %s: %s", shared.MaskBrokerURL(src.Broker), shared.MaskPasswords(err.Error()))
	}
	scheme, ok := pahoSchemes[strings.ToLower(u.Scheme)]
	if !ok {
		return brokerEndpoint{}, fmt.Errorf("broker URL %s: scheme %q is not one of mqtt, mqtts, tcp, ssl, ws, wss", shared.MaskBrokerURL(src.Broker), u.Scheme)
	}
	if u.Hostname() == "" {
		return brokerEndpoint{}, fmt.Errorf("broker URL %s: no host", shared.MaskBrokerURL(src.Broker))
	}
	ep := brokerEndpoint{tls: scheme == "ssl" || scheme == "wss"}
	if u.User != nil {
		ep.username = u.User.Username()
		ep.password, _ = u.User.Password()
	}
	if src.Username != "" {
		ep.username = src.Username
	}
	if src.Password != "" {
		ep.password = src.Password
	}
	host := u.Host
	if u.Port() == "" && defaultPorts[scheme] != "" {
		host = u.Host + ":" + defaultPorts[scheme]
	}
	dial := url.URL{Scheme: scheme, Host: host}
	if scheme == "ws" || scheme == "wss" {
		dial.Path, dial.RawQuery = u.Path, u.RawQuery
	}
	ep.dial = dial.String()
	return ep, nil
}

// tlsConfig verifies the broker's certificate unless the source says
// rejectUnauthorized: false (a self-signed broker the operator trusts).
func tlsConfig(src shared.Source, host string) *tls.Config {
	return &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: !src.VerifyTLS(), //nolint:gosec // only when the operator sets rejectUnauthorized: false
		MinVersion:         tls.VersionTLS12,
	}
}

var clientIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// clientID is the MQTT client id. An explicit clientId is used as it is.
// Otherwise it is derived from the host and source names, so it is the same
// after a restart — what a persistent QoS 1 session needs to be found again
// by the broker. A QoS 0 source gets a random suffix: it keeps no session,
// and two receivers on one host must not kick each other off the broker.
//
// A receiver instance (receive --instance NAME) adds its name, to an
// explicit clientId too: two instances reading one configuration would
// otherwise log in under one id, and a broker disconnects the older
// session of an id that logs in again, so each would keep kicking the
// other off (and at QoS 1 they would share, and split, one session).
func clientID(src shared.Source, instance string) string {
	if src.ClientID != "" {
		if instance != "" {
			return src.ClientID + "-" + instance
		}
		return src.ClientID
	}
	host, _ := os.Hostname()
	name := "meshingest-" + host + "-" + src.Name
	if instance != "" {
		name = "meshingest-" + host + "-" + instance + "-" + src.Name
	}
	id := clientIDUnsafe.ReplaceAllString(name, "_")
	if src.QoS == 0 {
		id += fmt.Sprintf("-%x", time.Now().UnixNano()&0xffffff)
	}
	return id
}

// clientOptions builds paho's options for one connection. The handler is
// set before Connect (measured.md pitfall 1: a persistent session delivers
// right after CONNACK, and paho drops unrouted messages without acking
// them). Reconnects are not left to paho: the source's own loop owns them,
// so every attempt is logged, backoff is bounded, and each connection gets a
// fresh client whose acknowledgements cannot leak into the next session.
//
// The connection paho reads from is filtered by an oversizeGuard (limit
// payload bytes, nonce its marker): see oversize.go.
func clientOptions(src shared.Source, instance string, ep brokerEndpoint, limit int, nonce [nonceLen]byte, handler mqtt.MessageHandler, lost mqtt.ConnectionLostHandler) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions()
	o.AddBroker(ep.dial)
	o.SetClientID(clientID(src, instance))
	o.SetUsername(ep.username)
	o.SetPassword(ep.password)
	o.SetProtocolVersion(4) // MQTT 3.1.1; no silent fallback to 3.1
	o.SetCleanSession(src.QoS == 0)
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetConnectTimeout(connectTimeout(src))
	// The handler never blocks, so paho's reader always gets to PINGRESP;
	// these only bound how long a dead TCP connection goes unnoticed.
	o.SetKeepAlive(30 * time.Second)
	o.SetPingTimeout(10 * time.Second)
	// A write to a dead connection (an ack, a ping) gives up instead of
	// hanging the client.
	o.SetWriteTimeout(10 * time.Second)
	// Handlers run one at a time in receive order, which is what makes
	// acknowledgements go out in receive order.
	o.SetOrderMatters(true)
	o.SetAutoAckDisabled(true)
	o.SetDefaultPublishHandler(handler)
	o.SetConnectionLostHandler(lost)
	if ep.tls {
		u, _ := url.Parse(ep.dial)
		o.SetTLSConfig(tlsConfig(src, u.Hostname()))
	}
	o.SetCustomOpenConnectionFn(func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		conn, err := dial(uri, o)
		if err != nil {
			return nil, err
		}
		return newBufferedConn(conn, limit, nonce), nil
	})
	return o
}

// dial opens the network connection for paho, as paho would.
func dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp":
		conn, err = d.Dial("tcp", uri.Host)
	case "ssl":
		conn, err = tls.DialWithDialer(d, "tcp", uri.Host, o.TLSConfig)
	case "ws", "wss":
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		conn, err = mqtt.NewWebsocket(uri.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	default:
		err = fmt.Errorf("unsupported scheme %q", uri.Scheme)
	}
	return conn, err
}

// bufferedConn batches paho's small reads and writes into few system calls,
// and keeps oversized publishes from reaching paho. Reads go through a
// buffer (paho reads each packet's header a byte at a time, three or more
// read system calls per message: measured, that was the largest CPU cost of
// the receiver) and then through the oversizeGuard. Writes (a PUBACK is 4 bytes, one write each in
// paho) are queued and sent by one goroutine, which takes everything queued
// meanwhile in one write: under load, many acknowledgements per system
// call; when idle, sent at once. A write error is returned by the next
// Write and closes the connection, so paho notices it as it would have.
type bufferedConn struct {
	net.Conn
	r *oversizeGuard

	wmu     sync.Mutex // held while writing to Conn
	mu      sync.Mutex // guards pending, err, closed
	pending []byte
	err     error
	closed  bool
	kick    chan struct{}
}

func newBufferedConn(conn net.Conn, limit int, nonce [nonceLen]byte) *bufferedConn {
	r := newOversizeGuard(bufio.NewReaderSize(conn, 64<<10), limit, nonce)
	c := &bufferedConn{Conn: conn, r: r, kick: make(chan struct{}, 1)}
	go c.flushLoop()
	return c
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil || c.closed {
		err := c.err
		c.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	c.pending = append(c.pending, p...)
	select { // under mu: Close closes kick under mu, after setting closed
	case c.kick <- struct{}{}:
	default:
	}
	c.mu.Unlock()
	return len(p), nil
}

func (c *bufferedConn) flushLoop() {
	var buf []byte
	for range c.kick {
		if !c.flush(&buf) {
			return
		}
	}
}

// flush writes what is pending; false once the connection is done.
func (c *bufferedConn) flush(buf *[]byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	*buf, c.pending = c.pending, (*buf)[:0]
	closed := c.closed
	c.mu.Unlock()
	if len(*buf) > 0 {
		if _, err := c.Conn.Write(*buf); err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.Conn.Close()
			return false
		}
	}
	return !closed
}

// Close sends what is still queued (paho's DISCONNECT, the last acks), then
// closes.
func (c *bufferedConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	var buf []byte
	c.flush(&buf)
	c.mu.Lock()
	close(c.kick)
	c.mu.Unlock()
	return c.Conn.Close()
}

// DefaultConnectTimeout bounds a connection attempt, and then the
// subscription, when a source sets no connectTimeoutSec.
const DefaultConnectTimeout = 10 * time.Second

func connectTimeout(src shared.Source) time.Duration {
	if src.ConnectTimeoutSec > 0 {
		return time.Duration(src.ConnectTimeoutSec) * time.Second
	}
	return DefaultConnectTimeout
}
