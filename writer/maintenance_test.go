package writer

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// The procedures of MAINTENANCE.md, done to real writer processes.

// TestMaintenance_StopVacuumMigrateStart: stop the writer while the
// receiver keeps spooling, VACUUM, back up, apply a schema change of the
// kind a CoreScope upgrade makes, start the writer: it catches up and the
// database is what an uninterrupted run gives.
func TestMaintenance_StopVacuumMigrateStart(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	n := 6000
	if long() {
		n = 12000
	}
	recs := faultTraffic(t, n)
	partA, partB := recs[:n/2], recs[n/2:]
	want, _ := referenceRun(t, recs)

	p := newProcessSetup(t, t.TempDir(), nil)
	writertest.AppendToSpool(t, p.Spool, partA, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd := p.start(t)
	p.waitDrained(t, 5*time.Minute)
	stopProcess(t, cmd) // 1. stop the writer

	// 2. the receiver keeps spooling while the writer is stopped
	writertest.AppendToSpool(t, p.Spool, partB, spool.Options{SegmentMaxBytes: 1 << 20})

	// 3. maintenance: VACUUM (observer rowids must survive it: observations
	// reference them), a backup, a schema change
	db := writertest.OpenRaw(t, p.DB)
	rowids := observerRowids(t, p.DB)
	backup := filepath.Join(t.TempDir(), "backup.db")
	for _, q := range []string{
		`VACUUM`,
		`VACUUM INTO '` + backup + `'`,
		`ALTER TABLE observers ADD COLUMN operator_note TEXT`,
		`CREATE INDEX idx_operator ON transmissions(route_type)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	if after := observerRowids(t, p.DB); !mapsEqual(rowids, after) {
		t.Fatal("VACUUM renumbered observer rowids")
	}

	// 4. start the writer: it catches up from the position in the database
	cmd = p.start(t)
	p.waitSettled(t, 5*time.Minute)
	stopProcess(t, cmd)
	db = writertest.OpenRaw(t, p.DB)
	if _, err := db.Exec(`ALTER TABLE observers DROP COLUMN operator_note`); err != nil { // for the comparison
		t.Fatal(err)
	}
	db.Close()
	diffDumps(t, want, dumpDB(t, p.DB))
	if n := writertest.Count(t, writertest.OpenRaw(t, p.DB), `SELECT COUNT(*) FROM observations o LEFT JOIN observers b
		ON b.rowid = o.observer_idx WHERE b.id IS NULL`); n != 0 {
		t.Errorf("%d observations point at no observer", n)
	}
}

// TestMaintenance_RestoreBackup: restoring a backup while the writer is
// stopped; the writer resumes after the position stored in the backup.
// What the spool still holds after that position is written; what was
// written after the backup and already released from the spool is not in
// the backup (MAINTENANCE.md says so).
func TestMaintenance_RestoreBackup(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	recs := faultTraffic(t, 9000)
	partA, partB, partC := recs[:3000], recs[3000:6000], recs[6000:]
	want, _ := referenceRun(t, append(append([]Record(nil), partA...), partC...))

	p := newProcessSetup(t, t.TempDir(), nil)
	writertest.AppendToSpool(t, p.Spool, partA, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd := p.start(t)
	p.waitDrained(t, 5*time.Minute)
	stopProcess(t, cmd)
	backup := filepath.Join(t.TempDir(), "backup.db")
	db := writertest.OpenRaw(t, p.DB)
	if _, err := db.Exec(`VACUUM INTO '` + backup + `'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	writertest.AppendToSpool(t, p.Spool, partB, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd = p.start(t)
	p.waitDrained(t, 5*time.Minute)
	stopProcess(t, cmd)

	// Restore: stop (done), replace the file, remove the old WAL.
	for _, f := range []string{p.DB + "-wal", p.DB + "-shm"} {
		os.Remove(f)
	}
	copyFile(t, backup, p.DB)
	writertest.AppendToSpool(t, p.Spool, partC, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd = p.start(t)
	p.waitSettled(t, 5*time.Minute)
	stopProcess(t, cmd)
	diffDumps(t, want, dumpDB(t, p.DB))
}

// TestWriter_TableDroppedUnderIt_Recovers: another process drops a table
// the writer needs while it runs; the writer rolls back, re-checks the
// schema (recreating the table), and goes on without losing a message.
func TestWriter_TableDroppedUnderIt_Recovers(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	recs := faultTraffic(t, 20000)
	want, _ := referenceRun(t, recs)
	p := newProcessSetup(t, t.TempDir(), nil)
	writertest.AppendToSpool(t, p.Spool, recs, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd := p.start(t)
	for {
		if f, ok := p.readStats(t); ok && f.Meshingest.Messages > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	db := writertest.OpenRaw(t, p.DB)
	if _, err := db.ExecContext(context.Background(), `PRAGMA busy_timeout = 10000`); err != nil {
		t.Fatal(err)
	}
	// The metrics rows written so far go with the table; the writer
	// recreates it and the reference comparison below excludes them.
	if _, err := db.Exec(`DROP TABLE observer_metrics`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for writertest.Count(t, db, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'observer_metrics'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the writer did not put the dropped table back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	db.Close()
	p.waitSettled(t, 5*time.Minute)
	f, _ := p.readStats(t)
	stopProcess(t, cmd)
	got := dumpDB(t, p.DB)
	if len(got["observer_metrics"]) >= len(want["observer_metrics"]) {
		t.Errorf("observer_metrics has %d rows after the drop, want fewer than %d", len(got["observer_metrics"]), len(want["observer_metrics"]))
	}
	delete(got, "observer_metrics")
	delete(want, "observer_metrics")
	diffDumps(t, want, got)
	// Either the once-a-second schema check saw the drop first, or a
	// statement failed on the missing table (an episode, then a reopen).
	if countLines(t, p.LogFile, "changed the database schema") == 0 && countLines(t, p.LogFile, `"kind":"schema"`) == 0 {
		t.Errorf("neither a schema-change line nor a schema episode in the log:\n%s", tail(p.LogFile, 10))
	}
	t.Logf("episodes during the drop: %d", f.Meshingest.Database.Episodes)
}

func observerRowids(t *testing.T, path string) map[string]int64 {
	t.Helper()
	db := writertest.OpenRaw(t, path)
	defer db.Close()
	rows, err := db.Query(`SELECT id, rowid FROM observers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var r int64
		rows.Scan(&id, &r)
		out[id] = r
	}
	return out
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestWriter_DatabaseReplacedUnderIt: a file moved into dbPath while the
// writer runs is noticed and reopened; the writer does not go on writing
// into the old, unlinked file.
func TestWriter_DatabaseReplacedUnderIt(t *testing.T) {
	recs := faultTraffic(t, 6000)
	partA, partB := recs[:3000], recs[3000:]
	p := newProcessSetup(t, t.TempDir(), nil)
	writertest.AppendToSpool(t, p.Spool, partA, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd := p.start(t)
	p.waitDrained(t, 5*time.Minute)
	backup := filepath.Join(p.Dir, "copy.db")
	db := writertest.OpenRaw(t, p.DB)
	if _, err := db.Exec(`VACUUM INTO '` + backup + `'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before := writertest.Count(t, writertest.OpenRaw(t, backup), `SELECT COUNT(*) FROM observations`)
	if err := os.Rename(backup, p.DB); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	writertest.AppendToSpool(t, p.Spool, partB, spool.Options{SegmentMaxBytes: 1 << 20})
	p.waitDrained(t, 5*time.Minute)
	stopProcess(t, cmd)
	after := writertest.Count(t, writertest.OpenRaw(t, p.DB), `SELECT COUNT(*) FROM observations`)
	if after <= before {
		t.Errorf("observations in the file at dbPath: %d before, %d after part B", before, after)
	}
	if countLines(t, p.LogFile, "replaced under the writer") != 1 {
		t.Errorf("no log line about the replaced file:\n%s", tail(p.LogFile, 10))
	}
}
