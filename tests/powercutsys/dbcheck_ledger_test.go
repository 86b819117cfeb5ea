package powercutsys

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// ledgerDB is a database with the columns dbLedger reads, without the
// writer's unique index, so a test can write what the writer must never.
func ledgerDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{
		`CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, hash TEXT NOT NULL UNIQUE)`,
		`CREATE TABLE observers (id TEXT PRIMARY KEY, packet_count INTEGER DEFAULT 0)`,
		`CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, transmission_id INTEGER NOT NULL, observer_idx INTEGER, path_json TEXT)`,
		`CREATE INDEX idx_observations_observer_idx ON observations(observer_idx)`,
		`CREATE TABLE dropped_packets (id INTEGER PRIMARY KEY AUTOINCREMENT, observer_id TEXT, reason TEXT)`,
		`CREATE TABLE nodes (public_key TEXT PRIMARY KEY, advert_count INTEGER DEFAULT 0)`,
		`INSERT INTO transmissions (hash) VALUES ('h1'), ('h2'), ('h3')`,
		`INSERT INTO observers (id, packet_count) VALUES ('A', 3), ('B', 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return db
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// insertObs adds an observation of transmission tx by observer obs.
func insertObs(t *testing.T, db *sql.DB, tx int, obs, path string) {
	t.Helper()
	mustExec(t, db, `INSERT INTO observations (transmission_id, observer_idx, path_json)
		VALUES (?, (SELECT rowid FROM observers WHERE id = ?), ?)`, tx, obs, path)
}

func wantAll(obsKey) bool { return true }

func TestDBLedger_Read_NewRowsOnly(t *testing.T) {
	db := ledgerDB(t)
	l := newDBLedger()
	insertObs(t, db, 1, "A", "[]")
	insertObs(t, db, 2, "A", `["aa"]`)
	mustExec(t, db, `INSERT INTO dropped_packets (observer_id, reason) VALUES ('B', 'invalid_signature')`)
	snap, err := l.read(db, wantAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.countErrs) != 0 || l.rowsBy["A"] != 2 || l.droppedBy["B"] != 1 || snap.packetCount["A"] != 3 {
		t.Fatalf("first read: %+v, ledger %+v", snap, l)
	}
	insertObs(t, db, 3, "B", "[]")
	snap, err = l.read(db, wantAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.countErrs) != 0 || l.rowsBy["A"] != 2 || l.rowsBy["B"] != 1 || len(l.rows) != 3 {
		t.Fatalf("second read: %+v, ledger rows %v by %v", snap.countErrs, l.rows, l.rowsBy)
	}
	if l.rows[obsKey{"h2", "A", `["aa"]`}] != 1 || l.extraBy["A"]+l.extraBy["B"] != 0 {
		t.Fatalf("ledger rows %v, extra %v", l.rows, l.extraBy)
	}
}

// A row a cut took away after a check had read it: the counts differ.
func TestDBLedger_Read_RowVanished(t *testing.T) {
	db := ledgerDB(t)
	l := newDBLedger()
	insertObs(t, db, 1, "A", "[]")
	insertObs(t, db, 2, "A", "[]")
	mustExec(t, db, `INSERT INTO dropped_packets (observer_id, reason) VALUES ('B', 'x')`)
	if _, err := l.read(db, wantAll); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, `DELETE FROM observations WHERE transmission_id = 1`)
	mustExec(t, db, `DELETE FROM dropped_packets`)
	snap, err := l.read(db, wantAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.countErrs) != 2 {
		t.Fatalf("a vanished observation and dropped row: %d count errors %v, want 2", len(snap.countErrs), snap.countErrs)
	}
}

// A row written below the last id read (a lost transaction whose ids were
// given again, a rowid reused) is not read, but counted.
func TestDBLedger_Read_RowBelowLastID(t *testing.T) {
	db := ledgerDB(t)
	l := newDBLedger()
	insertObs(t, db, 1, "A", "[]")
	insertObs(t, db, 2, "A", "[]")
	insertObs(t, db, 3, "A", "[]")
	mustExec(t, db, `DELETE FROM observations WHERE id = 2`)
	if _, err := l.read(db, wantAll); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, `INSERT INTO observations (id, transmission_id, observer_idx, path_json) VALUES (2, 2, 1, '["bb"]')`)
	snap, err := l.read(db, wantAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.countErrs) != 1 || !strings.Contains(snap.countErrs[0], "observation rows") {
		t.Fatalf("a row below the last id: count errors %v, want one", snap.countErrs)
	}
}

// The same key twice, a key no stream wants, a row without its
// transmission or observer: each is counted.
func TestDBLedger_Read_DoubledUnwantedOrphan(t *testing.T) {
	db := ledgerDB(t)
	l := newDBLedger()
	insertObs(t, db, 1, "A", "[]")
	insertObs(t, db, 1, "A", "[]")         // the same observation twice
	insertObs(t, db, 2, "B", `["zz"]`)     // wanted by no stream
	insertObs(t, db, 99, "A", "[]")        // no transmission 99
	insertObs(t, db, 3, "nobody", `["x"]`) // no such observer
	wanted := func(k obsKey) bool { return k.path != `["zz"]` }
	if _, err := l.read(db, wanted); err != nil {
		t.Fatal(err)
	}
	if l.extraBy["A"] != 1 || l.extraBy["B"] != 1 {
		t.Errorf("extra rows %v, want A 1 (doubled) and B 1 (unwanted)", l.extraBy)
	}
	if l.orphans != 1 || l.nullObserver != 1 {
		t.Errorf("orphans %d, rows without observer %d, want 1 and 1", l.orphans, l.nullObserver)
	}
}
