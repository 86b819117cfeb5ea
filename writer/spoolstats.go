package writer

import (
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/prometheus/client_golang/prometheus"
)

// SpoolStats are one spool's figures: with receiver instances, each
// receiver's share of what was written.
type SpoolStats struct {
	id  spool.Identity
	dir string
	// depth is the spool's Source.Depth, -1 unknown; set by the writer.
	depth func() int64

	// Records is the records committed from the spool; OtherCopies those
	// of them recognised as copies of publications another receiver's
	// spool supplied (applied: Records - OtherCopies).
	Records     atomic.Int64
	OtherCopies atomic.Int64
	// Late is the copies among OtherCopies recognised outside the dedup
	// window: a receiver that resumed after a freeze and read what the
	// broker had buffered for it, or whose records were sealed late.
	Late           atomic.Int64
	LastReceivedNs atomic.Int64 // receive time of its last record committed
	// gone: its folder was replaced under the writer, so its depth is no
	// longer known (the folder's is the new spool's).
	gone atomic.Bool
}

// spoolStats returns the counters of spool id (in folder dir), made on
// first use.
func (s *Stats) spoolStats(id spool.Identity, dir string) *SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.spools {
		if st.id == id {
			return st
		}
	}
	st := &SpoolStats{id: id, dir: dir, depth: func() int64 { return -1 }}
	s.spools = append(s.spools, st)
	return st
}

func (st *SpoolStats) committed(records, otherCopies, late int, lastReceived time.Time) {
	st.Records.Add(int64(records))
	st.OtherCopies.Add(int64(otherCopies))
	st.Late.Add(int64(late))
	st.LastReceivedNs.Store(lastReceived.UnixNano())
}

// SpoolFigures is one spool's entry in the stats file's meshingest.spools.
type SpoolFigures struct {
	Identity string `json:"identity"`
	Dir      string `json:"dir,omitempty"`
	// DepthRecords is what it holds unwritten, -1 unknown.
	DepthRecords int64 `json:"depth_records"`
	// LagSeconds is now minus the receive time of its last record
	// written: it grows while its receiver is down.
	LagSeconds     float64 `json:"lag_seconds"`
	RecordsApplied int64   `json:"records_applied"`
	// OtherReceiverCopies are its records recognised as copies of
	// publications another receiver's spool supplied first.
	OtherReceiverCopies int64 `json:"other_receiver_copies"`
	// LateCopies are the copies among OtherReceiverCopies recognised
	// outside the dedup window (a receiver resumed after a freeze).
	LateCopies int64 `json:"late_copies"`
}

func (st *SpoolStats) figures(now time.Time) SpoolFigures {
	f := SpoolFigures{Identity: st.id.String(), Dir: st.dir, DepthRecords: -1}
	if !st.gone.Load() {
		f.DepthRecords = st.depth()
	}
	copies := st.OtherCopies.Load()
	f.RecordsApplied, f.OtherReceiverCopies, f.LateCopies = st.Records.Load()-copies, copies, st.Late.Load()
	if ns := st.LastReceivedNs.Load(); ns != 0 {
		f.LagSeconds = max(now.Sub(time.Unix(0, ns)).Seconds(), 0)
	}
	return f
}

func (s *Stats) spoolFigures(now time.Time) []SpoolFigures {
	s.mu.Lock()
	list := append([]*SpoolStats(nil), s.spools...)
	s.mu.Unlock()
	out := make([]SpoolFigures, 0, len(list))
	for _, st := range list {
		out = append(out, st.figures(now))
	}
	return out
}

// spoolCollector exposes the figures of each spool, labelled with its
// identity and folder name.
type spoolCollector struct{ s *Stats }

var (
	spoolLabels       = []string{"spool", "folder"}
	descSpoolDepth    = prometheus.NewDesc("meshingest_writer_spool_records_unwritten", "Records a spool holds unwritten (-1 unknown), per spool.", spoolLabels, nil)
	descSpoolLag      = prometheus.NewDesc("meshingest_writer_spool_lag_seconds", "Now minus the receive time of the last record written from a spool.", spoolLabels, nil)
	descSpoolApplied  = prometheus.NewDesc("meshingest_writer_spool_records_applied_total", "Records applied from a spool (not another receiver's copy).", spoolLabels, nil)
	descSpoolCopies   = prometheus.NewDesc("meshingest_writer_spool_other_receiver_copies_total", "Records of a spool recognised as copies another receiver's spool supplied.", spoolLabels, nil)
	descSpoolLate     = prometheus.NewDesc("meshingest_writer_spool_late_copies_total", "Copies of a spool recognised as another receiver's outside the dedup window (a receiver resumed after a freeze).", spoolLabels, nil)
	spoolDescriptions = []*prometheus.Desc{descSpoolDepth, descSpoolLag, descSpoolApplied, descSpoolCopies, descSpoolLate}
)

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range spoolDescriptions {
		ch <- d
	}
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.s.spoolFigures(time.Now()) {
		labels := []string{f.Identity, filepath.Base(f.Dir)}
		ch <- prometheus.MustNewConstMetric(descSpoolDepth, prometheus.GaugeValue, float64(f.DepthRecords), labels...)
		ch <- prometheus.MustNewConstMetric(descSpoolLag, prometheus.GaugeValue, f.LagSeconds, labels...)
		ch <- prometheus.MustNewConstMetric(descSpoolApplied, prometheus.CounterValue, float64(f.RecordsApplied), labels...)
		ch <- prometheus.MustNewConstMetric(descSpoolCopies, prometheus.CounterValue, float64(f.OtherReceiverCopies), labels...)
		ch <- prometheus.MustNewConstMetric(descSpoolLate, prometheus.CounterValue, float64(f.LateCopies), labels...)
	}
}
