package shared

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/net/netutil"
)

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, to which a process adds its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsLimits bound what clients of the metrics listener can hold: without
// them, 1,000 idle keep-alive connections held 1,000 file descriptors and
// goroutines and took the writer to 67 MB.
type metricsLimits struct {
	// MaxConns is how many connections are served at once; more wait in
	// the kernel's listen backlog (no fd, no goroutine here) until one
	// closes. A scraper needs one; the rest is room for a person with curl.
	MaxConns int
	// ReadHeader bounds a request's headers (a client that connects and
	// sends nothing); Idle a keep-alive connection between requests,
	// longer than nothing a scraper needs (it reconnects, at the cost of
	// one handshake per scrape); Write a response to a client that does
	// not read it.
	ReadHeader, Idle, Write time.Duration
}

var defaultMetricsLimits = metricsLimits{MaxConns: 16, ReadHeader: 5 * time.Second, Idle: 30 * time.Second, Write: 30 * time.Second}

// ServeMetrics serves reg at /metrics on addr until ctx ends. It returns
// once the listener is bound (so a bad address fails at start-up, not
// later) and the bound address, useful with port 0 in tests.
func ServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log zerolog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w; choose a free address or leave metricsListen empty", addr, err)
	}
	serveMetricsOn(ctx, ln, reg, log, defaultMetricsLimits)
	log.Info().Str("addr", ln.Addr().String()).Int("max_conns", defaultMetricsLimits.MaxConns).Msg("serving Prometheus metrics at /metrics")
	return ln.Addr(), nil
}

// serveMetricsOn serves reg on ln, within lim, until ctx ends.
func serveMetricsOn(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log zerolog.Logger, lim metricsLimits) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: lim.ReadHeader,
		IdleTimeout:       lim.Idle,
		WriteTimeout:      lim.Write,
	}
	addr := ln.Addr().String()
	go func() {
		if err := srv.Serve(netutil.LimitListener(ln, lim.MaxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("addr", addr).Msg("metrics server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(shutdown) != nil {
			srv.Close() // connections still busy after a second
		}
	}()
}
