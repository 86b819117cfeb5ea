package jobs

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/tests/loadgen"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// TestPathJobs_Corpus_MatchesReference drains the real capture and checks
// every resolved_path and every neighbor_edges row against the rule over
// the final tables. The capture has nodes that advertise after observations
// through them (CoreScope's ingestor, deriving each observation up to 60 s
// later against the nodes table, finds 83 edges; a writer deriving each one
// at insert found 61), and a 1-byte prefix that is unique when first heard
// and shared at the end: observer Key Route Inspector-BRK heard the hop
// "1F" while only hrkG2Repeater (1f1f…) was known, then Key Route H-BRK
// (1f5d…) advertised; the rule gives Inspector no edge to hrkG2Repeater,
// and one of count 6 to Key Route H-BRK (five paths ending "1F5D", one
// zero-hop advert).
func TestPathJobs_Corpus_MatchesReference(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	drainRecords(t, cfg, recs)
	ref := checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
	if len(ref.edges) != 83 || ref.lateRows == 0 {
		t.Errorf("the corpus gave %d neighbor_edges (CoreScope's ingestor: 83), %d observations whose edges changed after they were stored",
			len(ref.edges), ref.lateRows)
	}
	const (
		inspector = "55d4cfee3b826affe22bd480611a9ba6ece9cbb03aa89ee6f414416285de50db"
		hrkG2     = "1f1f0f9886d7b335e836e3b224905c8c51642c6033dff0dc038e9f147fbf621c"
		keyRouteH = "1f5dd36fdd499d6c0a2772093028fe52ae695a15ff0dd0a4d9c752bf27632435"
	)
	edges := storedEdges(t, cfg.DBPath)
	if e, ok := edges[[2]string{hrkG2, inspector}]; ok {
		t.Errorf("Key Route Inspector-BRK – hrkG2Repeater has an edge (count %d): the shared hop 1F counted", e.count)
	}
	if e := edges[[2]string{keyRouteH, inspector}]; e.count != 6 {
		t.Errorf("Key Route Inspector-BRK – Key Route H-BRK: count %d, want 6", e.count)
	}
}

// generatedRecords is a loadgen stream of n messages received 35 ms apart
// from start, and the configuration with its channel keys.
func generatedRecords(t testing.TB, seed uint64, n int, start time.Time) ([]writer.Record, *shared.Config) {
	t.Helper()
	g := loadgen.New(loadgen.Options{Seed: seed, Clock: func() time.Time { return start }})
	recs := make([]writer.Record, n)
	for i := range recs {
		m := g.Next()
		recs[i] = writer.Record{ReceivedAt: start.Add(time.Duration(i) * 35 * time.Millisecond), Source: "gen", Topic: m.Topic, Payload: m.Payload}
	}
	cfg := writertest.CorpusConfig(t)
	k := g.Keys()
	cfg.ChannelKeys, cfg.HashChannels, cfg.HashRegions = k.ChannelKeys, k.HashChannels, k.HashRegions
	return recs, cfg
}

// streamSize is how many records a test drains: n, or under the race
// detector (raceEnabled) underRace, and underRaceLong with
// MESHINGEST_LONG_TESTS=1.
func streamSize(n, underRace, underRaceLong int) int {
	switch {
	case !raceEnabled:
		return n
	case testkit.Long():
		return underRaceLong
	default:
		return underRace
	}
}

// TestPathJobs_Generated_MatchesReference does the same for a generated
// mesh of 300 nodes and 40 observers: 100,000 messages (5,000 under the
// race detector, 10,000 with MESHINGEST_LONG_TESTS=1), with 1-byte hop prefixes shared by several nodes, so the
// neighbour graph settles many hops, and repeated reports of observations.
func TestPathJobs_Generated_MatchesReference(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	n := streamSize(100_000, 5_000, 10_000)
	start := time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)
	began := time.Now()
	recs, cfg := generatedRecords(t, 42, n, start)
	w, j := newWriter(t, spoolOf(t, recs), cfg)
	spooled := time.Now()
	drain(t, w, j, int64(n))
	drained := time.Now()
	ref := checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
	t.Logf("generated and spooled in %v, drained in %v, checked in %v",
		spooled.Sub(began).Round(time.Millisecond), drained.Sub(spooled).Round(time.Millisecond), time.Since(drained).Round(time.Millisecond))
	if ref.byAdjacency == 0 {
		t.Error("no hop was settled by the neighbour graph: the stream does not exercise disambiguation")
	}
}

// TestPathJobs_AcrossARestart_MatchesReference: a second writer process
// (its memory empty) takes over mid-transmission and gets reports again
// that the first one stored, and new ones twice in one batch: the new rows
// and the repeats are told apart (through the table for transmissions it
// did not see begin), the edges counted once.
func TestPathJobs_AcrossARestart_MatchesReference(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	n := streamSize(20000, 5000, 20000)
	recs, cfg := generatedRecords(t, 9, n, time.Date(2026, 10, 3, 8, 0, 0, 0, time.UTC))
	a, b := recs[:n*3/4], recs[n*3/4:]
	// After the restart come again the last reports the first process
	// stored, then the first new ones twice, in one batch.
	b = append(append(append(append([]writer.Record(nil), a[len(a)-300:]...), b[:300]...), b[:300]...), b[300:]...)
	dir := filepath.Join(t.TempDir(), "spool")
	for _, part := range [][]writer.Record{a, b} {
		writertest.AppendToSpool(t, dir, part, spool.Options{})
		w, j := newWriter(t, openSource(t, dir), cfg)
		drain(t, w, j, int64(len(part)))
	}
	writertest.CheckForeignKeys(t, cfg.DBPath)
	checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
}
