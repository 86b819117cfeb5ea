package writer

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/meshingest/meshingest/writer/copies"
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
//
// Records cross to the drain loop in chunks: handing them over one at a
// time woke the other goroutine (a futex wake-up and a context switch)
// for every record: about a tenth of the samples in a catch-up profile.
type pipeline struct {
	out  chan []pipelineItem
	stop chan struct{}
	done sync.WaitGroup
	// buf is the rest of the chunk the drain loop is taking items from.
	buf []pipelineItem
	// guessed is what the drain loop gets for a guessed copy: one record
	// reused, which it holds only until it takes the next item (a
	// prepared record allocated for each was most of what a second copy
	// made the collector do).
	guessed prepared
}

// pipelineItem is a prepared record, or a record taken for another
// receiver's copy (copy), or the end of what is sealed (eof), or a spool
// error. The drain loop sees a copy as a prepared record (take1).
type pipelineItem struct {
	p    *prepared
	copy *guessedCopy
	eof  bool
	err  error
}

// pipelineDepth is how many prepared records may wait for the drain loop:
// enough to keep both cores busy, small against the memory budget (a
// prepared record is about 2 KiB).
const pipelineDepth = 256

// pipelineChunk is how many prepared records cross to the drain loop at
// once. The end of what is sealed, or an error, ends a chunk early.
const pipelineChunk = 64

func startPipeline(open func() (Cursor, error), in *ingester) (*pipeline, error) {
	c, err := open()
	if err != nil {
		return nil, err
	}
	var guess *copies.Guess
	if m, ok := c.(*mergeCursor); ok {
		guess = copies.NewGuess(m.window)
	}
	pl := &pipeline{out: make(chan []pipelineItem, pipelineDepth/pipelineChunk), stop: make(chan struct{})}
	pl.done.Add(1)
	go func() {
		defer pl.done.Done()
		defer c.Close()
		chunk := make([]pipelineItem, 0, pipelineChunk)
		for {
			rec, pos, err := c.Next()
			var it pipelineItem
			switch {
			case errors.Is(err, io.EOF):
				it.eof = true
			case err != nil:
				it.err = err
			default:
				it.p, it.copy = in.prepareGuessing(rec, pos, guess)
			}
			chunk = append(chunk, it)
			record := it.p != nil || it.copy != nil
			if record && len(chunk) < pipelineChunk {
				continue
			}
			select {
			case pl.out <- chunk:
			case <-pl.stop:
				return
			}
			if !record {
				return // eof or error: a new pipeline continues later
			}
			chunk = make([]pipelineItem, 0, pipelineChunk)
		}
	}()
	return pl, nil
}

// next returns the next item, waiting for it as long as it takes.
func (pl *pipeline) next() pipelineItem {
	it, _ := pl.nextBefore(nil) // a nil channel never fires
	return it
}

// ready returns the next item if it is already prepared.
func (pl *pipeline) ready() (pipelineItem, bool) {
	if len(pl.buf) == 0 {
		select {
		case pl.buf = <-pl.out:
		default:
			return pipelineItem{}, false
		}
	}
	return pl.take1(), true
}

// nextBefore returns the next item, waiting for it until deadline fires
// (ok false).
func (pl *pipeline) nextBefore(deadline <-chan time.Time) (it pipelineItem, ok bool) {
	if len(pl.buf) == 0 {
		select {
		case pl.buf = <-pl.out:
		case <-deadline:
			return pipelineItem{}, false
		}
	}
	return pl.take1(), true
}

func (pl *pipeline) take1() pipelineItem {
	it := pl.buf[0]
	pl.buf[0] = pipelineItem{} // the chunk's array must not keep it alive
	pl.buf = pl.buf[1:]
	if it.copy != nil {
		it.copy.unprepared(&pl.guessed)
		it.p, it.copy = &pl.guessed, nil
	}
	return it
}

// close stops the reader goroutine and waits for it, so the next pipeline
// can take over the cursor's position and the ingester's reader state.
func (pl *pipeline) close() {
	close(pl.stop)
	pl.done.Wait()
}
