package writer

import (
	"errors"
	"io"
	"sync"
)

// pipeline reads the spool and prepares records on a goroutine of its own,
// ahead of the drain loop, so that a second core takes the spool reads,
// the JSON and frame parsing and the first decode of each transmission,
// while the drain loop's core is busy with SQLite.
//
// The pipeline owns its cursor. It starts after a committed position and
// is stopped (and a new one started from the committed position) whenever
// a batch fails, so what it read ahead never outlives the batch it was
// read for.
type pipeline struct {
	out  chan pipelineItem
	stop chan struct{}
	done sync.WaitGroup
}

// pipelineItem is a prepared record, or the end of what is sealed (eof),
// or a spool error.
type pipelineItem struct {
	p   *prepared
	eof bool
	err error
}

// pipelineDepth is how many prepared records may wait for the drain loop:
// enough to keep both cores busy, small against the memory budget (a
// prepared record is about 2 KiB).
const pipelineDepth = 512

func startPipeline(src Source, after Position, in *ingester) (*pipeline, error) {
	c, err := src.Open(after)
	if err != nil {
		return nil, err
	}
	pl := &pipeline{out: make(chan pipelineItem, pipelineDepth), stop: make(chan struct{})}
	pl.done.Add(1)
	go func() {
		defer pl.done.Done()
		defer c.Close()
		for {
			rec, pos, err := c.Next()
			var it pipelineItem
			switch {
			case errors.Is(err, io.EOF):
				it.eof = true
			case err != nil:
				it.err = err
			default:
				it.p = in.prepare(rec, pos)
			}
			select {
			case pl.out <- it:
			case <-pl.stop:
				return
			}
			if it.p == nil {
				return // eof or error: a new pipeline continues later
			}
		}
	}()
	return pl, nil
}

// close stops the reader goroutine and waits for it, so the next pipeline
// can take over the cursor's position and the ingester's reader state.
func (pl *pipeline) close() {
	close(pl.stop)
	pl.done.Wait()
}
