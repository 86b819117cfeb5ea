package shared

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func TestServeMetrics_ServesRegistry(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshingest_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := ServeMetrics(ctx, "127.0.0.1:0", reg, Health{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "meshingest_test_total 3") || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("metrics body lacks the counter or runtime metrics:\n%s", body)
	}
}

func TestServeMetrics_BadAddressFailsAtStart(t *testing.T) {
	if _, err := ServeMetrics(context.Background(), "256.0.0.1:99999", NewRegistry(), Health{}, zerolog.Nop()); err == nil {
		t.Fatal("want an error for an unusable address")
	}
}

// countingListener counts the connections it accepted that are still open,
// and the most open at once.
type countingListener struct {
	net.Listener
	mu         sync.Mutex
	open, peak int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.peak = max(l.peak, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) counts() (open, peak int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.peak
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.mu.Lock(); c.l.open--; c.l.mu.Unlock() })
	return c.Conn.Close()
}

// Many clients that scrape once and then keep their connection open idle:
// the server holds at most MaxConns of them at once, serves every client in
// turn as idle ones time out, and in the end holds none. Before the limits,
// every idle connection stayed open for good.
func TestServeMetrics_IdleKeepAliveConns_CappedAndClosed(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: raw}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim := metricsLimits{MaxConns: 4, ReadHeader: 200 * time.Millisecond, Idle: 200 * time.Millisecond, Write: 5 * time.Second}
	serveMetricsOn(ctx, ln, NewRegistry(), Health{}, zerolog.Nop(), lim)

	const clients = 40
	served := make(chan error, clients)
	var conns []net.Conn
	for range clients {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		go func() {
			// One keep-alive request, its response read, then idle.
			if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
				served <- err
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			served <- err
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range clients {
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
		case <-time.After(60 * time.Second):
			open, peak := ln.counts()
			t.Fatalf("only %d of %d clients served; %d connections open, peak %d", i, clients, open, peak)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		open, peak := ln.counts()
		if peak > lim.MaxConns {
			t.Fatalf("%d connections were open at once, the cap is %d", peak, lim.MaxConns)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle keep-alive connections still open", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that connects and never sends a request is closed too.
func TestServeMetrics_SilentConn_Closed(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serveMetricsOn(ctx, raw, NewRegistry(), Health{}, zerolog.Nop(), metricsLimits{MaxConns: 4, ReadHeader: 100 * time.Millisecond, Idle: 100 * time.Millisecond, Write: time.Second})
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read = %v, want EOF (closed by the server)", err)
	}
}

// /-/healthy and /-/ready answer 200 "OK" or 503 with a one-line reason,
// on the metrics listener; the registry carries meshingest_build_info.
func TestServeMetrics_HealthEndpointsAndBuildInfo(t *testing.T) {
	SetBuildInfo(BuildInfo{Version: "1.2.3", Commit: "abc"})
	defer SetBuildInfo(BuildInfo{Version: "unknown", Commit: "unknown"})
	var reason atomic.Pointer[string]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := ServeMetrics(ctx, "127.0.0.1:0", NewRegistry(), Health{Ready: func() string {
		if r := reason.Load(); r != nil {
			return *r
		}
		return ""
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/-/healthy", "/-/ready"} {
		if code, body := get(path); code != 200 || body != "OK\n" {
			t.Errorf("%s = %d %q, want 200 OK", path, code, body)
		}
	}
	why := "the database has refused writes for 61s (locked)"
	reason.Store(&why)
	if code, body := get("/-/ready"); code != 503 || body != why+"\n" {
		t.Errorf("/-/ready = %d %q, want 503 with the reason", code, body)
	}
	if code, _ := get("/-/healthy"); code != 200 {
		t.Errorf("/-/healthy = %d while only not ready", code)
	}
	if _, body := get("/metrics"); !strings.Contains(body, `meshingest_build_info{commit="abc",goversion="go`) || !strings.Contains(body, `version="1.2.3"} 1`) {
		t.Errorf("no meshingest_build_info with the set version:\n%s", body)
	}
}
