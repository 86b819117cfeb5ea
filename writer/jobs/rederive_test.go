package jobs

import (
	"database/sql"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/rs/zerolog"
)

// settle runs a writer with the jobs over an empty spool until they have
// nothing left to derive again, and returns the jobs' log.
func settle(t *testing.T, cfg *shared.Config) string {
	t.Helper()
	w, j, log := newWriterLog(t, spoolOf(t, nil), cfg)
	writertest.RunUntil(t, "the jobs to settle", 5*time.Minute, w.Run, func() bool { return w.Stats().CaughtUp.Load() && j.settled() })
	return log()
}

func jobsOff(cfg *shared.Config) *shared.Config {
	c := *cfg
	off := false
	c.Writer.Jobs = &off
	return &c
}

// TestRederive_ObservationsTheJobsDidNotSee_AllDerivedOnce: a database
// that got observations with writer.jobs off (or from another program, or
// before this rule) has every observation derived once when the jobs run
// again; one they saw throughout is not read again.
func TestRederive_ObservationsTheJobsDidNotSee_AllDerivedOnce(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	dir := filepath.Join(t.TempDir(), "spool")
	half := len(recs) / 2
	for _, part := range []struct {
		recs []writer.Record
		cfg  *shared.Config
	}{{recs[:half], cfg}, {recs[half:], jobsOff(cfg)}} {
		writertest.AppendToSpool(t, dir, part.recs, spool.Options{})
		w, _ := newWriter(t, openSource(t, dir), part.cfg)
		drain(t, w, nil, int64(len(part.recs)))
	}
	log := settle(t, cfg)
	if !strings.Contains(log, "observations the jobs did not derive") || !strings.Contains(log, `"all":true`) {
		t.Errorf("no full pass logged:\n%s", log)
	}
	checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
	if log := settle(t, cfg); strings.Contains(log, "derived again") {
		t.Errorf("a settled database was derived again:\n%s", log)
	}
}

// TestRederive_DatabaseWithoutTheJobs_AllDerivedOnce: the same for a
// database whose every row was written with the jobs off (as an older
// meshingest or CoreScope's ingestor left it: edges and paths by other
// rules).
func TestRederive_DatabaseWithoutTheJobs_AllDerivedOnce(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	w, _ := newWriter(t, spoolOf(t, recs), jobsOff(cfg))
	drain(t, w, nil, int64(len(recs)))
	db := writertest.OpenRaw(t, cfg.DBPath)
	// Rows the rule does not give: an edge of another case, one of
	// unknown ends, paths resolved otherwise.
	mustExec(t, db, `INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES ('AA', 'BB', 3, '2026-03-29T17:00:00Z'), ('x', 'y', 1, NULL)`)
	mustExec(t, db, `UPDATE observations SET resolved_path = '["nobody"]' WHERE id % 7 = 0`)
	settle(t, cfg)
	checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
}

// TestRederive_PrunedNode_PrefixUniqueAgain: a prune request removes
// hrkG2Repeater (1f1f…); the hop "1F" is then Key Route H-BRK's alone, and
// the edges and paths of the observations through it follow.
func TestRederive_PrunedNode_PrefixUniqueAgain(t *testing.T) {
	c := corpusDatabase(t)
	const hrkG2 = "1f1f0f9886d7b335e836e3b224905c8c51642c6033dff0dc038e9f147fbf621c"
	before := storedEdges(t, c.cfg.DBPath)
	dir := filepath.Join(filepath.Dir(c.cfg.DBPath), PruneDirName)
	writeJSONFile(t, filepath.Join(dir, "request-00cd01.json"), PruneRequest{ID: "00cd01", Reason: "test", Pubkeys: []string{strings.ToUpper(hrkG2)}})
	runWriterUntil(t, c.cfg, "the prune and its re-derivation", func(db *sql.DB) bool {
		_, err := os.Stat(filepath.Join(dir, "result-00cd01.json"))
		return err == nil && writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state
			WHERE key = 'paths_rederive' AND value LIKE '%"keys":[]%' AND value NOT LIKE '%"full":true%'`) == 1
	})
	ref := checkPathJobs(t, c.cfg.DBPath, c.cfg.NeighborEdgesDays())
	after := storedEdges(t, c.cfg.DBPath)
	if maps.Equal(before, after) || len(ref.edges) <= len(before) {
		t.Errorf("%d edges before the prune, %d after: the shared prefix did not become unique", len(before), len(after))
	}
}

// TestPathJobs_BatchSizes_SameTables: the same stream drained in batches of
// 40 records and in the default batches gives the same tables, the rule's.
func TestPathJobs_BatchSizes_SameTables(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	start := time.Date(2026, 10, 4, 8, 0, 0, 0, time.UTC)
	var tables []map[string]string
	n := streamSize(8000, 1200, 3000) // under -race, 30 batches of 40
	for _, batch := range []int{40, 0} {
		recs, cfg := generatedRecords(t, 11, n, start)
		cfg.Writer.BatchMaxRecords = batch
		w, j := newWriter(t, spoolOf(t, recs), cfg)
		drain(t, w, j, int64(len(recs)))
		checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
		tables = append(tables, dumpPathTables(t, cfg.DBPath))
	}
	if !maps.Equal(tables[0], tables[1]) {
		n := 0
		for k, v := range tables[0] {
			if tables[1][k] != v && n < 5 {
				t.Errorf("%s: %q in batches of 40, %q in the default batches", k, v, tables[1][k])
				n++
			}
		}
		t.Errorf("the tables differ (%d and %d rows)", len(tables[0]), len(tables[1]))
	}
}

// dumpPathTables is neighbor_edges and every resolved_path, keyed by what
// identifies them whatever the row ids.
func dumpPathTables(t *testing.T, path string) map[string]string {
	t.Helper()
	db := writertest.OpenRaw(t, path)
	out := map[string]string{}
	for _, q := range []string{
		`SELECT 'edge ' || node_a || ' ' || node_b, count || ' ' || last_seen FROM neighbor_edges`,
		`SELECT 'path ' || t.hash || ' ' || COALESCE(b.id, '') || ' ' || COALESCE(o.path_json, ''), COALESCE(o.resolved_path, 'NULL')
			FROM observations o JOIN transmissions t ON t.id = o.transmission_id LEFT JOIN observers b ON b.rowid = o.observer_idx`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k, v string
			rows.Scan(&k, &v)
			out[k] = v
		}
		rows.Close()
	}
	return out
}

// TestPathJobs_StoppedBeforeTheRederivation_NextRunFinishesIt: a writer
// stopped as soon as it caught up (before, or in the middle of, the pass
// for the nodes it learned) leaves the keys in the database; the next
// writer derives them, and the tables are the rule's.
func TestPathJobs_StoppedBeforeTheRederivation_NextRunFinishesIt(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	n := streamSize(12000, 4000, 12000)
	recs, cfg := generatedRecords(t, 5, n, time.Date(2026, 10, 5, 8, 0, 0, 0, time.UTC))
	dir := filepath.Join(t.TempDir(), "spool")
	for i, part := range [][]writer.Record{recs[:n/2], recs[n/2:]} {
		writertest.AppendToSpool(t, dir, part, spool.Options{})
		w, j := newWriter(t, openSource(t, dir), cfg)
		if i == 0 {
			j = nil // stop without waiting for the jobs
		}
		drain(t, w, j, int64(len(part)))
	}
	checkPathJobs(t, cfg.DBPath, cfg.NeighborEdgesDays())
}

// TestRederive_LiveTraffic_PassesWaitForTheGap: under live traffic a pass
// starts at most rederiveLiveGap after the last one ended, so that nodes
// learned meanwhile are taken in one pass; the first pass, and any once
// batches have stopped for rederiveQuiet, start at once (tests and the
// harness wait for the jobs to settle after the traffic).
func TestRederive_LiveTraffic_PassesWaitForTheGap(t *testing.T) {
	p := newPathState(zerolog.Nop(), 7)
	now := time.Now()
	p.lastBatchAt = now.Add(-100 * time.Millisecond)
	if p.livePassWaits(now) {
		t.Error("the first pass waits")
	}
	p.lastPassEnd = now.Add(-time.Second)
	if !p.livePassWaits(now) {
		t.Error("a pass 1 s after the last, batches still coming, does not wait")
	}
	p.lastPassEnd = now.Add(-rederiveLiveGap - time.Second)
	if p.livePassWaits(now) {
		t.Errorf("a pass %v after the last waits", rederiveLiveGap+time.Second)
	}
	p.lastPassEnd, p.lastBatchAt = now.Add(-time.Second), now.Add(-rederiveQuiet-time.Second)
	if p.livePassWaits(now) {
		t.Error("a pass waits although no batch came for longer than rederiveQuiet")
	}
}
