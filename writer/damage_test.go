package writer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/stats"
)

// TestWriter_DamagedSpool_ExactCountsInStatsAndMetrics: one segment cut to
// half its size, a bit flipped in the middle of another. The stats file's
// meshingest.spool.reader and the metrics give the spool reader's counts:
// records read, quarantined, lost and set aside, exact where a segment's
// trailer tells, and records_lost_unbounded where it does not (the cut
// segment), so a truncated segment's loss is never shown as nothing.
func TestWriter_DamagedSpool_ExactCountsInStatsAndMetrics(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	corpus := writertest.CorpusRecords(t)
	for i := range 6 { // a segment each: low-wear groups share one until Close seals it
		writertest.AppendToSpool(t, dir, corpus[i*len(corpus)/6:(i+1)*len(corpus)/6], spool.Options{Profile: spool.ProfileLowWear})
	}
	segs, err := spool.ListSegments(dir)
	if err != nil || len(segs) < 5 {
		t.Fatalf("%d segments (%v), want at least 5", len(segs), err)
	}
	truncated := filepath.Join(dir, segs[1].Name)
	fi, _ := os.Stat(truncated)
	if err := os.Truncate(truncated, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	flipped := filepath.Join(dir, segs[3].Name)
	b, _ := os.ReadFile(flipped)
	b[len(b)/2] ^= 0x08
	os.WriteFile(flipped, b, 0o600)

	r := writertest.OpenSpool(t, dir)
	defer r.Close()
	reg := shared.NewRegistry()
	w := drain(t, NewSpoolSource(r), Options{Config: cfg, Registry: reg}, 1)

	raw, err := os.ReadFile(cfg.Writer.StatsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f stats.File
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	st := f.Meshingest.Spool.Reader
	if st == nil {
		t.Fatalf("no meshingest.spool.reader in the stats file:\n%s", raw)
	}
	if st.SegmentsDamaged != 2 {
		t.Errorf("segments_damaged %d, want 2", st.SegmentsDamaged)
	}
	if st.RecordsRead != uint64(w.Stats().Messages.Load()) {
		t.Errorf("records_read %d, but %d records were written", st.RecordsRead, w.Stats().Messages.Load())
	}
	// The cut segment lost its trailer, so its loss is known only as a
	// lower bound, and the stats file says so; the flipped one's counts are
	// exact.
	if !st.RecordsLostUnbounded || st.RecordsQuarantined == 0 {
		t.Errorf("records_lost_unbounded %v, records_quarantined %d: want true and at least 1", st.RecordsLostUnbounded, st.RecordsQuarantined)
	}
	accounted := st.RecordsRead + st.RecordsQuarantined + st.RecordsLost + st.RecordsSetAside
	if accounted > uint64(len(corpus)) || (!st.RecordsLostUnbounded && accounted != uint64(len(corpus))) {
		t.Errorf("read %d + quarantined %d + lost %d (unbounded %v) + set aside %d = %d of %d records",
			st.RecordsRead, st.RecordsQuarantined, st.RecordsLost, st.RecordsLostUnbounded, st.RecordsSetAside, accounted, len(corpus))
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "meshingest_writer_spool_") {
			got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	for name, want := range map[string]uint64{
		"meshingest_writer_spool_records_lost_total":        st.RecordsLost,
		"meshingest_writer_spool_records_quarantined_total": st.RecordsQuarantined,
		"meshingest_writer_spool_segments_damaged_total":    st.SegmentsDamaged,
		"meshingest_writer_spool_records_read_total":        st.RecordsRead,
	} {
		if got[name] != float64(want) {
			t.Errorf("%s = %v, want %d", name, got[name], want)
		}
	}
}
