package spool

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// TestInspect_DuringAppendAndDrain runs `spool status`'s Inspect in a tight
// loop beside an appender under load and a draining reader, and checks that
// every record became durable and none was held up by the inspections: an
// inspection that took the appender's lock would stall groups for seconds.
// How long a group takes on a loaded disk is not this test's business, so
// the bound is generous and the worst wait is only logged.
func TestInspect_DuringAppendAndDrain(t *testing.T) {
	dir := newSpoolDir(t)
	const window = 100 * time.Millisecond
	a, err := OpenAppender(dir, Options{Profile: ProfileLowWear, GroupWindow: window, SegmentMaxAge: 1500 * time.Millisecond, GroupMaxRecords: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var inspections, sawActive, drained atomic.Int64
	wg.Add(2)
	go func() { // the operator
		defer wg.Done()
		for ctx.Err() == nil {
			st, err := Inspect(dir)
			if err != nil {
				t.Error(err)
				return
			}
			if st.Active != nil {
				sawActive.Add(1)
			}
			inspections.Add(1)
		}
	}()
	go func() { // the writer
		defer wg.Done()
		r, _ := OpenReader(dir, ReaderOptions{})
		c, _ := r.Cursor(Position{})
		defer c.Close()
		for ctx.Err() == nil {
			_, pos, err := c.Next()
			if errors.Is(err, io.EOF) {
				r.WaitSealed(ctx)
				continue
			}
			if err != nil {
				t.Error(err)
				return
			}
			drained.Add(1)
			WriteWriterPosition(dir, pos)
			r.Release(Position{Segment: pos.Segment, Seq: pos.Segment - 1})
		}
	}()
	var mu sync.Mutex
	var worst time.Duration
	var appended, durable atomic.Int64
	tick := time.NewTicker(time.Millisecond)
	end := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		start := time.Now()
		rec := testRecord(i, 300)
		rec.QoS = 0
		if err := a.Append(rec, func(err error) {
			if err != nil {
				t.Errorf("record %d: %v", i, err)
			}
			durable.Add(1)
			mu.Lock()
			worst = max(worst, time.Since(start))
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		appended.Add(1)
	}
	tick.Stop()
	a.Close()
	testkit.WaitFor(t, time.Minute, "every appended record durable", func() bool { return durable.Load() == appended.Load() })
	cancel()
	wg.Wait()
	st := a.Stats()
	t.Logf("%d records appended, %d drained, %d inspections (%d saw the active segment), worst append→durable %v, commit p99 %v",
		st.AppendedRecords, drained.Load(), inspections.Load(), sawActive.Load(), worst, st.CommitP99)
	if inspections.Load() < 50 || sawActive.Load() == 0 || drained.Load() == 0 {
		t.Fatal("the operator or the writer did not run alongside")
	}
	if limit := 10 * time.Second; worst > limit {
		t.Fatalf("a record waited %v for the disk (groups are %v): something held the appender up", worst, window)
	}
}
