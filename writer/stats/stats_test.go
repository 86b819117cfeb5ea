package stats

import (
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/writer/dbfile"
)

// TestCounters_AddBatch_DropsFromZero: every reason is there from the
// start at 0, a batch adds to its reasons, and a reason the list does not
// know is still counted.
func TestCounters_AddBatch_DropsFromZero(t *testing.T) {
	c := New([]string{"a", "b"})
	if d := c.Drops(); len(d) != 2 || d["a"] != 0 || d["b"] != 0 {
		t.Fatalf("drops at start %v, want a and b at 0", d)
	}
	now := time.Unix(1_000, 0)
	c.AddBatch(Batch{Messages: 3, Drops: map[string]int{"b": 2, "new": 1}}, map[string]struct{}{"src": {}}, now, time.Millisecond, 2*time.Millisecond, now)
	c.AddBatch(Batch{Messages: 1}, nil, time.Time{}, 0, 0, now)
	if d := c.Drops(); d["a"] != 0 || d["b"] != 2 || d["new"] != 1 {
		t.Errorf("drops %v, want a 0, b 2, new 1", d)
	}
	f := c.Snapshot(now.Add(5*time.Second), nil, -1, dbfile.Snapshot{State: "ok"}, nil)
	if f.Meshingest.Messages != 4 || f.GroupCommitFlushes != 2 || f.Meshingest.LastBatchSize != 1 {
		t.Errorf("messages %d, batches %d, last batch %d; want 4, 2, 1", f.Meshingest.Messages, f.GroupCommitFlushes, f.Meshingest.LastBatchSize)
	}
	// A batch without a receive time keeps the last one: the lag counts
	// from the first batch's record.
	if f.Meshingest.LagSeconds != 5 || f.Meshingest.SpoolDepthKnown {
		t.Errorf("lag %v s, depth known %v; want 5 s and unknown", f.Meshingest.LagSeconds, f.Meshingest.SpoolDepthKnown)
	}
	if l := f.SourceLiveness["src"]; l.LastMessageUnix != now.Unix() {
		t.Errorf("source_liveness src %+v, want lastMessageUnix %d", l, now.Unix())
	}
}

// TestSpool_Figures_AppliedIsRecordsLessCopies: a spool's applied records
// are those not recognised as another receiver's copies.
func TestSpool_Figures_AppliedIsRecordsLessCopies(t *testing.T) {
	var s Spool
	now := time.Unix(2_000, 0)
	s.Committed(10, 4, 1, now.Add(-3*time.Second))
	f := s.Figures(now, 7)
	if f.RecordsApplied != 6 || f.OtherReceiverCopies != 4 || f.LateCopies != 1 || f.DepthRecords != 7 || f.LagSeconds != 3 {
		t.Errorf("figures %+v, want applied 6, copies 4, late 1, depth 7, lag 3 s", f)
	}
}

// TestFile_Key_IgnoresTheClock: a file whose only changes are the clock's
// (sample time, I/O rates, the loop's tick, the lag) is not rewritten; a
// changed figure is.
func TestFile_Key_IgnoresTheClock(t *testing.T) {
	a := File{SampledAt: "t1", WatchdogLastTickUnix: 1}
	a.Meshingest.Messages = 5
	b := a
	b.SampledAt, b.WatchdogLastTickUnix, b.ProcIO = "t2", 2, &ProcIORates{ReadBytesPerSec: 9}
	b.Meshingest.LagSeconds = 30
	if a.key() != b.key() {
		t.Error("clock-only changes changed the key")
	}
	b.Meshingest.Messages = 6
	if a.key() == b.key() {
		t.Error("a changed figure did not change the key")
	}
}

// TestFile_StatusLine_States: the line leads with what needs attention.
func TestFile_StatusLine_States(t *testing.T) {
	var f File
	f.Meshingest.CaughtUp, f.Meshingest.Messages = true, 12
	f.Meshingest.Health.Ready, f.Meshingest.Health.Healthy = true, true
	if got := f.StatusLine(); got != "caught up; lag 0s; 12 messages written; database ok" {
		t.Errorf("healthy: %q", got)
	}
	f.Meshingest.Database.Current = &dbfile.Episode{Kind: "busy", Seconds: 61}
	f.Meshingest.Health.Ready = false
	f.Meshingest.Health.Healthy, f.Meshingest.Health.Unhealthy = false, "the drain loop last ran 40s ago"
	got := f.StatusLine()
	if !strings.HasPrefix(got, "UNHEALTHY (the drain loop last ran 40s ago); NOT READY; ") || !strings.HasSuffix(got, "database refuses writes (busy) for 61s") {
		t.Errorf("refusing, not ready, unhealthy: %q", got)
	}
}
