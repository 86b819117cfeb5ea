package spool

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// groupTestDeadline is how long a condition may take on a loaded machine;
// nothing here asserts how fast.
const groupTestDeadline = 30 * time.Second

// doneLog records the order in which done callbacks ran.
type doneLog struct {
	mu    sync.Mutex
	order []int
	errs  []error
}

func (l *doneLog) done(i int) func(error) {
	return func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.order = append(l.order, i)
		if err != nil {
			l.errs = append(l.errs, err)
		}
	}
}

func (l *doneLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order)
}

// sealedCount is how many sealed segments dir holds.
func sealedCount(t *testing.T, dir string) int {
	t.Helper()
	segs, err := listSegments(dir, sealedExt)
	if err != nil {
		t.Fatal(err)
	}
	return len(segs)
}

// The first record after an idle spell is committed without waiting for a
// window, and sealed, so the writer can read it: with the minimum interval
// and the segment age an hour long, only that path makes it durable before
// Close.
func TestAppender_Append_FirstAfterIdleCommitsAtOnce(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, Options{MinGroupInterval: time.Hour, SegmentMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var log doneLog
	if err := a.Append(testRecord(1, 100), log.done(1)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, groupTestDeadline, "the first record durable", func() bool { return log.count() == 1 })
	if len(log.errs) != 0 {
		t.Fatal(log.errs)
	}
	if n := sealedCount(t, dir); n != 1 {
		t.Fatalf("%d sealed segments once the first record was durable, want 1", n)
	}
	if segs, _ := listSegments(dir, activeExt); len(segs) != 0 {
		t.Fatalf("an active segment exists: %v", segs)
	}
}

// Records that arrive while a group is being synced wait for that sync and
// then form the next group together: one group each, two sealed segments,
// done in append order.
func TestAppender_Append_RecordsDuringSyncFormNextGroup(t *testing.T) {
	dir := newSpoolDir(t)
	var armed atomic.Bool
	syncing := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	opts := Options{MinGroupInterval: time.Nanosecond, SegmentMaxAge: time.Hour, BeforeSync: func() {
		if !armed.Load() {
			return
		}
		once.Do(func() {
			close(syncing)
			<-release
		})
	}}
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	armed.Store(true)
	var log doneLog
	if err := a.Append(testRecord(0, 100), log.done(0)); err != nil {
		t.Fatal(err)
	}
	<-syncing // the first group's disk work has started and is held
	for i := 1; i <= 2; i++ {
		if err := a.Append(testRecord(i, 100), log.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	testkit.WaitFor(t, groupTestDeadline, "three records durable", func() bool { return log.count() == 3 })
	st := a.Stats()
	if st.Groups != 2 || st.AppendedRecords != 3 {
		t.Fatalf("%d groups for %d records, want 2 groups (the first record, then the two that came during its sync)", st.Groups, st.AppendedRecords)
	}
	if len(log.errs) != 0 || log.order[0] != 0 || log.order[1] != 1 || log.order[2] != 2 {
		t.Fatalf("done order %v, errors %v", log.order, log.errs)
	}
	if n := sealedCount(t, dir); n != 2 {
		t.Fatalf("%d sealed segments, want one per group", n)
	}
}

// Under load the minimum interval holds groups apart: records appended
// after a group started, within the interval, are gathered into one group
// (here an hour long, so they are written at Close).
func TestAppender_Append_MinGroupIntervalGathers(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, Options{MinGroupInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var log doneLog
	if err := a.Append(testRecord(0, 100), log.done(0)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, groupTestDeadline, "the first record durable", func() bool { return log.count() == 1 })
	for i := 1; i <= 5; i++ {
		if err := a.Append(testRecord(i, 100), log.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Groups != 2 || st.AppendedRecords != 6 || log.count() != 6 {
		t.Fatalf("%d groups, %d records, %d done; want 2 groups of 1 and 5", st.Groups, st.AppendedRecords, log.count())
	}
}

// The low-wear profile keeps today's windows: a group gathers for
// GroupWindow after its first record, so records appended together are
// one group even with the first one alone at first.
func TestAppender_Append_LowWearGathersWindow(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, Options{Profile: ProfileLowWear, GroupWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var log doneLog
	for i := 0; i < 4; i++ {
		if err := a.Append(testRecord(i, 100), log.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Groups != 1 || log.count() != 4 {
		t.Fatalf("%d groups, %d done; want one group of 4", st.Groups, log.count())
	}
}

// Housekeeping reads each sealed segment's trailer once: the depth cache
// holds every sealed segment after a pass.
func TestAppender_Housekeep_CachesTrailers(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, Options{MinGroupInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		appendAll(t, a, []Record{testRecord(i, 100)})
	}
	if err := a.Close(); err != nil { // stops housekeeping, then makes the last pass
		t.Fatal(err)
	}
	n := sealedCount(t, dir)
	if n == 0 || len(a.depth) != n {
		t.Fatalf("depth cache holds %d trailers, %d segments are sealed", len(a.depth), n)
	}
	if st := a.Stats(); st.DepthSegments != n {
		t.Fatalf("depth %d segments, %d sealed", st.DepthSegments, n)
	}
}
