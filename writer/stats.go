package writer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/stats"
)

// Stats are the writer's counters (package stats: the stats file and the
// metrics are built from them) and each spool's own.
type Stats struct {
	*stats.Counters

	mu     sync.Mutex
	spools []*SpoolStats
}

// NewStats returns zeroed counters, for Options.Stats. Every drop reason
// is there from the start, at 0 (DropReasons).
func NewStats() *Stats { return &Stats{Counters: stats.New(DropReasons())} }

// SpoolStats are one spool's counters and its depth.
type SpoolStats struct {
	*stats.Spool
	// depth is the spool's Source.Depth (nil or -1: unknown), set by the
	// drain loop when it opens the spool and read by the stats file's
	// and the metrics' goroutines.
	depth atomic.Pointer[func() int64]
	// gone: its folder was replaced under the writer, so its depth is no
	// longer known (the folder's is the new spool's).
	gone atomic.Bool
}

// addBatch counts a committed ingest batch.
func (s *Stats) addBatch(c *batchCounts, sources map[string]struct{}, lastReceived time.Time, wait, hold time.Duration, now time.Time) {
	s.AddBatch(stats.Batch{
		Messages: c.messages, TxInserted: c.txInserted, TxDupes: c.txDupes, ObsWritten: c.obsWritten,
		NodeUpserts: c.nodeUpserts, ObserverUpserts: c.observerUpserts, SigDrops: c.sigDrops,
		MetricsRows: c.metricsRows, NeighborReports: c.neighborReports, Drops: c.drops,
	}, sources, lastReceived, wait, hold, now)
}

// spoolStats returns the counters of spool id (in folder dir), made on
// first use.
func (s *Stats) spoolStats(id spool.Identity, dir string) *SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.spools {
		if st.ID == id {
			return st
		}
	}
	st := &SpoolStats{Spool: &stats.Spool{ID: id, Dir: dir}}
	s.spools = append(s.spools, st)
	return st
}

func (st *SpoolStats) committed(records, otherCopies, late int, lastReceived time.Time) {
	st.Committed(records, otherCopies, late, lastReceived)
}

func (s *Stats) spoolFigures(now time.Time) []stats.SpoolFigures {
	s.mu.Lock()
	list := append([]*SpoolStats(nil), s.spools...)
	s.mu.Unlock()
	out := make([]stats.SpoolFigures, 0, len(list))
	for _, st := range list {
		depth := int64(-1)
		if f := st.depth.Load(); f != nil && !st.gone.Load() {
			depth = (*f)()
		}
		out = append(out, st.Figures(now, depth))
	}
	return out
}

// snapshot builds the stats file. rx is the receiver's snapshot (nil when
// stale or missing); depth is the spool depth, negative when unknown.
func (s *Stats) snapshot(now time.Time, rx *shared.ReceiverSnapshot, depth int64, trouble dbfile.Snapshot) stats.File {
	return s.Snapshot(now, rx, depth, trouble, s.spoolFigures(now))
}
