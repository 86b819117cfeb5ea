package harness

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// TestSuite_ActiveActive_ShortRuns runs the active-active scenarios in
// small (testConfig) against the real binary: the writer SIGKILLed 3 times
// while two receivers at QoS 0 feed it; with MESHINGEST_LONG_TESTS=1 also
// one receiver SIGKILLed and restarted every few seconds, and one frozen
// and resumed. Nothing may be lost or counted twice and every table must equal
// an undisturbed single-receiver run's. The full runs (5 minutes of kills,
// 100 writer kills, a 10-minute outage, the cost) are `meshingest-harness chaos --only
// active-active-kill,active-active-writer-kill,active-active-outage,active-active-cost`.
func TestSuite_ActiveActive_ShortRuns(t *testing.T) {
	bin := meshingestBinary(t)
	names := []string{"active-active-writer-kill"}
	if testkit.Long() {
		names = []string{"active-active-kill", "active-active-writer-kill", "active-active-outage"}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.Binary, cfg.WorkDir, cfg.Only = bin, t.TempDir(), []string{name}
			var progress bytes.Buffer
			cfg.Progress = &progress
			suite, err := NewSuite(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			results := suite.Run(ctx)
			t.Log(progress.String())
			if len(results) != 1 {
				t.Fatalf("%d results, want 1", len(results))
			}
			checkResult(t, results[0])
		})
	}
}
