package writer

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
)

// spoolOf appends recs to a new spool folder (through a real appender,
// which seals its segments on Close) and returns a Source over it.
func spoolOf(t testing.TB, recs []Record) *SpoolSource {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	appendToSpool(t, dir, recs, spool.Options{})
	r, err := spool.OpenReader(dir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return NewSpoolSource(r)
}

func appendToSpool(t testing.TB, dir string, recs []Record, opts spool.Options) {
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

// sealedSegments counts the sealed segment files left in a spool folder.
func sealedSegments(t testing.TB, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// corpusRecords is the real capture as spool records.
func corpusRecords(t testing.TB) []Record {
	t.Helper()
	r := capture.Demo()
	var recs []Record
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, Record{ReceivedAt: m.ReceivedAt, Source: "corpus", Topic: m.Topic, Payload: m.Payload, Retained: m.Retained})
	}
	return recs
}

// corpusConfig is the configuration the corpus totals assume: the Public
// key (built in) and the four hashtag channels that decrypt something.
func corpusConfig(t testing.TB) *shared.Config {
	t.Helper()
	dir := t.TempDir()
	return &shared.Config{
		DBPath:       filepath.Join(dir, "meshcore.db"),
		HashChannels: []string{"#test", "#wardriving", "#bot", "#chat"},
		Writer:       shared.WriterConfig{StatsFile: filepath.Join(dir, "stats.json")},
		Receiver:     shared.ReceiverConfig{StatsFile: filepath.Join(dir, "receiver-stats.json")},
	}
}

// drain runs a writer over src until it has consumed n messages and caught
// up, then stops it and waits for Run to return.
func drain(t testing.TB, src Source, opts Options, n int64) *Writer {
	t.Helper()
	w, err := New(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for w.Stats().Messages.Load() < n || !w.Stats().CaughtUp.Load() {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("writer consumed %d of %d messages in 60 s", w.Stats().Messages.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkForeignKeys(t, opts.Config.DBPath)
	return w
}

// checkForeignKeys fails the test when a row references a missing parent:
// the writer does not have SQLite enforce foreign keys (db.go) and keeps
// them by construction, which every test that writes rows checks.
func checkForeignKeys(t testing.TB, path string) {
	t.Helper()
	db := openRaw(t, path)
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

func count(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

func spoolOf2(t testing.TB, dir string) *SpoolSource {
	r, err := spool.OpenReader(dir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return NewSpoolSource(r)
}
