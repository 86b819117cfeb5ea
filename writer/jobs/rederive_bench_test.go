package jobs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// The cost of deriving observations again (rederive.go), which the
// catch-up benchmark (writer.BenchmarkCatchUpJobs) does not see: it stops
// the writer once the backlog is drained, and the pass for the nodes the
// backlog taught runs after that.
//
//	go test -run '^$' -bench Rederive -benchtime 1x -timeout 60m -v ./writer/jobs/
//
// MESHINGEST_BENCH_MESSAGES sets the size of the loadgen stream (default
// 200,000 messages, about as many observations).

func benchMessages() int {
	if n, err := strconv.Atoi(os.Getenv("MESHINGEST_BENCH_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// passLog is the figures of the passes a log reports.
type passLog struct {
	Keys    int   `json:"keys"`
	All     bool  `json:"all"`
	Read    int64 `json:"observations_read"`
	Matched int64 `json:"observations_matched"`
	Edges   int   `json:"edges_written"`
	Paths   int64 `json:"paths_rewritten"`
	TookMs  int64 `json:"took_ms"`
}

func passes(log string) []passLog {
	var out []passLog
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "derived again for nodes learned or lost") {
			var p passLog
			json.Unmarshal([]byte(l), &p)
			out = append(out, p)
		}
	}
	return out
}

// BenchmarkRederive_AfterCatchUp drains a loadgen stream whose 300 nodes
// advertise at random times (most after observations through them) as a
// catch-up, and times the pass that follows it: from caught up to nothing
// left to derive again.
func BenchmarkRederive_AfterCatchUp(b *testing.B) {
	for i := 0; i < b.N; i++ {
		recs, cfg := generatedRecords(b, 77, benchMessages(), time.Date(2026, 10, 6, 8, 0, 0, 0, time.UTC))
		w, j, log := newWriterLog(b, spoolOf(b, recs), cfg)
		var drained, settled time.Time
		start := time.Now()
		writertest.RunUntil(b, "the catch-up and its pass", 60*time.Minute, w.Run, func() bool {
			if drained.IsZero() && w.Stats().Messages.Load() >= int64(len(recs)) && w.Stats().CaughtUp.Load() {
				drained = time.Now()
			}
			if !drained.IsZero() && j.settled() {
				settled = time.Now()
				return true
			}
			return false
		})
		obs := writertest.Count(b, writertest.OpenRaw(b, cfg.DBPath), `SELECT COUNT(*) FROM observations`)
		var read, matched, paths, took int64
		for _, p := range passes(log()) {
			read, matched, paths, took = read+p.Read, matched+p.Matched, paths+p.Paths, took+p.TookMs
		}
		b.ReportMetric(float64(obs), "observations")
		b.ReportMetric(drained.Sub(start).Seconds(), "s-catch-up")
		b.ReportMetric(settled.Sub(drained).Seconds(), "s-pass-after")
		b.ReportMetric(float64(took), "ms-in-passes")
		b.ReportMetric(float64(read), "rows-read")
		b.ReportMetric(float64(matched), "rows-matched")
		b.ReportMetric(float64(paths), "paths-rewritten")
	}
}

// BenchmarkRederive_OneNodeLost times the pass for one node a prune
// request removes from a database that heard the whole stream: the common
// case, a node learned or lost in a settled database (its first byte's
// hops are rows SQLite finds by LIKE on path_json).
func BenchmarkRederive_OneNodeLost(b *testing.B) {
	recs, cfg := generatedRecords(b, 78, benchMessages(), time.Date(2026, 10, 7, 8, 0, 0, 0, time.UTC))
	w, j := newWriter(b, spoolOf(b, recs), cfg)
	drain(b, w, j, int64(len(recs)))
	db := writertest.OpenRaw(b, cfg.DBPath)
	obs := writertest.Count(b, db, `SELECT COUNT(*) FROM observations`)
	keys := nodeKeys(b, db, "nodes", 1000)
	dir := filepath.Join(filepath.Dir(cfg.DBPath), PruneDirName)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("%06x", i+1)
		writeJSONFile(b, filepath.Join(dir, "request-"+id+".json"), PruneRequest{ID: id, Pubkeys: []string{keys[(i*37)%len(keys)]}})
		w, j, log := newWriterLog(b, spoolOf(b, nil), cfg)
		writertest.RunUntil(b, "the prune's pass", 10*time.Minute, w.Run, func() bool {
			return len(passes(log())) > 0 && j.settled()
		})
		p := passes(log())[0]
		b.ReportMetric(float64(obs), "observations")
		b.ReportMetric(float64(p.TookMs), "ms-pass")
		b.ReportMetric(float64(p.Read), "rows-read")
		b.ReportMetric(float64(p.Matched), "rows-matched")
		b.ReportMetric(float64(p.Paths), "paths-rewritten")
	}
}
