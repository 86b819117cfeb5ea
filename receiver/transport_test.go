package receiver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// allowAll lets every client in (mochi's own hooks/auth package would pull
// in a YAML library).
type allowAll struct{ mochi.HookBase }

func (allowAll) ID() string { return "allow-all" }
func (allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

// selfSigned makes a certificate for 127.0.0.1 that no system trusts.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "meshingest test broker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// mochiBroker runs an in-process broker with a TLS listener, a WebSocket
// listener and a WebSocket-over-TLS listener (mosquitto's test helper has
// plain TCP only).
func mochiBroker(t *testing.T) (srv *mochi.Server, tlsAddr, wsAddr, wssAddr string) {
	t.Helper()
	srv = mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12}
	tlsL := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: tc})
	wsAddr, wssAddr = freeAddr(t), freeAddr(t)
	for _, l := range []listeners.Listener{tlsL,
		listeners.NewWebsocket(listeners.Config{ID: "ws", Address: wsAddr}),
		listeners.NewWebsocket(listeners.Config{ID: "wss", Address: wssAddr, TLSConfig: tc})} {
		if err := srv.AddListener(l); err != nil {
			t.Fatal(err)
		}
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	time.Sleep(100 * time.Millisecond) // the WebSocket listeners bind in Serve
	return srv, tlsL.Address(), wsAddr, wssAddr
}

// Every URL scheme reaches the broker; TLS verifies the certificate unless
// the source says rejectUnauthorized: false.
func TestSource_Schemes_TLSVerifiedByDefault(t *testing.T) {
	srv, tlsAddr, wsAddr, wssAddr := mochiBroker(t)
	no := false
	sp := newSpool(t, spool.Options{})
	r := startReceiver(t, sp,
		shared.Source{Name: "mqtts-verified", Broker: "mqtts://" + tlsAddr},
		shared.Source{Name: "mqtts", Broker: "mqtts://" + tlsAddr, RejectUnauthorized: &no},
		shared.Source{Name: "ssl", Broker: "ssl://" + tlsAddr, RejectUnauthorized: &no},
		shared.Source{Name: "ws", Broker: "ws://" + wsAddr + "/mqtt"},
		shared.Source{Name: "wss", Broker: "wss://" + wssAddr + "/mqtt", RejectUnauthorized: &no},
		shared.Source{Name: "wss-verified", Broker: "wss://" + wssAddr + "/mqtt"},
	)
	connected := []string{"mqtts", "ssl", "ws", "wss"}
	testkit.WaitFor(t, 10*time.Second, "TLS and WebSocket sources connected", func() bool {
		for _, n := range connected {
			if s, _ := r.source(n); !s.Connected {
				return false
			}
		}
		return true
	})
	if err := srv.Publish("meshcore/SJC/O/packets", []byte("over every transport"), false, 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "one message per connected source", func() bool {
		for _, n := range connected {
			if _, c := r.source(n); c.Durable != 1 {
				return false
			}
		}
		return true
	})
	for _, n := range []string{"mqtts-verified", "wss-verified"} {
		testkit.WaitFor(t, 5*time.Second, n+" failed once", func() bool { s, _ := r.source(n); return s.LastError != "" })
		s, _ := r.source(n)
		if s.Connected || !strings.Contains(s.LastError, "certificate") {
			t.Errorf("%s: connected %v, lastError %q; want a certificate error", n, s.Connected, s.LastError)
		}
	}
}

func TestParseBroker_Schemes(t *testing.T) {
	for _, c := range []struct{ in, dial string }{
		{"mqtt://h", "tcp://h:1883"},
		{"tcp://h:1999", "tcp://h:1999"},
		{"mqtts://u:p@h", "ssl://h:8883"},
		{"ssl://h:8884", "ssl://h:8884"},
		{"tls://h", "ssl://h:8883"},
		{"ws://h:9001/mqtt", "ws://h:9001/mqtt"},
		{"wss://u:p@h/mqtt?x=1", "wss://h/mqtt?x=1"},
	} {
		ep, err := parseBroker(shared.Source{Broker: c.in})
		if err != nil || ep.dial != c.dial {
			t.Errorf("%s: dial %q err %v, want %q", c.in, ep.dial, err, c.dial)
		}
	}
	ep, _ := parseBroker(shared.Source{Broker: "mqtts://url-user:url-pw@h"})
	if ep.username != "url-user" || ep.password != "url-pw" || !ep.tls {
		t.Errorf("credentials from the URL: %+v", ep)
	}
	ep, _ = parseBroker(shared.Source{Broker: "mqtt://url-user:url-pw@h", Username: "u", Password: "p"})
	if ep.username != "u" || ep.password != "p" {
		t.Errorf("explicit credentials do not win: %+v", ep)
	}
	_, err := parseBroker(shared.Source{Broker: "http://u:secret@h"})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad scheme: %v", err)
	}
}
