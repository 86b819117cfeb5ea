package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/rs/zerolog"
)

// newWriter builds a writer over src with the jobs registered as
// cmd/meshingest registers them. Its stats file is written every 20 ms, so
// a test can wait for what it reports.
func newWriter(t testing.TB, src writer.Source, cfg *shared.Config) (*writer.Writer, *Jobs) {
	t.Helper()
	w, j, _ := newWriterLog(t, src, cfg)
	return w, j
}

// newWriterLog is newWriter with the jobs' log (JSON lines, Info and up)
// in a file, and a function that reads what it holds so far.
func newWriterLog(t testing.TB, src writer.Source, cfg *shared.Config) (*writer.Writer, *Jobs, func() string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jobs.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	stats := writer.NewStats()
	j := New(cfg, zerolog.New(f).Level(zerolog.InfoLevel), stats)
	w, err := writer.New(src, writer.Options{Config: cfg, Stats: stats, Hook: j.Hook(), Tasks: j.Tasks(),
		StatsInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return w, j, func() string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
}

// spoolOf is a Source over a new spool folder holding recs.
func spoolOf(t testing.TB, recs []writer.Record) writer.Source {
	t.Helper()
	return writer.NewSpoolSource(writertest.SpoolOf(t, recs))
}

// openSource is a Source over the spool folder dir.
func openSource(t testing.TB, dir string) writer.Source {
	t.Helper()
	return writer.NewSpoolSource(writertest.OpenSpool(t, dir))
}

// drain runs w until it consumed n messages and caught up and, with j,
// the jobs derived again what the nodes they learned change; then stops it.
func drain(t testing.TB, w *writer.Writer, j *Jobs, n int64) {
	t.Helper()
	writertest.RunUntil(t, fmt.Sprintf("the writer to consume %d messages", n), 10*time.Minute, w.Run, func() bool {
		return w.Stats().Messages.Load() >= n && w.Stats().CaughtUp.Load() && (j == nil || j.settled())
	})
}

// settled reports whether the jobs found nothing left to derive again
// after the last committed batch (CaughtUp says that batch is the last).
func (j *Jobs) settled() bool { return j.paths.settled.Load() == j.paths.commits.Load() }

// drainRecords drains recs, from a spool of their own, into cfg's database
// with a writer and the jobs, and checks the rows' references.
func drainRecords(t testing.TB, cfg *shared.Config, recs []writer.Record) (*writer.Writer, *Jobs) {
	t.Helper()
	w, j := newWriter(t, spoolOf(t, recs), cfg)
	drain(t, w, j, int64(len(recs)))
	writertest.CheckForeignKeys(t, cfg.DBPath)
	return w, j
}

// newDatabase creates a database with the writer's schema (a writer run
// over an empty spool) and returns its path.
func newDatabase(t testing.TB) string {
	t.Helper()
	cfg := writertest.CorpusConfig(t)
	w, err := writer.New(spoolOf(t, nil), writer.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	writertest.RunUntil(t, "the writer to create the database", time.Minute, w.Run, w.Stats().CaughtUp.Load)
	return cfg.DBPath
}

// testDB is one connection to a database, as the writer holds one.
type testDB struct {
	db   *sql.DB
	conn *sql.Conn
}

// openDatabase opens a connection to the database at path.
func openDatabase(t testing.TB, path string) *testDB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return &testDB{db: db, conn: conn}
}

// close closes the connection itself, not only its handle: what the
// writer does when it reopens the database.
func (d *testDB) close() {
	d.conn.Close()
	d.db.Close()
}
