package spool

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

func fastOptions() Options {
	return Options{GroupWindow: 20 * time.Millisecond, SegmentMaxAge: 50 * time.Millisecond, AckWindow: 5 * time.Millisecond}
}

func TestAppender_Append_ReadBackInOrder(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	var want []Record
	for i := 0; i < 3000; i++ {
		want = append(want, testRecord(i, i%500))
	}
	appendAll(t, a, want[:1000])
	time.Sleep(80 * time.Millisecond) // let the active segment age and seal
	appendAll(t, a, want[1000:])
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, poss := readAll(t, dir, ReaderOptions{})
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if !sameContent(got[i], want[i]) {
			t.Fatalf("record %d: %+v, want %+v", i, got[i], want[i])
		}
		if i > 0 && got[i].Seq <= got[i-1].Seq {
			t.Fatalf("Seq not increasing at %d", i)
		}
		if poss[i].Seq != got[i].Seq || poss[i].Segment > got[i].Seq {
			t.Fatalf("position %v for Seq %d", poss[i], got[i].Seq)
		}
	}
}

func TestAppender_Append_DoneInOrderAfterDurable(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 500; i++ {
		wg.Add(1)
		i := i
		if err := a.Append(testRecord(i, 100), func(err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("done %d called at position %d", v, i)
		}
	}
	st := a.Stats()
	if st.AppendedRecords != 500 || st.Groups == 0 || st.Fsyncs == 0 || st.QueuedRecords != 0 {
		t.Fatalf("stats %+v", st)
	}
	a.Close()
}

func TestAppender_Append_Refusals(t *testing.T) {
	dir := newSpoolDir(t)
	stall := make(chan struct{})
	opts := fastOptions()
	opts.MaxPayloadBytes = 1000
	opts.QueueMaxBytes = 10_000
	opts.QueueFullWait = 3 * time.Second
	var once sync.Once
	opts.BeforeSync = func() { <-stall }
	a, err := OpenAppenderAfterStart(t, dir, opts, &once)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Append(testRecord(1, 1001), nil); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversized payload: %v", err)
	}
	n := 0
	for ; ; n++ {
		err := a.Append(testRecord(n, 500), nil)
		if errors.Is(err, ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 15 || n > 20 {
		t.Fatalf("queue took %d records of ~600 bytes under a 10,000-byte bound", n)
	}
	// The disk is still stalled and the wait budget spent: the next
	// append is refused at once (it would wait again only 6 s after the
	// first wait began).
	if err := a.Append(testRecord(n, 500), nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("second append into the stalled queue: %v", err)
	}
	st := a.Stats()
	if st.RefusedTooLarge != 1 || st.RefusedQueueFull != 2 || st.QueueFullWaits != 1 || st.QueuedRecords != n {
		t.Fatalf("stats %+v", st)
	}
	close(stall)
	a.Close()
	if err := a.Append(testRecord(1, 1), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
	got, _ := readAll(t, dir, ReaderOptions{})
	if len(got) != n {
		t.Fatalf("read %d, want %d", len(got), n)
	}
}

// OpenAppenderAfterStart opens an appender whose BeforeSync hook only
// takes effect after OpenAppender's own syncs.
// A burst larger than the queue on a disk slower than the burst: each
// append that finds the queue full waits for the group being written to
// leave it, so nothing is refused (the receiver's push-back on the MQTT
// connection). On the old code every append past the bound was refused.
func TestAppender_Append_FullQueueWaitsForRoom(t *testing.T) {
	dir := newSpoolDir(t)
	opts := fastOptions()
	opts.QueueMaxBytes = 20_000
	opts.QueueFullWait = time.Minute // generous: a loaded machine
	opts.BeforeSync = func() { time.Sleep(5 * time.Millisecond) }
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	const n = 400 // ~240 KB through a 20 KB queue
	var durable sync.WaitGroup
	durable.Add(n)
	for i := 0; i < n; i++ {
		if err := a.Append(testRecord(i, 500), func(error) { durable.Done() }); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	durable.Wait()
	st := a.Stats()
	if st.RefusedQueueFull != 0 || st.QueueFullWaits == 0 || st.AppendedRecords != n {
		t.Fatalf("stats %+v: want every record appended after waits", st)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, dir, ReaderOptions{}); len(got) != n {
		t.Fatalf("read %d, want %d", len(got), n)
	}
}

// Close while an append waits for room: the append returns ErrClosed at
// once and its record is not written.
func TestAppender_Close_WakesWaitingAppend(t *testing.T) {
	dir := newSpoolDir(t)
	stall := make(chan struct{})
	opts := fastOptions()
	opts.QueueMaxBytes = 5_000
	opts.QueueFullWait = time.Hour
	var once sync.Once
	opts.BeforeSync = func() { <-stall }
	a, err := OpenAppenderAfterStart(t, dir, opts, &once)
	if err != nil {
		t.Fatal(err)
	}
	queued := 0
	for ; a.Stats().QueuedBytes+600 <= opts.QueueMaxBytes; queued++ {
		if err := a.Append(testRecord(queued, 500), nil); err != nil {
			t.Fatal(err)
		}
	}
	waiting := make(chan error)
	go func() { waiting <- a.Append(testRecord(queued, 500), nil) }()
	testkit.WaitFor(t, time.Minute, "an append waiting for room", func() bool { return a.Stats().QueueFullWaits == 1 })
	closed := make(chan error)
	go func() { closed <- a.Close() }()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Fatalf("the waiting append returned %v, want ErrClosed", err)
	}
	close(stall)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, dir, ReaderOptions{}); len(got) != queued {
		t.Fatalf("read %d, want the %d queued before the wait", len(got), queued)
	}
}

func OpenAppenderAfterStart(t *testing.T, dir string, opts Options, _ *sync.Once) (*Appender, error) {
	hook := opts.BeforeSync
	var armed bool
	var mu sync.Mutex
	opts.BeforeSync = func() {
		mu.Lock()
		on := armed
		mu.Unlock()
		if on {
			hook()
		}
	}
	a, err := OpenAppender(dir, opts)
	mu.Lock()
	armed = true
	mu.Unlock()
	return a, err
}

func TestAppender_Full_ByteCap(t *testing.T) {
	dir := newSpoolDir(t)
	opts := fastOptions()
	opts.MaxBytes = 200_000
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		err := a.Append(testRecord(i, 1000), nil)
		if errors.Is(err, ErrFull) {
			full = err
		} else if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if full == nil {
		t.Fatal("never full")
	}
	if st := a.Stats(); !st.Full || st.RefusedFull != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOpenAppender_Locked(t *testing.T) {
	dir := newSpoolDir(t)
	a, err := OpenAppender(dir, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = OpenAppender(dir, fastOptions())
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second appender: %v", err)
	}
	if pid, _ := ReadAppenderPID(dir); pid != os.Getpid() {
		t.Fatalf("pid %d in lock", pid)
	}
	if !AppenderAlive(dir) {
		t.Fatal("appender not seen alive")
	}
}

func TestAppender_Seq_GrowsAfterEverythingDrained(t *testing.T) {
	dir := newSpoolDir(t)
	a, _ := OpenAppender(dir, fastOptions())
	appendAll(t, a, []Record{testRecord(1, 10), testRecord(2, 10)})
	a.Close()
	got, poss := readAll(t, dir, ReaderOptions{})
	r, _ := OpenReader(dir, ReaderOptions{})
	if err := r.Release(poss[len(poss)-1]); err != nil {
		t.Fatal(err)
	}
	if segs, _ := listSegments(dir, sealedExt); len(segs) != 0 {
		t.Fatalf("segments left after release: %v", segs)
	}
	if err := r.Release(poss[len(poss)-1]); err != nil {
		t.Fatalf("second release: %v", err)
	}
	a, _ = OpenAppender(dir, fastOptions())
	appendAll(t, a, []Record{testRecord(3, 10)})
	a.Close()
	got2, _ := readAll(t, dir, ReaderOptions{})
	if len(got2) != 1 || got2[0].Seq <= got[len(got)-1].Seq {
		t.Fatalf("after restart Seq %d, before %d", got2[0].Seq, got[len(got)-1].Seq)
	}
}
