package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// appendEach appends recs and returns the error each one's done reported.
func appendEach(t *testing.T, a *Appender, recs []Record) []error {
	t.Helper()
	errs := make([]error, len(recs))
	var n atomic.Int64
	for i, r := range recs {
		for {
			err := a.Append(r, func(err error) { errs[i] = err; n.Add(1) })
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
	testkit.WaitFor(t, 30*time.Second, "every record settled", func() bool { return n.Load() == int64(len(recs)) })
	return errs
}

// checkRemade fails unless dir is a new spool (not old) holding exactly
// want, in order, and the appender counted one folder remade and at most
// lost records lost with the old one (exactly, when exact).
func checkRemade(t *testing.T, a *Appender, dir string, old Identity, want []Record, lost uint64, exact bool) {
	t.Helper()
	info, err := ReadIdentity(dir)
	if err != nil || info.ID == old || a.Identity().ID != info.ID {
		t.Fatalf("identity of the remade folder %v (appender says %v), err %v; the deleted one was %v", info.ID, a.Identity().ID, err, old)
	}
	got, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if len(got) != len(want) {
		t.Fatalf("the remade folder holds %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if !sameContent(got[i], want[i]) || (i > 0 && got[i].Seq <= got[i-1].Seq) {
			t.Fatalf("record %d of the remade folder: %+v, want %+v", i, got[i], want[i])
		}
	}
	st := a.Stats()
	if st.FoldersRemade != 1 || st.RecordsLostWithFolder > lost || exact && st.RecordsLostWithFolder != lost {
		t.Fatalf("folders_remade %d, records_lost_with_folder %d; want 1 and %d (exact %v)", st.FoldersRemade, st.RecordsLostWithFolder, lost, exact)
	}
}

// TestAppender_Append_FolderDeletedWhileRunning: `rm -rf` of the spool
// folder under a running receiver. The appender makes the folder again,
// as a new spool, and the records appended after go into it: none fails,
// and what the deleted folder held undrained is counted as lost with it.
func TestAppender_Append_FolderDeletedWhileRunning(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	old := a.Identity().ID
	var first, second []Record
	for i := 0; i < 100; i++ {
		first, second = append(first, testRecord(i, 50)), append(second, testRecord(100+i, 50))
	}
	appendAll(t, a, first)
	testkit.WaitFor(t, 10*time.Second, "the depth of the first records", func() bool { return a.Stats().DepthRecords == 100 })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for i, err := range appendEach(t, a, second) {
		if err != nil {
			t.Fatalf("record %d after the folder was deleted: %v", i, err)
		}
	}
	a.Close()
	checkRemade(t, a, dir, old, second, 100, true)
}

// TestAppender_Append_FolderDeletedUnderActiveSegment: with the low-wear
// profile the records of the active segment are still in the appender's
// open file when the folder is deleted: they are written into the new
// folder, not lost.
func TestAppender_Append_FolderDeletedUnderActiveSegment(t *testing.T) {
	dir := newSpoolDir(t)
	opts := fastOptions()
	opts.Profile, opts.SegmentMaxAge, opts.GroupWindow, opts.GroupMaxRecords = ProfileLowWear, time.Hour, time.Millisecond, 10
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	old := a.Identity().ID
	var first, second []Record
	for i := 0; i < 100; i++ {
		first, second = append(first, testRecord(i, 50)), append(second, testRecord(100+i, 50))
	}
	appendAll(t, a, first)
	if st := a.Stats(); st.SegmentsSealed != 0 {
		t.Fatalf("%d segments sealed: the test needs the records in the active segment", st.SegmentsSealed)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for i, err := range appendEach(t, a, second) {
		if err != nil {
			t.Fatalf("record %d after the folder was deleted: %v", i, err)
		}
	}
	a.Close()
	checkRemade(t, a, dir, old, append(first, second...), 0, true)
}

// TestAppender_Append_FolderDeletedDuringGroup: the folder is deleted
// while a group is being written (before its sync). The group's records
// are reported durable only once they are in the remade folder: a QoS 1
// message is never acknowledged for a record that is in no folder.
func TestAppender_Append_FolderDeletedDuringGroup(t *testing.T) {
	for _, profile := range []Profile{ProfileLowLatency, ProfileLowWear} {
		t.Run(string(profile), func(t *testing.T) {
			dir := newSpoolDir(t)
			opts := fastOptions()
			opts.Profile = profile
			if profile == ProfileLowWear {
				opts.SegmentMaxAge, opts.GroupWindow, opts.GroupMaxRecords = time.Hour, time.Millisecond, 10
			}
			var armed atomic.Bool
			opts.BeforeSync = func() {
				if armed.CompareAndSwap(true, false) {
					os.RemoveAll(dir)
				}
			}
			a, err := OpenAppender(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			old := a.Identity().ID
			var first, second []Record
			for i := 0; i < 30; i++ {
				first, second = append(first, testRecord(i, 50)), append(second, testRecord(100+i, 50))
			}
			appendAll(t, a, first)
			armed.Store(true)
			for i, err := range appendEach(t, a, second) {
				if err != nil {
					t.Fatalf("record %d of the group the folder was deleted under: %v", i, err)
				}
			}
			a.Close()
			want, lost := second, uint64(len(first))
			if profile == ProfileLowWear {
				want, lost = append(first, second...), 0
			}
			// Lost is what the appender knew the old folder held: its
			// last scan may predate the first records.
			checkRemade(t, a, dir, old, want, lost, false)
		})
	}
}

// TestAppender_Append_LockFileDeleted: only the lock file deleted (the
// folder and its segments stay) is no deleted folder: after a wait for a
// `rm -rf` that does not come, the appender locks the folder again and
// goes on in the same spool.
func TestAppender_Append_LockFileDeleted(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	old := a.Identity().ID
	var first, second []Record
	for i := 0; i < 50; i++ {
		first, second = append(first, testRecord(i, 50)), append(second, testRecord(100+i, 50))
	}
	appendAll(t, a, first)
	if err := os.Remove(filepath.Join(dir, lockFile)); err != nil {
		t.Fatal(err)
	}
	for i, err := range appendEach(t, a, second) {
		if err != nil {
			t.Fatalf("record %d after the lock file was deleted: %v", i, err)
		}
	}
	a.Close()
	if _, err := os.Stat(filepath.Join(dir, lockFile)); err != nil {
		t.Errorf("the lock file was not made again: %v", err)
	}
	got, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if info, _ := ReadIdentity(dir); info.ID != old || len(got) != 100 || a.Stats().FoldersRemade != 0 {
		t.Fatalf("spool %v (was %v), %d records, folders_remade %d; want the same spool, 100, 0", info.ID, old, len(got), a.Stats().FoldersRemade)
	}
}

// TestAppender_Append_FolderBeingDeleted: a group meets the folder in the
// middle of its `rm -rf` (the lock file gone, segments left): the
// appender waits for the deletion to end rather than write files the
// rest of it would delete, then makes the folder again.
func TestAppender_Append_FolderBeingDeleted(t *testing.T) {
	// The deletion below starts 300 ms after the lock file went; on a
	// loaded machine that can be later than the appender's wait for it.
	defer func(w time.Duration) { emptyingWait = w }(emptyingWait)
	emptyingWait = 2 * time.Minute
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var first, second []Record
	for i := 0; i < 50; i++ {
		first, second = append(first, testRecord(i, 50)), append(second, testRecord(100+i, 50))
	}
	appendAll(t, a, first)
	if err := os.Remove(filepath.Join(dir, lockFile)); err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond) // the rest of a slow `rm -rf`
		removed <- os.RemoveAll(dir)
	}()
	// A group sealed in the folder before the rest of it went fails
	// (TestAppender_Append_FolderDeletedAfterSeal); every other one goes
	// into the remade folder.
	durable := 0
	for i, err := range appendEach(t, a, second) {
		switch {
		case err == nil:
			durable++
		case !strings.Contains(err.Error(), "deleted just after"):
			t.Fatalf("record %d while the folder was being deleted: %v", i, err)
		}
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	appendAll(t, a, first) // again, after the deletion: all durable
	a.Close()
	got, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if len(got) != durable+len(first) || a.Stats().FoldersRemade != 1 {
		t.Fatalf("the remade folder holds %d records, folders_remade %d; want %d (the records reported durable), 1", len(got), a.Stats().FoldersRemade, durable+len(first))
	}
	t.Logf("%d of %d records appended during the deletion reported durable", durable, len(second))
}

// TestAppender_Append_FolderDeletedAfterSeal: the folder deleted just
// after a group was sealed in it (the writer may have read it): the group
// is not written again, which could apply it twice, and not reported
// durable either, so that the broker redelivers it; the appends after go
// into the remade folder.
func TestAppender_Append_FolderDeletedAfterSeal(t *testing.T) {
	dir := newSpoolDir(t)
	opts := fastOptions()
	var armed atomic.Bool
	var syncs atomic.Int64
	// A sealed group syncs the segment, then the folder after its
	// rename: the folder goes before the second.
	opts.BeforeSync = func() {
		if armed.Load() && syncs.Add(1) == 2 {
			os.RemoveAll(dir)
		}
	}
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	appendAll(t, a, []Record{testRecord(0, 50)})
	armed.Store(true)
	errs := appendEach(t, a, []Record{testRecord(1, 50)})
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "deleted just after") {
		t.Fatalf("a group sealed in the deleted folder: done(%v), want an error", errs[0])
	}
	var after []Record
	for i := 0; i < 20; i++ {
		after = append(after, testRecord(10+i, 50))
	}
	appendAll(t, a, after)
	a.Close()
	got, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if len(got) != len(after) || a.Stats().FoldersRemade != 1 {
		t.Fatalf("the remade folder holds %d records, folders_remade %d; want %d (not the sealed group), 1", len(got), a.Stats().FoldersRemade, len(after))
	}
}
