package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testRecord is a record whose content is a function of i, so a test can
// check what it reads back without keeping what it wrote.
func testRecord(i int, payloadLen int) Record {
	p := make([]byte, payloadLen)
	for j := range p {
		p[j] = byte(i*31 + j)
	}
	return Record{
		ReceivedAt: time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Source:     "local",
		Broker:     "mqtt://user:***@broker:1883",
		Topic:      fmt.Sprintf("meshcore/SJC/OBS%d/packets", i%7),
		QoS:        byte(i % 2),
		Retained:   i%5 == 0,
		Duplicate:  i%11 == 0,
		MessageID:  uint16(i),
		Payload:    p,
	}
}

// sameContent compares everything but Seq.
func sameContent(a, b Record) bool {
	return a.ReceivedAt.Equal(b.ReceivedAt) && a.Source == b.Source && a.Broker == b.Broker && a.Topic == b.Topic &&
		a.QoS == b.QoS && a.Retained == b.Retained && a.Duplicate == b.Duplicate && a.MessageID == b.MessageID &&
		bytes.Equal(a.Payload, b.Payload)
}

// appendAll appends recs and waits until every one is durable.
func appendAll(t testing.TB, a *Appender, recs []Record) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, r := range recs {
		wg.Add(1)
		for {
			err := a.Append(r, func(err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
				wg.Done()
			})
			if errors.Is(err, ErrQueueFull) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

// readAll reads every sealed record of the spool in dir.
func readAll(t testing.TB, dir string, opts ReaderOptions) ([]Record, []Position) {
	t.Helper()
	r, err := OpenReader(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return readFrom(t, r, Position{})
}

// readFrom reads every sealed record after pos through r.
func readFrom(t testing.TB, r *Reader, after Position) ([]Record, []Position) {
	t.Helper()
	c, err := r.Cursor(after)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var recs []Record
	var poss []Position
	for {
		rec, pos, err := c.Next()
		if err == io.EOF {
			return recs, poss
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
		poss = append(poss, pos)
	}
}

// newSpoolDir returns a spool folder path for a test and registers the
// consistency check (checkSpool) to run on it when the test ends, as
// bbolt's MustCreateDB does, unless the test failed already or the folder
// was never made. A test that leaves a damaged spool on purpose uses a
// plain t.TempDir() instead.
func newSpoolDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	t.Cleanup(func() {
		if _, err := os.Stat(dir); err == nil && !t.Failed() {
			checkSpool(t, dir)
		}
	})
	return dir
}

// checkSpool is the consistency check run after every test that writes a
// spool (newSpoolDir): modes, the identity file, every sealed segment
// verifies and opens and names the folder's spool, records decode, Seqs
// strictly increase across segments and sit at or above their segment's
// id, trailers match the records.
func checkSpool(t testing.TB, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("spool folder mode %v, want 0700", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Damaged() {
		t.Fatalf("spool %s damaged: %+v", dir, rep)
	}
	id, err := ReadIdentity(dir)
	if err != nil {
		t.Fatalf("spool %s: %v", dir, err)
	}
	var last uint64
	segs, _ := listSegments(dir, sealedExt)
	for _, s := range segs {
		r, _ := OpenReader(dir, ReaderOptions{Inspect: true})
		sr, err := r.openSegment(s, Position{})
		if err != nil {
			t.Fatalf("segment %s does not open: %v", s.Name, err)
		}
		if sr.salv != nil {
			t.Fatalf("segment %s needed salvage", s.Name)
		}
		var sum segmentSummary
		for {
			rec, err := sr.next(0)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if rec.Seq <= last || rec.Seq < s.ID {
				t.Fatalf("segment %s: Seq %d after %d (segment id %d)", s.Name, rec.Seq, last, s.ID)
			}
			last = rec.Seq
			sum.add(rec.Seq, rec.ReceivedAt.UnixNano())
		}
		sr.close()
		if tr, err := segmentTrailer(dir, s); err != nil || tr.Version != 2 || tr.Spool != id.ID {
			t.Fatalf("segment %s: trailer %+v %v, the folder is spool %v", s.Name, tr, err, id.ID)
		}
		info, _ := sealedInfo(dir, s)
		if info.Records != sum.Records || info.FirstSeq != sum.FirstSeq || info.LastSeq != sum.LastSeq ||
			!info.Oldest.Equal(sum.OldestTime()) || !info.Newest.Equal(sum.NewestTime()) {
			t.Fatalf("segment %s: trailer %+v, records %+v", s.Name, info, sum)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, quarantineDir)); err != nil {
		t.Errorf("no quarantine folder: %v", err)
	}
}
