package writer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/tests/loadgen"
)

// TestPathJobs_Corpus_MatchesReference drains the real capture and checks
// every resolved_path and every neighbor_edges row against the reference
// recomputation of §8.
func TestPathJobs_Corpus_MatchesReference(t *testing.T) {
	cfg := corpusConfig(t)
	recs := corpusRecords(t)
	drain(t, spoolOf(t, recs), Options{Config: cfg}, int64(len(recs)))
	ref := checkPathJobs(t, cfg.DBPath, recs, cfg.NeighborEdgesDays())
	if len(ref.edges) == 0 {
		t.Error("the corpus gave no neighbor_edges")
	}
}

// generatedRecords is a loadgen stream of n messages received 35 ms apart
// from start, and the configuration with its channel keys.
func generatedRecords(t testing.TB, seed uint64, n int, start time.Time) ([]Record, *shared.Config) {
	t.Helper()
	g := loadgen.New(loadgen.Options{Seed: seed, Clock: func() time.Time { return start }})
	recs := make([]Record, n)
	for i := range recs {
		m := g.Next()
		recs[i] = Record{ReceivedAt: start.Add(time.Duration(i) * 35 * time.Millisecond), Source: "gen", Topic: m.Topic, Payload: m.Payload}
	}
	cfg := corpusConfig(t)
	k := g.Keys()
	cfg.ChannelKeys, cfg.HashChannels, cfg.HashRegions = k.ChannelKeys, k.HashChannels, k.HashRegions
	return recs, cfg
}

// TestPathJobs_Generated_MatchesReference does the same for a generated
// mesh of 300 nodes and 40 observers: 100,000 messages (10,000 under the
// race detector), with 1-byte hop prefixes shared by several nodes, so the
// neighbour graph settles many hops, and repeated reports of observations.
func TestPathJobs_Generated_MatchesReference(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 10_000
	}
	start := time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)
	began := time.Now()
	recs, cfg := generatedRecords(t, 42, n, start)
	src := spoolOf(t, recs)
	w, err := New(src, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	spooled := time.Now()
	runUntilDrained(t, w, int64(n), 10*time.Minute)
	drained := time.Now()
	ref := checkPathJobs(t, cfg.DBPath, recs, cfg.NeighborEdgesDays())
	t.Logf("generated and spooled in %v, drained in %v, checked in %v",
		spooled.Sub(began).Round(time.Millisecond), drained.Sub(spooled).Round(time.Millisecond), time.Since(drained).Round(time.Millisecond))
	if ref.byAdjacency == 0 {
		t.Error("no hop was settled by the neighbour graph: the stream does not exercise disambiguation")
	}
}

// runUntilDrained runs w until it consumed n messages and caught up.
func runUntilDrained(t testing.TB, w *Writer, n int64, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(timeout)
	for w.Stats().Messages.Load() < n || !w.Stats().CaughtUp.Load() {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("writer consumed %d of %d messages in %v", w.Stats().Messages.Load(), n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPathJobs_AcrossARestart_MatchesReference: a second writer process
// (its memory empty) takes over mid-transmission and gets reports again
// that the first one stored, and new ones twice in one batch: the new rows
// and the repeats are told apart (through the table for transmissions it
// did not see begin), the edges counted once.
func TestPathJobs_AcrossARestart_MatchesReference(t *testing.T) {
	recs, cfg := generatedRecords(t, 9, 20000, time.Date(2026, 10, 3, 8, 0, 0, 0, time.UTC))
	a, b := recs[:15000], recs[15000:]
	// After the restart come again the last reports the first process
	// stored, then the first new ones twice, in one batch.
	b = append(append(append(append([]Record(nil), a[len(a)-300:]...), b[:300]...), b[:300]...), b[300:]...)
	dir := filepath.Join(t.TempDir(), "spool")
	appendToSpool(t, dir, a, spool.Options{})
	first := openSource(t, dir)
	drain(t, first, Options{Config: cfg}, int64(len(a)))
	appendToSpool(t, dir, b, spool.Options{})
	drain(t, openSource(t, dir), Options{Config: cfg}, int64(len(b)))
	checkPathJobs(t, cfg.DBPath, append(append([]Record(nil), a...), b...), cfg.NeighborEdgesDays())
}

func openSource(t *testing.T, dir string) *SpoolSource {
	t.Helper()
	r, err := spool.OpenReader(dir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return NewSpoolSource(r)
}
