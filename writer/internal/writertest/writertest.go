// Package writertest holds the helpers the writer's tests and its jobs'
// tests share: spools filled through a real appender, the real capture as
// records, the databases they leave, read with a plain connection. Only
// tests import it; it imports neither the writer nor its jobs, so the
// writer's own (internal) tests can use it.
package writertest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	_ "modernc.org/sqlite" // OpenRaw's driver
)

// SpoolOf appends recs to a new spool folder and returns a reader over it.
func SpoolOf(t testing.TB, recs []spool.Record) *spool.Reader {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	AppendToSpool(t, dir, recs, spool.Options{})
	return OpenSpool(t, dir)
}

// OpenSpool opens a reader over the spool folder dir.
func OpenSpool(t testing.TB, dir string) *spool.Reader {
	t.Helper()
	r, err := spool.OpenReader(dir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// AppendToSpool appends recs to the spool folder dir through a real
// appender, which seals its segments on Close, and fails the test unless
// every record is durable.
func AppendToSpool(t testing.TB, dir string, recs []spool.Record, opts spool.Options) {
	t.Helper()
	a, err := spool.OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	for _, r := range recs {
		for {
			err := a.Append(r, func(err error) {
				if err != nil {
					failed.Add(1)
				}
			})
			if errors.Is(err, spool.ErrQueueFull) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d records failed to reach the spool", failed.Load())
	}
}

// CorpusRecords is the real capture as spool records.
func CorpusRecords(t testing.TB) []spool.Record {
	t.Helper()
	r := capture.Demo()
	var recs []spool.Record
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, spool.Record{ReceivedAt: m.ReceivedAt, Source: "corpus", Topic: m.Topic, Payload: m.Payload, Retained: m.Retained})
	}
	return recs
}

// CorpusConfig is the configuration the corpus totals assume: the Public
// key (built in) and the four hashtag channels that decrypt something; the
// database and the stats files in a new folder.
func CorpusConfig(t testing.TB) *shared.Config {
	t.Helper()
	dir := t.TempDir()
	return &shared.Config{
		DBPath:       filepath.Join(dir, "meshcore.db"),
		HashChannels: []string{"#test", "#wardriving", "#bot", "#chat"},
		Writer:       shared.WriterConfig{StatsFile: filepath.Join(dir, "stats.json")},
		Receiver:     shared.ReceiverConfig{StatsFile: filepath.Join(dir, "receiver-stats.json")},
	}
}

// RunUntil runs run (a writer's Run) until done reports true, then stops
// it and fails the test if it returned an error; done is polled, and the
// test fails when it is not true within timeout.
func RunUntil(t testing.TB, what string, timeout time.Duration, run func(context.Context) error, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx) }()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			cancel()
			<-stopped
			t.Fatalf("%s: not done within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// OpenRaw opens the database at path with a plain connection (none of the
// writer's settings), closed when the test ends.
func OpenRaw(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// Count is the one number query returns (0 for NULL).
func Count(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

// CheckForeignKeys fails the test when a row references a missing parent:
// the writer does not have SQLite enforce foreign keys (writer/dbfile/db.go) and
// keeps them by construction, which every test that writes rows checks.
func CheckForeignKeys(t testing.TB, path string) {
	t.Helper()
	db := OpenRaw(t, path)
	defer db.Close()
	rows, err := db.Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatalf("foreign_key_check on %s: %v", path, err)
	}
	defer rows.Close()
	var orphans []string
	for rows.Next() {
		var table, parent string
		var rowid, fk sql.NullInt64
		if err := rows.Scan(&table, &rowid, &parent, &fk); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, fmt.Sprintf("%s row %d (no %s row)", table, rowid.Int64, parent))
	}
	if len(orphans) > 0 {
		t.Errorf("%d rows reference a missing parent, first: %s", len(orphans), orphans[0])
	}
}
