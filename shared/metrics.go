package shared

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/net/netutil"
)

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors and meshingest_build_info, to which a process adds its own
// metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	b := CurrentBuildInfo()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "meshingest_build_info",
			Help:        "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": runtime.Version()},
		}, func() float64 { return 1 }))
	return reg
}

// BuildInfo is what meshingest_build_info says of the running binary.
type BuildInfo struct {
	Version string
	Commit  string
}

var buildInfo struct {
	mu  sync.Mutex
	set *BuildInfo
}

// SetBuildInfo records the binary's version and commit, as main resolved
// them (link-time values), before any registry is made.
func SetBuildInfo(b BuildInfo) {
	buildInfo.mu.Lock()
	buildInfo.set = &b
	buildInfo.mu.Unlock()
}

// CurrentBuildInfo is what SetBuildInfo recorded, else what Go's build
// information says: the module version and the VCS revision, "unknown"
// where there is none.
func CurrentBuildInfo() BuildInfo {
	buildInfo.mu.Lock()
	defer buildInfo.mu.Unlock()
	if buildInfo.set != nil {
		return *buildInfo.set
	}
	b := BuildInfo{Version: "unknown", Commit: "unknown"}
	if info, ok := debug.ReadBuildInfo(); ok {
		if v := info.Main.Version; v != "" {
			b.Version = v
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				b.Commit = s.Value
			}
		}
	}
	return b
}

// Health answers /-/healthy and /-/ready. Each check returns "" when all
// is well, else a one-line reason; a nil check is always well.
type Health struct {
	// Healthy says whether the process runs its loop: a failing check is
	// a process to restart.
	Healthy func() string
	// Ready says whether it does its job: a failing check is a process
	// that is alive but cannot do it now (a full spool, a database that
	// refuses writes).
	Ready func() string
}

// HealthState is a process's health as its stats file records it, where
// `meshingest status` reads it.
type HealthState struct {
	Healthy   bool   `json:"healthy"`
	Unhealthy string `json:"unhealthy,omitempty"`
	Ready     bool   `json:"ready"`
	NotReady  string `json:"notReady,omitempty"`
}

// State runs both checks.
func (h Health) State() HealthState {
	s := HealthState{Unhealthy: check(h.Healthy), NotReady: check(h.Ready)}
	s.Healthy, s.Ready = s.Unhealthy == "", s.NotReady == ""
	return s
}

func check(f func() string) string {
	if f == nil {
		return ""
	}
	return f()
}

// healthHandler answers 200 "OK" or 503 with the reason, one line of
// text, so `curl -f` and load balancers can use it as it is.
func healthHandler(f func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if reason := check(f); reason != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, reason)
			return
		}
		fmt.Fprintln(w, "OK")
	}
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

// ServeMetrics serves reg at /metrics, and health's checks at /-/healthy
// and /-/ready, on addr until ctx ends. It returns once the listener is
// bound (so a bad address fails at start-up, not later) and the bound
// address, useful with port 0 in tests.
func ServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry, health Health, log zerolog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w; choose a free address or leave metricsListen empty", addr, err)
	}
	serveMetricsOn(ctx, ln, reg, health, log, defaultMetricsLimits)
	log.Info().Str("addr", ln.Addr().String()).Int("max_conns", defaultMetricsLimits.MaxConns).Msg("serving Prometheus metrics at /metrics, health at /-/healthy and /-/ready")
	return ln.Addr(), nil
}

// serveMetricsOn serves reg and health on ln, within lim, until ctx ends.
func serveMetricsOn(ctx context.Context, ln net.Listener, reg *prometheus.Registry, health Health, log zerolog.Logger, lim metricsLimits) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /-/healthy", healthHandler(health.Healthy))
	mux.Handle("GET /-/ready", healthHandler(health.Ready))
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
