package spool

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
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

// TestUnwrittenGauge_After_CountsFromTheConsumersPosition: the gauge
// counts what comes after the position it is given, in sealed segments
// and in the active one, whatever the advisory position file says; a
// segment whose records nobody can know makes it say -1.
func TestUnwrittenGauge_After_CountsFromTheConsumersPosition(t *testing.T) {
	dir := newSpoolDir(t)
	// Low-wear groups closed early by count go to the active segment.
	opts := Options{Profile: ProfileLowWear, GroupWindow: time.Hour, GroupMaxRecords: 10, SegmentMaxAge: time.Hour}
	for run, n := range []int{100, 50} { // two sealed segments, Seqs apart
		a, err := OpenAppender(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		recs := make([]Record, n)
		for i := range recs {
			recs[i] = testRecord(run*1000+i, 40)
		}
		appendAll(t, a, recs)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	_, poss := readAll(t, dir, ReaderOptions{})
	if len(poss) != 150 {
		t.Fatalf("read %d records, want 150", len(poss))
	}
	// The advisory position says nothing was drained: the gauge must
	// not count from it.
	if err := WriteWriterPosition(dir, Position{}); err != nil {
		t.Fatal(err)
	}
	g := NewUnwrittenGauge(dir)
	for _, c := range []struct {
		after Position
		want  int64
	}{{Position{}, 150}, {poss[0], 149}, {poss[99], 50}, {poss[120], 29}, {poss[149], 0}} {
		if got := g.After(c.after); got != c.want {
			t.Errorf("After(seq %d) = %d, want %d", c.after.Seq, got, c.want)
		}
	}

	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]Record, 30)
	for i := range recs {
		recs[i] = testRecord(5000+i, 40)
	}
	appendAll(t, a, recs)
	var active SegmentInfo
	testkit.WaitFor(t, time.Minute, "the appender's status to show the active segment's 30 records", func() bool {
		st, err := ReadAppenderStatus(dir)
		if err == nil && st.Active != nil && st.Active.Records == 30 {
			active = *st.Active
			return true
		}
		return false
	})
	if got := g.After(poss[149]); got != 30 {
		t.Errorf("After(the last sealed record) = %d, want the active segment's 30", got)
	}
	if got := g.After(Position{Segment: active.ID, Seq: active.FirstSeq + 9}); got != 20 {
		t.Errorf("After(the active segment's 10th record) = %d, want 20", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := g.After(poss[149]); got != 30 {
		t.Errorf("after the appender closed: After(the last sealed record) = %d, want 30 (now sealed)", got)
	}

	// A segment left unsealed by a dead appender holds records nobody
	// can count until an appender recovers it.
	stray := filepath.Join(dir, segmentName(active.LastSeq+seqBlock*4, activeExt))
	if err := os.WriteFile(stray, []byte("unsealed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := g.After(poss[149]); got != -1 {
		t.Errorf("with an unsealed segment and no appender: After = %d, want -1", got)
	}
	os.Remove(stray)
}
