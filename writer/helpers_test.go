package writer

import (
	"context"
	"database/sql"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/capture"
	"github.com/meshingest/meshingest/shared"
)

// memSource is an in-memory Source for tests of the mapping: one segment,
// records numbered from 1.
type memSource struct {
	mu       sync.Mutex
	records  []Record
	released Position
	wake     chan struct{}
}

func newMemSource(recs []Record) *memSource {
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
	}
	return &memSource{records: recs, wake: make(chan struct{}, 1)}
}

func (s *memSource) add(recs ...Record) {
	s.mu.Lock()
	for _, r := range recs {
		r.Seq = uint64(len(s.records) + 1)
		s.records = append(s.records, r)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *memSource) Open(after Position) (Cursor, error) {
	return &memCursor{s: s, next: int(after.Seq)}, nil
}

func (s *memSource) Release(pos Position) error {
	s.mu.Lock()
	s.released = pos
	s.mu.Unlock()
	return nil
}

func (s *memSource) WaitSealed(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.wake:
		return nil
	}
}

func (s *memSource) Depth(after Position) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.records)) - int64(after.Seq)
}

func (s *memSource) SavePosition(Position) error { return nil }

type memCursor struct {
	s    *memSource
	next int
}

func (c *memCursor) Next() (Record, Position, error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.next >= len(c.s.records) {
		return Record{}, Position{}, io.EOF
	}
	r := c.s.records[c.next]
	c.next++
	return r, Position{Segment: 1, Seq: r.Seq}, nil
}

func (c *memCursor) Close() error { return nil }

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
	return w
}

func count(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}
