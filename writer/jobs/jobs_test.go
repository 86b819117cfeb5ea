package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/stats"
)

// corpusDatabase drains the real capture into a new database and returns
// its configuration, the writer stopped.
func corpusDatabase(t *testing.T) *cfgAndRecords {
	t.Helper()
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	drainRecords(t, cfg, recs)
	return &cfgAndRecords{cfg: cfg, recs: recs}
}

type cfgAndRecords struct {
	cfg  *shared.Config
	recs []writer.Record
}

// runWriterUntil runs a writer and the jobs over an empty spool (the tasks
// still run) until done reports true, then stops it; it returns the jobs
// and their log.
func runWriterUntil(t *testing.T, cfg *shared.Config, what string, done func(db *sql.DB) bool) (*Jobs, string) {
	t.Helper()
	w, j, log := newWriterLog(t, spoolOf(t, nil), cfg)
	db := writertest.OpenRaw(t, cfg.DBPath)
	writertest.RunUntil(t, what, 60*time.Second, w.Run, func() bool { return done(db) })
	return j, log()
}

// TestBackfillTask_NewDatabase_Silent: on a database the writer created,
// the backfills are recorded done without looking at the rows, and say
// nothing (they used to announce a backfill of every column and finish
// with 0 rows).
func TestBackfillTask_NewDatabase_Silent(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	w, j, log := newWriterLog(t, spoolOf(t, recs), cfg)
	db := writertest.OpenRaw(t, cfg.DBPath)
	writertest.RunUntil(t, "the capture and the backfills", time.Minute, w.Run, func() bool {
		return w.Stats().Messages.Load() >= int64(len(recs)) && w.Stats().CaughtUp.Load() && j.settled() &&
			writertest.Count(t, db, `SELECT COUNT(*) FROM _async_migrations WHERE status = 'done' AND name IN (?, ?, ?, ?)`,
				backfillTxLastSeen, backfillPathJSON, backfillFromPubkey, backfillDefaultScope) == 4
	})
	if strings.Contains(log(), `"job":"backfill"`) {
		t.Errorf("the backfills said something on a new database:\n%s", log())
	}
}

func nodeKeys(t testing.TB, db *sql.DB, table string, n int) []string {
	t.Helper()
	rows, err := db.Query(`SELECT public_key FROM `+table+` ORDER BY public_key LIMIT ?`, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	return keys
}

func writeJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPruneTask_Requests_DeletedAndAnswered: the server's prune requests
// are executed and answered with exact counts, malformed ones are
// answered with an error, and one whose name is not an id is set aside.
func TestPruneTask_Requests_DeletedAndAnswered(t *testing.T) {
	c := corpusDatabase(t)
	db := writertest.OpenRaw(t, c.cfg.DBPath)
	before := writertest.Count(t, db, `SELECT COUNT(*) FROM nodes`)
	victims := nodeKeys(t, db, "nodes", 3)
	dir := filepath.Join(filepath.Dir(c.cfg.DBPath), PruneDirName)
	requested := time.Date(2026, 3, 29, 18, 0, 0, 0, time.UTC)
	// 3 nodes that exist (one in upper case, as a server might send it)
	// and 1200 that do not: three steps of 500 keys.
	keys := []string{victims[0], strings.ToUpper(victims[1]), victims[2]}
	for i := 0; i < 1200; i++ {
		keys = append(keys, strings.Repeat("ee", 31)+string("0123456789abcdef"[i%16])+string("0123456789abcdef"[i/16%16]))
	}
	writeJSONFile(t, filepath.Join(dir, "request-00ab12.json"), PruneRequest{ID: "00ab12", RequestedAt: requested, Reason: "geo-prune", Pubkeys: keys})
	os.WriteFile(filepath.Join(dir, "request-00ab13.json"), []byte(`{"id": "00ab13", "pubkeys": [`), 0o644)
	writeJSONFile(t, filepath.Join(dir, "request-00ab14.json"), PruneRequest{ID: "ffff", Pubkeys: []string{victims[0]}})
	writeJSONFile(t, filepath.Join(dir, "request-x.y.json"), PruneRequest{ID: "x.y"})

	j, _ := runWriterUntil(t, c.cfg, "prune requests", func(*sql.DB) bool {
		_, err1 := os.Stat(filepath.Join(dir, "result-00ab14.json"))
		_, err2 := os.Stat(filepath.Join(dir, "request-x.y.json.rejected"))
		return err1 == nil && err2 == nil
	})

	var res PruneResult
	readJSONFile(t, filepath.Join(dir, "result-00ab12.json"), &res)
	if res.ID != "00ab12" || !res.RequestedAt.Equal(requested) || res.Deleted != 3 || res.Error != "" || res.CompletedAt.IsZero() {
		t.Errorf("result of the good request: %+v", res)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM nodes`); n != before-3 {
		t.Errorf("%d nodes after the prune, want %d", n, before-3)
	}
	for _, k := range victims {
		if writertest.Count(t, db, `SELECT COUNT(*) FROM nodes WHERE public_key = ?`, k) != 0 {
			t.Errorf("node %s still there", k)
		}
		if j.paths.index.remove(k) {
			t.Errorf("node %s still in the resolved_path index", k)
		}
	}
	var bad PruneResult
	readJSONFile(t, filepath.Join(dir, "result-00ab13.json"), &bad)
	if bad.ID != "00ab13" || bad.Error == "" || bad.Deleted != 0 {
		t.Errorf("result of the malformed request: %+v", bad)
	}
	readJSONFile(t, filepath.Join(dir, "result-00ab14.json"), &bad)
	if !strings.Contains(bad.Error, "does not match") || bad.Deleted != 0 {
		t.Errorf("result of the request whose id does not match its name: %+v", bad)
	}
	for _, id := range []string{"00ab12", "00ab13", "00ab14"} {
		if _, err := os.Stat(filepath.Join(dir, "request-"+id+".json")); !os.IsNotExist(err) {
			t.Errorf("request %s still there (%v)", id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "request-x.y.json.rejected")); err != nil {
		t.Errorf("the request named with an invalid id was not set aside: %v", err)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key LIKE 'prune_request:%'`); n != 0 {
		t.Errorf("%d prune progress rows left", n)
	}
}

func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestMultibyteTask_Snapshot_AppliedToNodesAndInactiveNodes: confirmed and
// suspected verdicts reach nodes (or inactive_nodes for a node that is
// only there), "unknown" never overwrites, and a new snapshot is applied
// again.
func TestMultibyteTask_Snapshot_AppliedToNodesAndInactiveNodes(t *testing.T) {
	c := corpusDatabase(t)
	db := writertest.OpenRaw(t, c.cfg.DBPath)
	keys := nodeKeys(t, db, "nodes", 4)
	// keys[3] is retired to inactive_nodes; keys[2] already has a verdict.
	mustExec(t, db, `INSERT INTO inactive_nodes SELECT * FROM nodes WHERE public_key = ?`, keys[3])
	mustExec(t, db, `DELETE FROM nodes WHERE public_key = ?`, keys[3])
	mustExec(t, db, `UPDATE nodes SET multibyte_sup = 2, multibyte_evidence = 'earlier' WHERE public_key = ?`, keys[2])
	snap := filepath.Join(filepath.Dir(c.cfg.DBPath), MultibyteSnapshotPath)
	writeJSONFile(t, snap, map[string]any{"writtenAt": "2026-03-29T18:00:00Z", "entries": []any{
		map[string]any{"public_key": keys[0], "status": "confirmed", "evidence": "path 2-byte from 3 observers"},
		map[string]any{"public_key": strings.ToUpper(keys[1]), "status": "suspected", "evidence": map[string]any{"hops": 2}},
		map[string]any{"public_key": keys[2], "status": "unknown", "evidence": nil},
		map[string]any{"public_key": keys[3], "status": "confirmed"},
		map[string]any{"public_key": "ab", "status": "bogus"},
	}})
	done := func(db *sql.DB) bool {
		var p multibyteProgress
		var raw string
		if db.QueryRow(`SELECT value FROM meshingest_state WHERE key = ?`, multibyteStateKey).Scan(&raw) != nil {
			return false
		}
		json.Unmarshal([]byte(raw), &p)
		fi, _ := os.Stat(snap)
		return p.Done && p.File == snapshotIdentity(fi)
	}
	runWriterUntil(t, c.cfg, "multibyte snapshot", done)

	check := func(table, key string, sup int64, evidence string) {
		t.Helper()
		var s int64
		var e sql.NullString
		if err := db.QueryRow(`SELECT multibyte_sup, multibyte_evidence FROM `+table+` WHERE public_key = ?`, key).Scan(&s, &e); err != nil {
			t.Fatalf("%s %s: %v", table, key, err)
		}
		if s != sup || e.String != evidence {
			t.Errorf("%s %s: multibyte_sup %d evidence %q, want %d %q", table, key, s, e.String, sup, evidence)
		}
	}
	check("nodes", keys[0], 2, "path 2-byte from 3 observers")
	check("nodes", keys[1], 1, `{"hops":2}`)
	check("nodes", keys[2], 2, "earlier")
	check("inactive_nodes", keys[3], 2, "")

	// The server's next snapshot changes a verdict.
	time.Sleep(10 * time.Millisecond) // a new modification time
	writeJSONFile(t, snap, map[string]any{"writtenAt": "2026-03-29T19:00:00Z", "entries": []any{
		map[string]any{"public_key": keys[0], "status": "suspected", "evidence": "fewer"},
	}})
	runWriterUntil(t, c.cfg, "second multibyte snapshot", done)
	check("nodes", keys[0], 1, "fewer")
	check("nodes", keys[1], 1, `{"hops":2}`)
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestBackfillTask_OldDatabase_Filled: a database whose rows predate
// transmissions.last_seen, path_json, from_pubkey and default_scope gets
// them back, in the background, tracked in _async_migrations, and the
// rows each backfill changed are counted in the stats.
func TestBackfillTask_OldDatabase_Filled(t *testing.T) {
	c := corpusDatabase(t)
	db := writertest.OpenRaw(t, c.cfg.DBPath)
	want := func(q string) map[int64]string {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[int64]string{}
		for rows.Next() {
			var id int64
			var v sql.NullString
			rows.Scan(&id, &v)
			m[id] = v.String
		}
		return m
	}
	lastSeen := want(`SELECT id, last_seen FROM transmissions`)
	paths := want(`SELECT id, path_json FROM observations`)
	froms := want(`SELECT id, from_pubkey FROM transmissions WHERE payload_type = 4`)
	// One node's adverts were heard through a transport region.
	scoped := nodeKeys(t, db, "nodes", 1)[0]
	mustExec(t, db, `UPDATE transmissions SET scope_name = '#bayarea' WHERE from_pubkey = ?`, scoped)
	mustExec(t, db, `UPDATE nodes SET default_scope = NULL`)

	// What an old ingestor left.
	mustExec(t, db, `UPDATE transmissions SET last_seen = 0 WHERE id % 3 = 0`)
	mustExec(t, db, `UPDATE observations SET path_json = NULL WHERE id % 2 = 0`)
	mustExec(t, db, `UPDATE observations SET path_json = '' WHERE id % 5 = 1`)
	mustExec(t, db, `UPDATE transmissions SET from_pubkey = NULL`)
	mustExec(t, db, `UPDATE _async_migrations SET status = 'pending_async', ended_at = NULL WHERE name = ?`, backfillTxLastSeen)
	mustExec(t, db, `DELETE FROM _async_migrations WHERE name IN (?, ?, ?)`, backfillPathJSON, backfillFromPubkey, backfillDefaultScope)
	// And no row of this version's jobs: they never saw the database.
	mustExec(t, db, `DELETE FROM meshingest_state WHERE key = ?`, rederiveStateKey)
	brokenPaths := writertest.Count(t, db, `SELECT COUNT(*) FROM observations WHERE path_json IS NULL OR path_json = ''`)

	wantCounts := map[string]int64{
		backfillTxLastSeen: int64((len(lastSeen) + 2) / 3), backfillPathJSON: brokenPaths,
		backfillFromPubkey: int64(len(froms)), backfillDefaultScope: 1,
	}
	// The stats file's figures, written every 20 ms and once more at the
	// stop. They count only what is committed, so they trail the last
	// committed step by one.
	counted := func() map[string]int64 {
		var f stats.File
		b, _ := os.ReadFile(c.cfg.Writer.StatsFile)
		json.Unmarshal(b, &f)
		return f.BackfillUpdates
	}
	_, log := runWriterUntil(t, c.cfg, "backfills", func(db *sql.DB) bool {
		return writertest.Count(t, db, `SELECT COUNT(*) FROM _async_migrations WHERE status = 'done' AND name IN (?, ?, ?, ?)`,
			backfillTxLastSeen, backfillPathJSON, backfillFromPubkey, backfillDefaultScope) == 4 &&
			counted()[backfillDefaultScope] > 0
	})
	for _, name := range []string{backfillPathJSON, backfillFromPubkey, backfillDefaultScope} {
		if !strings.Contains(log, `"backfill":"`+name+`","message":"database older than this column`) {
			t.Errorf("no log line saying backfill %s started", name)
		}
	}

	for name, c := range map[string]struct {
		want map[int64]string
		q    string
	}{
		"last_seen":   {lastSeen, `SELECT id, last_seen FROM transmissions`},
		"path_json":   {paths, `SELECT id, path_json FROM observations`},
		"from_pubkey": {froms, `SELECT id, from_pubkey FROM transmissions WHERE payload_type = 4`},
	} {
		got := want(c.q)
		for id, v := range c.want {
			if got[id] != v {
				t.Errorf("%s of row %d: %q, want %q", name, id, got[id], v)
			}
		}
	}
	var scope sql.NullString
	db.QueryRow(`SELECT default_scope FROM nodes WHERE public_key = ?`, scoped).Scan(&scope)
	if scope.String != "#bayarea" {
		t.Errorf("default_scope of the scoped node: %q", scope.String)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM nodes WHERE default_scope IS NOT NULL`); n != 1 {
		t.Errorf("%d nodes with a default_scope, want 1", n)
	}
	got := counted()
	for name, n := range wantCounts {
		if got[name] != n {
			t.Errorf("stats count %d rows for %s, want %d", got[name], name, n)
		}
	}
}

// watchedTask fails the steps whose number is in fail, and records what
// the writer told it after each.
type watchedTask struct {
	steps int
	fail  map[int]bool
	ended []bool
	mu    sync.Mutex
}

func (t *watchedTask) Name() string            { return "watched" }
func (t *watchedTask) Interval() time.Duration { return time.Millisecond }

func (t *watchedTask) Step(ctx context.Context, tx writer.Tx, now time.Time) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.steps++
	if _, err := tx.ExecContext(ctx, `INSERT INTO meshingest_state (key, value) VALUES (?, 'x')`, fmt.Sprint("watched:", t.steps)); err != nil {
		return false, err
	}
	if t.fail[t.steps] {
		return false, errors.New("this step fails")
	}
	return true, nil
}

func (t *watchedTask) StepEnded(committed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = append(t.ended, committed)
}

// TestWriter_TaskStep_ToldWhetherItCommitted: a Task that keeps in memory
// what its steps wrote (writer.StepWatcher, which the jobs' tasks are) is
// told after each step whether its transaction committed; the rows of the
// failed step are not in the table.
func TestWriter_TaskStep_ToldWhetherItCommitted(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	task := &watchedTask{fail: map[int]bool{2: true}}
	// Tasks run once a record gave the writer its clock.
	w, err := writer.New(spoolOf(t, writertest.CorpusRecords(t)[:3]), writer.Options{Config: cfg, Tasks: []writer.Task{task}})
	if err != nil {
		t.Fatal(err)
	}
	db := writertest.OpenRaw(t, cfg.DBPath)
	// The failed step is retried a minute later: two steps are enough.
	writertest.RunUntil(t, "two steps", time.Minute, w.Run, func() bool {
		task.mu.Lock()
		defer task.mu.Unlock()
		return len(task.ended) >= 2
	})
	if got := fmt.Sprint(task.ended); got != "[true false]" {
		t.Errorf("the writer said %s after the steps, want [true false]", got)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key = 'watched:1'`); n != 1 {
		t.Error("the first step's row was not committed")
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key = 'watched:2'`); n != 0 {
		t.Error("the failed step's row was committed")
	}
}
