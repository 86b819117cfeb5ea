package spool

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReader_Cursor_ResumesAfterPosition(t *testing.T) {
	dir := newSpoolDir(t)
	orig := buildSpool(t, dir, 2000)
	all, poss := readAll(t, dir, ReaderOptions{Inspect: true})
	r, _ := OpenReader(dir, ReaderOptions{})
	for _, i := range []int{0, 1, 500, 1234, 1999} {
		c, _ := r.Cursor(poss[i])
		rec, pos, err := c.Next()
		if i == 1999 {
			if err != io.EOF {
				t.Fatalf("after the last record: %v", err)
			}
			c.Close()
			continue
		}
		if err != nil || rec.Seq != all[i+1].Seq || pos != poss[i+1] || !sameContent(rec, orig[rec.Seq]) {
			t.Fatalf("resume after %v: got %v %v %v, want %v", poss[i], rec.Seq, pos, err, poss[i+1])
		}
		c.Close()
	}
	// Releasing up to a position keeps the segment holding later records.
	if err := r.Release(poss[1234]); err != nil {
		t.Fatal(err)
	}
	rest, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if rest[0].Seq > all[1235].Seq || rest[len(rest)-1].Seq != all[1999].Seq {
		t.Fatalf("after release at %v the first record left is %d", poss[1234], rest[0].Seq)
	}
	c, _ := r.Cursor(poss[1234])
	if rec, _, _ := c.Next(); rec.Seq != all[1235].Seq {
		t.Fatalf("resume after release: %d", rec.Seq)
	}
	c.Close()
}

func TestReader_WaitSealed_ReturnsOnNewSegment(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r, _ := OpenReader(dir, ReaderOptions{PollInterval: 5 * time.Millisecond})
	c, _ := r.Cursor(Position{})
	defer c.Close()
	if _, _, err := c.Next(); err != io.EOF {
		t.Fatalf("empty spool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := r.WaitSealed(ctx); err != context.DeadlineExceeded {
		t.Fatalf("nothing sealed, WaitSealed returned %v", err)
	}
	cancel()
	start := time.Now()
	go a.Append(testRecord(1, 10), nil)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.WaitSealed(ctx); err != nil {
		t.Fatal(err)
	}
	rec, _, err := c.Next()
	if err != nil || !sameContent(rec, testRecord(1, 10)) {
		t.Fatalf("after WaitSealed: %v %v", rec, err)
	}
	t.Logf("sealed and seen %v after the append", time.Since(start))
}

func TestOpenAppender_RecoversDamagedUnsealedSegment(t *testing.T) {
	src := newSpoolDir(t)
	orig := buildSpool(t, src, 1000)
	// Make the last sealed segment look like the active one a dead
	// appender left, torn at the end and with a flipped byte inside.
	// The damage must land in records: take the newest segment large
	// enough for it (where segments split depends on the appender's group
	// timing; a last segment of four records was once left intact) and
	// remove the newer ones, as if the appender died while writing it.
	segs, _ := listSegments(src, sealedExt)
	var last segmentFile
	var fi os.FileInfo
	for i := len(segs) - 1; i >= 0; i-- {
		last = segs[i]
		fi, _ = os.Stat(filepath.Join(src, last.Name))
		if fi.Size() >= 4096*4+trailerSize+3000 {
			for _, newer := range segs[i+1:] {
				os.Remove(filepath.Join(src, newer.Name))
			}
			break
		}
	}
	path := filepath.Join(src, last.Name)
	active := filepath.Join(src, segmentName(last.ID, activeExt))
	os.Truncate(path, fi.Size()-trailerSize-3000)
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff, 0xfe}, 4096*3+600)
	f.Close()
	os.Rename(path, active)

	a, err := OpenAppender(src, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	st := a.Stats()
	a.Close()
	if st.RecoveredSegments != 1 {
		t.Fatalf("recovered %d segments", st.RecoveredSegments)
	}
	if _, err := os.Stat(active); !os.IsNotExist(err) {
		t.Fatalf("unsealed segment still there: %v", err)
	}
	recs, _ := readAll(t, src, ReaderOptions{Inspect: true})
	kept := 0
	for _, r := range recs {
		if !sameContent(r, orig[r.Seq]) {
			t.Fatalf("recovered record %d differs", r.Seq)
		}
		if r.Seq >= last.ID {
			kept++
		}
	}
	items, _ := ListQuarantine(src)
	var original bool
	for _, it := range items {
		if it.Kind == "segment" && it.Segment == last.ID && contains(it.Reason, "unsealed segment left by a dead appender") {
			original = true
		}
	}
	if !original || kept == 0 || len(recs) >= len(orig) {
		t.Fatalf("kept %d of the damaged segment, %d of %d in all, quarantine %+v", kept, len(recs), len(orig), items)
	}
}

func TestRequeue_PutsQuarantinedRecordBack(t *testing.T) {
	dir := newSpoolDir(t)
	a, _ := OpenAppender(dir, fastOptions())
	rec := testRecord(7, 50)
	rec.Seq = 3
	good := appendRecord(nil, &rec)
	bad := append([]byte(nil), good...)
	bad[40] ^= 1
	if err := quarantineRecords(dir, 1, []damagedRecord{{Seq: 3, Raw: good, Reason: "test: a newer version"}, {Seq: 4, Raw: bad, Reason: "test: flipped"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := Requeue(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if len(res) != 2 || res[0].Err != "" || res[1].Err == "" {
		t.Fatalf("requeue results %+v", res)
	}
	recs, _ := readAll(t, dir, ReaderOptions{})
	if len(recs) != 1 || !sameContent(recs[0], testRecord(7, 50)) {
		t.Fatalf("spool after requeue: %+v", recs)
	}
	items, _ := ListQuarantine(dir)
	if len(items) != 1 || items[0].Seq != 4 || items[0].Reason != "test: flipped" {
		t.Fatalf("quarantine after requeue: %+v", items)
	}
}

func TestReader_WaitSealed_IdleDoesNotRelistInALoop(t *testing.T) {
	dir := newSpoolDir(t) // never used: no file in it
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, _ := r.Cursor(Position{})
	defer c.Close()
	// The writer's idle loop: read to the end, wait up to a second, again.
	for i := 0; i < 3; i++ {
		if _, _, err := c.Next(); err != io.EOF {
			t.Fatalf("empty spool: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := r.WaitSealed(ctx); err != context.DeadlineExceeded {
			t.Fatalf("nothing sealed, WaitSealed returned %v", err)
		}
		cancel()
	}
	// A 50 ms poll would list the folder about 60 times in these three
	// seconds; the backing-off poll about 8, a slow machine fewer.
	if n := r.listings.Load(); n > 15 {
		t.Fatalf("an idle reader listed the folder %d times in 3 s", n)
	}
}

func TestReader_WaitSealed_WakesOnTheWatchEvent(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// A poll that never comes within the test: only the folder watch can
	// wake the reader.
	r, _ := OpenReader(dir, ReaderOptions{PollInterval: time.Hour, PollMaxInterval: time.Hour})
	defer r.Close()
	ready := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ready <- r.WaitSealed(ctx)
	}()
	// The first listing is done before WaitSealed waits; an append sealed
	// before it would return at once, which is fine too.
	appendAll(t, a, []Record{testRecord(1, 10)})
	if err := <-ready; err != nil {
		t.Fatalf("WaitSealed: %v (the watch did not wake it)", err)
	}
	c, _ := r.Cursor(Position{})
	defer c.Close()
	if rec, _, err := c.Next(); err != nil || !sameContent(rec, testRecord(1, 10)) {
		t.Fatalf("after WaitSealed: %v %v", rec, err)
	}
}
