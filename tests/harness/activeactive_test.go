package harness

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestSuite_ActiveActive_ShortRuns runs the active-active scenarios in
// small against the real binary: two receivers at QoS 0, one SIGKILLed
// and restarted every few seconds for 20 s; the writer SIGKILLed 5 times
// while both feed it; one frozen for 20 s and resumed. Nothing may be lost or counted twice and every table must equal
// an undisturbed single-receiver run's. The full runs (5 minutes of kills,
// 100 writer kills, a 10-minute outage, the cost) are `meshingest-harness chaos --only
// active-active-kill,active-active-writer-kill,active-active-outage,active-active-cost`.
func TestSuite_ActiveActive_ShortRuns(t *testing.T) {
	bin := meshingestBinary(t)
	for _, name := range []string{"active-active-kill", "active-active-writer-kill", "active-active-outage"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := ShortConfig()
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
