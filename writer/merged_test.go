package writer

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// receiverCopy is what a receiver instance spooled of recs: every record
// but those in the gaps (it was down), received offset later.
func receiverCopy(recs []Record, offset time.Duration, gaps ...[2]int) []Record {
	var out []Record
	for i, r := range recs {
		down := false
		for _, g := range gaps {
			down = down || (i >= g[0] && i < g[1])
		}
		if down {
			continue
		}
		r.ReceivedAt = r.ReceivedAt.Add(offset)
		out = append(out, r)
	}
	return out
}

// drainMerged runs a writer over every spool below spoolDir until it has
// consumed n records and caught up.
func drainMerged(t *testing.T, spoolDir string, opts Options, n int64) *Writer {
	t.Helper()
	set, err := OpenMergedSource(spoolDir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	w, err := NewMerged(set, opts)
	if err != nil {
		t.Fatal(err)
	}
	writertest.RunUntil(t, fmt.Sprintf("the writer to consume %d records", n), 60*time.Second, w.Run, func() bool {
		return w.Stats().Messages.Load() >= n && w.Stats().CaughtUp.Load()
	})
	writertest.CheckForeignKeys(t, opts.Config.DBPath)
	return w
}

// TestMergedSource_TwoReceivers_TablesOfOneReceiver: two receivers with
// full subscriptions, each down for a stretch the other covers, give the
// tables a single receiver that heard everything gives: nothing lost,
// nothing counted twice, and the corpus's deliberate duplicate
// publications (observations 85 and 294) still counted twice.
func TestMergedSource_TwoReceivers_TablesOfOneReceiver(t *testing.T) {
	recs := writertest.CorpusRecords(t)
	ref := writertest.CorpusConfig(t)
	drain(t, spoolOf(t, recs), Options{Config: ref}, int64(len(recs)))
	want := dumpDB(t, ref.DBPath)

	spoolDir := filepath.Join(t.TempDir(), "spool")
	a := receiverCopy(recs, 0, [2]int{300, 350})
	b := receiverCopy(recs, 0, [2]int{100, 150}, [2]int{400, 401})
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "a"), a, spool.Options{})
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "b"), b, spool.Options{})
	cfg := writertest.CorpusConfig(t)
	w := drainMerged(t, spoolDir, Options{Config: cfg}, int64(len(a)+len(b)))
	diffDumps(t, want, dumpDB(t, cfg.DBPath))
	checkCorpusTotals(t, cfg.DBPath, recs)

	// Every record of both spools was either applied or recognised as the
	// other's copy, and the spools' figures say which.
	copies := w.Stats().Drops()[DropOtherReceiver]
	if wantCopies := int64(len(a) + len(b) - len(recs)); copies != wantCopies {
		t.Errorf("%d records recognised as another receiver's copy, want %d", copies, wantCopies)
	}
	var applied, other int64
	figs := w.Stats().spoolFigures(time.Now())
	if len(figs) != 2 {
		t.Fatalf("stats for %d spools, want 2: %+v", len(figs), figs)
	}
	for _, f := range figs {
		applied += f.RecordsApplied
		other += f.OtherReceiverCopies
	}
	if applied != int64(len(recs)) || other != copies {
		t.Errorf("spool figures: %d applied, %d copies; want %d and %d", applied, other, len(recs), copies)
	}
}

// TestMergedSource_LateCopiesAfterRestart_NotAppliedAgain: a writer that
// stops (or crashes) after applying one receiver's records remembers, from
// the database, the publications applied; the other receiver's copies,
// sealed only later, apply nothing again, though both its own and the
// first spool's records fall outside the window by then.
//
// The corpus spans 284 hours, all of which b "misses" while frozen: the
// copies' memory must reach that far back (past it a copy is applied, by
// design), so the test sets it; with small batches and with the default
// ones alike, since where a batch ends must not change what is applied.
func TestMergedSource_LateCopiesAfterRestart_NotAppliedAgain(t *testing.T) {
	recs := writertest.CorpusRecords(t)
	ref := writertest.CorpusConfig(t)
	drain(t, spoolOf(t, recs), Options{Config: ref}, int64(len(recs)))
	want := dumpDB(t, ref.DBPath)
	for _, batch := range []int{0, 20} {
		t.Run(fmt.Sprintf("batchMaxRecords=%d", batch), func(t *testing.T) {
			w, a, cfg := lateCopiesAfterRestart(t, batch, 300*time.Hour)
			if got, wantCopies := w.Stats().Drops()[DropOtherReceiver], int64(len(a)); got != wantCopies {
				t.Errorf("%d of b's records recognised as a's copies, want %d", got, wantCopies)
			}
			checkCorpusTotals(t, cfg.DBPath, recs)
			got := dumpDB(t, cfg.DBPath)
			// The records only b had were stored with b's receive
			// times, 2 ms later: compare the counts, not the times.
			for _, table := range dumpedTables {
				if len(got[table]) != len(want[table]) {
					t.Errorf("%s: %d rows, want %d", table, len(got[table]), len(want[table]))
				}
			}
		})
	}
}

// With the default memory (15 minutes), most of a's records are further
// behind the newest than that when b's copies arrive: those are applied
// again (the documented limit). How many must not depend on where the
// batches end: before the memory was measured per record, a writer whose
// batch held all of a's records remembered every round (0 of b's copies
// applied) and one committing every 20 records forgot most of them (416).
func TestMergedSource_CopiesPastTheMemory_SameForAnyBatchSize(t *testing.T) {
	var drops []int64
	var tables []map[string][]string
	for _, batch := range []int{0, 20} {
		w, _, cfg := lateCopiesAfterRestart(t, batch, 0)
		drops = append(drops, w.Stats().Drops()[DropOtherReceiver])
		tables = append(tables, dumpDB(t, cfg.DBPath))
	}
	if drops[0] != drops[1] {
		t.Fatalf("copies recognised: %d with the default batches, %d with batches of 20", drops[0], drops[1])
	}
	diffDumps(t, tables[0], tables[1])
}

// lateCopiesAfterRestart drains receiver a's copy of the corpus (missing
// records 200-259) while b is frozen, then, in a writer started anew, b's
// copies of everything 2 ms after a's.
func lateCopiesAfterRestart(t *testing.T, batchMaxRecords int, memory time.Duration) (*Writer, []Record, *shared.Config) {
	recs := writertest.CorpusRecords(t)
	spoolDir := filepath.Join(t.TempDir(), "spool")
	cfg := writertest.CorpusConfig(t)
	cfg.Writer.BatchMaxRecords = batchMaxRecords
	// Receiver b has sealed nothing yet (its spool exists: it is
	// alive, but frozen): the writer applies a's records.
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "b"), nil, spool.Options{})
	a := receiverCopy(recs, 0, [2]int{200, 260})
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "a"), a, spool.Options{})
	drainMerged(t, spoolDir, Options{Config: cfg, DedupMemory: memory}, int64(len(a)))

	// b resumes: its copies of everything arrive, 2 ms after a's, to a
	// writer started anew.
	b := receiverCopy(recs, 2*time.Millisecond)
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "b"), b, spool.Options{})
	return drainMerged(t, spoolDir, Options{Config: cfg, DedupMemory: memory}, int64(len(b))), a, cfg
}

// TestMergedSource_GuessedCopyApplied_Prepared: a writer restarted between
// the two receivers' copies of a publication starts a pipeline that knows
// nothing of the first; when the observer then publishes the same bytes
// again, the pipeline takes that second publication for a's copy of b's
// and leaves it unprepared, but copies.View.Admit applies it: it must be prepared
// then and stored like any other, as a single receiver's run stores it.
func TestMergedSource_GuessedCopyApplied_Prepared(t *testing.T) {
	var x Record
	for _, r := range writertest.CorpusRecords(t) {
		if strings.HasSuffix(r.Topic, "/packets") {
			x = r
			break
		}
	}
	again := x
	again.ReceivedAt = x.ReceivedAt.Add(time.Second)
	ref := writertest.CorpusConfig(t)
	drain(t, spoolOf(t, []Record{x, again}), Options{Config: ref}, 2)
	want := dumpDB(t, ref.DBPath)

	spoolDir := filepath.Join(t.TempDir(), "spool")
	cfg := writertest.CorpusConfig(t)
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "b"), nil, spool.Options{})
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "a"), []Record{x}, spool.Options{})
	drainMerged(t, spoolDir, Options{Config: cfg}, 1)
	bCopy := x
	bCopy.ReceivedAt = x.ReceivedAt.Add(2 * time.Millisecond)
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "b"), []Record{bCopy}, spool.Options{})
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "a"), []Record{again}, spool.Options{})
	w := drainMerged(t, spoolDir, Options{Config: cfg}, 2)
	if got := w.Stats().Drops()[DropOtherReceiver]; got != 1 {
		t.Errorf("%d records recognised as the other receiver's copy, want 1 (b's)", got)
	}
	diffDumps(t, want, dumpDB(t, cfg.DBPath))
}

// TestMergedSource_OnSpools_GrowsAsInstancesAppear: the writer says how
// many spools it drains, once found and again when a receiver instance
// started later appears, so that cmd/meshingest can give each its memory
// (MemoryLimit): left at one spool's limit, a second made the collector
// run every few milliseconds. The spools' figures are read meanwhile, as
// the stats file and the metrics do: a spool added under them is no data
// race.
func TestMergedSource_OnSpools_GrowsAsInstancesAppear(t *testing.T) {
	recs := writertest.CorpusRecords(t)
	spoolDir := filepath.Join(t.TempDir(), "spool")
	writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "a"), recs[:200], spool.Options{})
	set, err := OpenMergedSource(spoolDir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	var mu sync.Mutex
	var seen []int
	cfg := writertest.CorpusConfig(t)
	w, err := NewMerged(set, Options{Config: cfg, OnSpools: func(n int) {
		mu.Lock()
		seen = append(seen, n)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	// The stats file's and the metrics' goroutines read each spool's
	// figures while the drain loop adds the spools (run with -race).
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				w.stats.spoolFigures(time.Now())
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	bStarted := false
	writertest.RunUntil(t, "the writer to drain both instances", 60*time.Second, w.Run, func() bool {
		if !bStarted && w.Stats().Messages.Load() >= 200 {
			// a is drained: b starts now.
			writertest.AppendToSpool(t, shared.InstanceSpoolDir(spoolDir, "b"), recs[200:], spool.Options{})
			bStarted = true
		}
		return w.Stats().Messages.Load() >= int64(len(recs)) && w.Stats().CaughtUp.Load()
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[1 2]" {
		t.Errorf("OnSpools saw %v, want [1 2]", seen)
	}
	if MemoryLimit(1) != MemoryLimitOneSpool || MemoryLimit(2) != MemoryLimitOneSpool+MemoryLimitPerFurtherSpool || MemoryLimit(0) != MemoryLimitOneSpool {
		t.Errorf("MemoryLimit(0, 1, 2) = %d, %d, %d", MemoryLimit(0), MemoryLimit(1), MemoryLimit(2))
	}
}
