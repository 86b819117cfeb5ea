package receiver

// TEMPORARY in-memory spool used until the real spool lands; deleted then.

import (
	"sync"
	"time"

	"github.com/meshingest/meshingest/spool"
)

type fakeSpool struct {
	mu      sync.Mutex
	queue   []func()
	recs    []spool.Record
	seq     uint64
	limit   int
	closed  bool
	stall   time.Duration
	kick    chan struct{}
	stopped chan struct{}
}

func newFakeSpool(limit int) *fakeSpool {
	f := &fakeSpool{limit: limit, kick: make(chan struct{}, 1), stopped: make(chan struct{})}
	go f.run()
	return f
}

func (f *fakeSpool) Append(rec spool.Record, done func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return spool.ErrClosed
	}
	if len(f.queue) >= f.limit {
		return spool.ErrQueueFull
	}
	f.seq++
	rec.Seq = f.seq
	f.queue = append(f.queue, func() { f.recs = append(f.recs, rec); done(nil) })
	return nil
}

func (f *fakeSpool) run() {
	for {
		time.Sleep(20 * time.Millisecond)
		f.mu.Lock()
		st := f.stall
		f.mu.Unlock()
		if st > 0 {
			time.Sleep(st)
			f.mu.Lock()
			f.stall = 0
			f.mu.Unlock()
		}
		f.mu.Lock()
		q := f.queue
		f.queue = nil
		closed := f.closed
		f.mu.Unlock()
		for _, fn := range q {
			f.mu.Lock()
			fn()
			f.mu.Unlock()
		}
		if closed {
			close(f.stopped)
			return
		}
	}
}

func (f *fakeSpool) Stats() spool.AppenderStats { return spool.AppenderStats{} }
func (f *fakeSpool) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	<-f.stopped
	return nil
}
func (f *fakeSpool) records() []spool.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]spool.Record(nil), f.recs...)
}
