package shared

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

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
	addr, err := ServeMetrics(ctx, "127.0.0.1:0", reg, zerolog.Nop())
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
	if _, err := ServeMetrics(context.Background(), "256.0.0.1:99999", NewRegistry(), zerolog.Nop()); err == nil {
		t.Fatal("want an error for an unusable address")
	}
}
