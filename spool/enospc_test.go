package spool

import (
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAppender_DiskFull_ENOSPC fills a real 2 MiB tmpfs (needs root to
// mount it): appends fail with ENOSPC and are then refused with ErrFull,
// every sealed segment still verifies, every record reported durable is
// readable, and once the writer frees space appending works again.
func TestAppender_DiskFull_ENOSPC(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m,mode=0700"); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (%v); this test needs root", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	dir := filepath.Join(mnt, "spool")
	opts := fastOptions()
	opts.MinFreeBytes, opts.MaxBytes = -1, -1 // let the disk itself run out
	opts.SegmentMaxBytes = 256 << 10          // several sealed segments before it does
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	durable := map[string]bool{}
	var diskErr, refused error
	for i := 0; i < 20000 && refused == nil; i++ {
		rec := testRecord(i, 1000)
		rec.Topic = "t/" + strconv.Itoa(i)
		err := a.Append(rec, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				diskErr = err
				return
			}
			durable[rec.Topic] = true
		})
		switch {
		case errors.Is(err, ErrFull):
			refused = err
		case errors.Is(err, ErrQueueFull):
			time.Sleep(time.Millisecond)
		case err != nil:
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	if !errors.Is(diskErr, syscall.ENOSPC) || refused == nil {
		t.Fatalf("disk error %v, refusal %v", diskErr, refused)
	}
	if !contains(diskErr.Error(), "the disk is full") {
		t.Fatalf("error has no hint for the operator: %v", diskErr)
	}
	mu.Unlock()
	st := a.Stats()
	if !st.Full || st.FailedRecords == 0 {
		t.Fatalf("stats %+v", st)
	}

	// Everything sealed verifies, and every durable record is readable.
	rep, err := Verify(dir)
	if err != nil || rep.Damaged() {
		t.Fatalf("after ENOSPC: %v %+v", err, rep)
	}
	recs, poss := readAll(t, dir, ReaderOptions{})
	if len(poss) == 0 {
		t.Fatal("nothing was sealed before the disk filled")
	}
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Topic] = true
	}

	// The writer drains and frees the disk; appends resume.
	rd, _ := OpenReader(dir, ReaderOptions{})
	if err := rd.Release(poss[len(poss)-1]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := make(chan error, 1)
		err := a.Append(testRecord(1, 100), func(err error) { done <- err })
		if err == nil {
			if err := <-done; err != nil {
				t.Fatalf("append after space came back: %v", err)
			}
			break
		}
		if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
			t.Fatalf("append after space came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// What was still in the active segment is sealed now.
	recs, _ = readAll(t, dir, ReaderOptions{})
	for _, r := range recs {
		got[r.Topic] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for topic := range durable {
		if !got[topic] {
			t.Fatalf("record %s was reported durable and is not readable", topic)
		}
	}
	checkSpool(t, dir)
	t.Logf("%d durable before the disk filled, %d failed, then resumed", len(durable), st.FailedRecords)
}
