package shared

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestNewLogger_JSONCarriesComponent(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "receiver", "debug", LogAuto) // a buffer is not a terminal
	log.Info().Str("source", "local").Msg("connected")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %q: %v", buf.String(), err)
	}
	if line["component"] != "receiver" || line["source"] != "local" || line["message"] != "connected" {
		t.Fatalf("unexpected line %v", line)
	}
}

func TestThrottle_Allow_OncePerInterval(t *testing.T) {
	th := NewThrottle(time.Minute)
	t0 := time.Unix(1000, 0)
	if ok, _ := th.Allow("full", t0); !ok {
		t.Fatal("first event must pass")
	}
	for i := 1; i <= 5; i++ {
		if ok, _ := th.Allow("full", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatalf("event %d within the interval passed", i)
		}
	}
	if ok, _ := th.Allow("other", t0.Add(time.Second)); !ok {
		t.Fatal("a different key is throttled separately")
	}
	ok, suppressed := th.Allow("full", t0.Add(61*time.Second))
	if !ok || suppressed != 5 {
		t.Fatalf("after the interval: ok=%v suppressed=%d, want true 5", ok, suppressed)
	}
}
