package copies

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// BenchmarkCopies_Memory250PerSecond fills the rounds of two receivers'
// copies with DefaultMemory of 250 publications a second, as a writer
// draining two instances holds them, and reports the heap they take and
// the cost of one Admit:
//
//	go test ./writer/copies -run '^$' -bench Copies_Memory -benchtime 1x
func BenchmarkCopies_Memory250PerSecond(b *testing.B) {
	const rate = 250
	n := int(DefaultMemory.Seconds()) * rate
	a, bb := spool.Identity{1}, spool.Identity{2}
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	recs := make([]spool.Record, n)
	for i := range recs {
		recs[i] = spool.Record{ReceivedAt: t0.Add(time.Duration(i) * time.Second / rate), Topic: "meshcore/SJC/obs/packets",
			Payload: []byte(fmt.Sprintf(`{"raw":"%064x","SNR":"%d"}`, i, i%13))}
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := NewMemory(nil)
		start := time.Now()
		// One batch a second, as the writer commits them at this rate.
		for i := 0; i < n; i += rate {
			c := m.View(DefaultWindow, DefaultMemory, nil)
			for _, r := range recs[i:min(i+rate, n)] {
				c.Admit(&r, Identity(&r), a, time.Time{}, r.ReceivedAt)
				r.ReceivedAt = r.ReceivedAt.Add(2 * time.Millisecond)
				c.Admit(&r, Identity(&r), bb, time.Time{}, r.ReceivedAt)
			}
			c.Commit(Row{}, 0, recs[min(i+rate, n)-1].ReceivedAt.Add(-DefaultMemory).UnixMilli())
		}
		took := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapAlloc - before.HeapAlloc)
		b.ReportMetric(float64(m.rounds), "rounds")
		b.ReportMetric(heap/(1<<20), "MiB")
		b.ReportMetric(heap/float64(m.rounds), "B/round")
		b.ReportMetric(float64(took.Nanoseconds())/float64(2*n), "ns/copy")
		runtime.KeepAlive(m)
	}
}
