package writer

import (
	"context"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// TestRetention_StreamTime: with the receive time of the newest record 20
// days after the older ones, a retention pass moves the stale node to
// inactive_nodes, marks the stale observer inactive and deletes its
// metrics, and deletes old metrics and packets (with their observations),
// in small steps between batches.
func TestRetention_StreamTime(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	cfg.Retention = &shared.Retention{NodeDays: 7, ObserverDays: 14, MetricsDays: 15, PacketDays: 10}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	later := t0.Add(20 * 24 * time.Hour)
	meta := map[string]any{"status": "online", "origin": "x", "radio": "910,62.5,7,5"}
	recs := []Record{
		statusRecord(t0, obsA, meta, false),
		packetRecord(t0, obsA, corpusRaw(t, decoder.TypeAdvert), nil),
		packetRecord(t0, obsA, corpusRaw(t, decoder.TypeGrpTxt), nil),
		statusRecord(later, obsB, meta, false),
		packetRecord(later, obsB, corpusRaw(t, decoder.TypeReq), nil),
	}
	w, err := New(spoolOf(t, recs), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	db := writertest.OpenRaw(t, cfg.DBPath)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if w.Stats().Messages.Load() == int64(len(recs)) &&
			writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions`) == 1 &&
			writertest.Count(t, db, `SELECT COUNT(*) FROM inactive_nodes`) == 1 &&
			writertest.Count(t, db, `SELECT COUNT(*) FROM observer_metrics`) == 1 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, query string
		want        int64
	}{
		{"nodes", `SELECT COUNT(*) FROM nodes`, 0},
		{"inactive_nodes (with their counts)", `SELECT COUNT(*) FROM inactive_nodes WHERE advert_count = 1`, 1},
		{"inactive observers", `SELECT COUNT(*) FROM observers WHERE inactive = 1 AND id = '` + obsA + `'`, 1},
		{"active observers", `SELECT COUNT(*) FROM observers WHERE inactive = 0`, 1},
		{"metrics left (the recent observer's)", `SELECT COUNT(*) FROM observer_metrics WHERE observer_id = '` + obsB + `'`, 1},
		{"all metrics", `SELECT COUNT(*) FROM observer_metrics`, 1},
		{"transmissions left", `SELECT COUNT(*) FROM transmissions`, 1},
		{"observations left", `SELECT COUNT(*) FROM observations`, 1},
		{"orphan observations", `SELECT COUNT(*) FROM observations o LEFT JOIN transmissions t ON t.id = o.transmission_id WHERE t.id IS NULL`, 0},
	} {
		if got := writertest.Count(t, db, c.query); got != c.want {
			t.Errorf("%s = %d, want %d", c.what, got, c.want)
		}
	}
	if p, ok := w.Stats().snapshot(time.Now(), nil, 0, dbfile.Snapshot{}).WriterPerf["retention"]; !ok || p.Count < 5 {
		t.Errorf("retention ran %d steps, want several small ones", p.Count)
	}
}
