package writer

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// drainDir drains the spool folder dir into cfg's database with a new
// writer and returns it; it fails unless the writer consumed exactly n
// records.
func drainDir(t *testing.T, opts Options, dir string, n int64) *Writer {
	t.Helper()
	r := writertest.OpenSpool(t, dir)
	defer r.Close()
	w := drain(t, NewSpoolSource(r), opts, n)
	if got := w.Stats().Messages.Load(); got != n {
		t.Fatalf("the writer consumed %d records of spool %s, want %d", got, r.Identity().Short(), n)
	}
	return w
}

// TestWriter_NewSpoolFolder_DrainedFromItsFirstRecord: the spool folder is
// deleted and made anew (Seqs start at 1 again) after the writer drained
// the corpus from it. Every record of the new spool is written; the
// position of the old one no longer skips the first 531 of them. The stats
// file says a new spool replaced the old one, and that the old one held
// nothing unwritten (counted from the writer's own position at its last
// commit, not from the appender's figure, which lags it by a commit).
func TestWriter_NewSpoolFolder_DrainedFromItsFirstRecord(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	corpus := writertest.CorpusRecords(t)
	writertest.AppendToSpool(t, dir, corpus, spool.Options{})
	old, err := spool.ReadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	drainDir(t, Options{Config: cfg}, dir, int64(len(corpus)))

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	fresh := newTrafficGen(t, 3, 20, 1, 5, corpus[len(corpus)-1].ReceivedAt.Add(time.Minute)).records(2000)
	writertest.AppendToSpool(t, dir, fresh, spool.Options{})
	w := drainDir(t, Options{Config: cfg}, dir, 2000)

	f := w.Stats().snapshot(time.Now(), nil, -1, dbfile.Snapshot{})
	rep := f.Meshingest.Spool.Replaced
	if rep == nil || rep.Previous != old.ID.String() || rep.UnwrittenRecords != 0 {
		t.Fatalf("stats spool %+v (replaced %+v), want it to say spool %s was replaced with 0 records unwritten", f.Meshingest.Spool, rep, old.ID)
	}
	if id, _ := spool.ReadIdentity(dir); f.Meshingest.Spool.Identity != id.ID.String() {
		t.Errorf("stats spool identity %s, want %s", f.Meshingest.Spool.Identity, id.ID)
	}
	db := writertest.OpenRaw(t, cfg.DBPath)
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key LIKE 'spool_position:%'`); n != 2 {
		t.Errorf("%d stored positions, want one per spool (2)", n)
	}
}

// TestWriter_StaleSpool_ResumesAtItsOwnPosition: a spool drained before
// another one (the real disk mounted back after a fresh folder was used)
// resumes at the position stored for it: its new records are written, its
// old ones not again.
func TestWriter_StaleSpool_ResumesAtItsOwnPosition(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	corpus := writertest.CorpusRecords(t)
	g := newTrafficGen(t, 5, 20, 1, 5, corpus[len(corpus)-1].ReceivedAt.Add(time.Minute))
	writertest.AppendToSpool(t, a, corpus, spool.Options{})
	drainDir(t, Options{Config: cfg}, a, int64(len(corpus)))
	writertest.AppendToSpool(t, b, g.records(700), spool.Options{})
	drainDir(t, Options{Config: cfg}, b, 700)
	writertest.AppendToSpool(t, a, g.records(300), spool.Options{})
	w := drainDir(t, Options{Config: cfg}, a, 300)
	if rep := w.Stats().snapshot(time.Now(), nil, -1, dbfile.Snapshot{}).Meshingest.Spool.Replaced; rep != nil {
		t.Errorf("a spool the database knew is reported as replacing another: %+v", rep)
	}
}

// TestWriter_LegacyPosition_AppliesToAdoptedSpool: a database from before
// spool identities holds one position; the legacy spool folder the spool
// package adopts (it has a sequence file but no identity) resumes at it,
// and claims it: the row moves to the spool's identity.
func TestWriter_LegacyPosition_AppliesToAdoptedSpool(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "sequence"), []byte("16777216\n"), 0o600)
	corpus := writertest.CorpusRecords(t)
	writertest.AppendToSpool(t, dir, corpus, spool.Options{})
	info, err := spool.ReadIdentity(dir)
	if err != nil || !info.AdoptedLegacy {
		t.Fatalf("identity %+v (%v), want an adopted legacy folder", info, err)
	}
	// The old writer had applied the first 200 records.
	r := writertest.OpenSpool(t, dir)
	c, err := r.Cursor(Position{})
	if err != nil {
		t.Fatal(err)
	}
	var at Position
	for range 200 {
		if _, at, err = c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	r.Close()
	// A database as the old writer left it: its schema, and one position.
	drain(t, spoolOf(t, nil), Options{Config: cfg}, 0)
	db := writertest.OpenRaw(t, cfg.DBPath)
	if _, err := db.Exec(`INSERT INTO meshingest_state (key, value) VALUES ('spool_position', ?)`,
		`{"segment":`+itoa(at.Segment)+`,"seq":`+itoa(at.Seq)+`}`); err != nil {
		t.Fatal(err)
	}
	db.Exec(`DELETE FROM meshingest_state WHERE key IN ('spool_current') OR key LIKE 'spool_position:%'`)

	drainDir(t, Options{Config: cfg}, dir, int64(len(corpus)-200))
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key = 'spool_position'`); n != 0 {
		t.Errorf("the legacy position is still stored after the adopted spool claimed it")
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key = ?`, statePositionPrefix+info.ID.String()); n != 1 {
		t.Errorf("no position stored for the adopted spool %s", info.ID)
	}
	// A second legacy folder finds no unclaimed position: it starts at its
	// first record.
	other := filepath.Join(t.TempDir(), "spool")
	os.MkdirAll(other, 0o700)
	os.WriteFile(filepath.Join(other, "sequence"), []byte("16777216\n"), 0o600)
	writertest.AppendToSpool(t, other, corpus[:50], spool.Options{})
	drainDir(t, Options{Config: cfg}, other, 50)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
