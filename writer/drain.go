package writer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/copies"
)

// The drain loop reads a batch of records from the spool, applies them and
// commits, on the one goroutine that owns the connection. A batch is one
// transaction and follows the commit protocol step by step:
//
//	begin         BEGIN IMMEDIATE; the stored position must still be the
//	              writer's (checkPosition); the delivery memory is read
//	              inside the transaction
//	apply         each record's rows (observations queued, written in chunks)
//	flush         the queued observations, the aggregated rows, the hook's rows
//	save          the spool position and the deliveries applied
//	commit        COMMIT
//	after commit  caches, hook and stats learn the batch; the spool releases it
//
// An error in any step before the commit's success rolls everything back,
// in the database and in the hook; the caller (refused) forgets the caches
// and reads the same records again. Nothing the batch learned reaches
// memory that outlives it before the commit.

// drain runs batches, and maintenance steps between them, until ctx ends,
// or until another writer took the database's lock over (that error).
func (w *Writer) drain(ctx context.Context) error {
	for ctx.Err() == nil {
		w.petWatchdog()
		w.stats.LoopTickUnix.Store(time.Now().Unix())
		w.applyReload()
		n, err := w.drainBatch(ctx)
		if errors.Is(err, ErrLocked) {
			w.log.Error().Err(err).Msg("another writer took the database's lock over; stopping")
			return err
		}
		if err != nil {
			w.refused(ctx, err)
			continue
		}
		w.trouble.Succeeded(time.Now())
		more := w.runTaskStep(ctx)
		if n > 0 || more {
			continue
		}
		w.waitForRecords(ctx)
	}
	return nil
}

// openBatch is a batch whose transaction is open.
type openBatch struct {
	ctx  context.Context // the statements': not cancelled by a stop
	b    *batch
	next writerState // where the records applied so far bring the writer
	// moved is, per spool the batch read from, the last record applied
	// and how many; lastSpool is the spool of the batch's last record.
	moved        map[*spoolSlot]*spoolMove
	lastSpool    spool.Identity
	sources      map[string]struct{}
	lastReceived time.Time
	// waitStart..holdStart is the wait for the write lock, holdStart on
	// the time it is held; starved is the part of that the batch waited
	// for the reader, commitStart when COMMIT was sent.
	waitStart, holdStart, commitStart time.Time
	starved                           time.Duration
	lastSlot                          *spoolSlot // openBatch.slot's
	// copyRow and copyDrop are what saveCopies stored and deleted.
	copyRow  copies.Row
	copyDrop int
}

// drainBatch commits one batch and returns how many records it held (0
// when there was nothing to read).
func (w *Writer) drainBatch(ctx context.Context) (int, error) {
	first, err := w.firstRecord(ctx)
	if err != nil || first == nil {
		return 0, err
	}
	ob, err := w.begin(ctx)
	if err != nil {
		return 0, err
	}
	if err := w.fill(ctx, ob, first); err != nil {
		return 0, w.rollback(ob, err)
	}
	if err := w.commit(ob); err != nil {
		return 0, w.rollback(ob, err)
	}
	w.afterCommit(ob)
	return ob.b.counts.messages, nil
}

// firstRecord (re)opens the database and the spool reader as needed and
// waits for the batch's first record: nil when the spool has nothing more,
// or could not be read (spoolTrouble has waited).
func (w *Writer) firstRecord(ctx context.Context) (*prepared, error) {
	if err := w.ensureDB(ctx); err != nil {
		return nil, err
	}
	for reopened := false; ; reopened = true {
		if w.pipe == nil {
			if err := w.refreshSlots(ctx); err != nil {
				return nil, w.spoolTrouble(ctx, err)
			}
			if err := w.syncSlots(ctx); err != nil {
				return nil, w.spoolTrouble(ctx, err)
			}
			pl, err := startPipeline(w.openCursor, w.in)
			if err != nil {
				err = w.spoolReplaced(ctx, err, reopened)
				if err == nil {
					continue
				}
				return nil, w.spoolTrouble(ctx, err)
			}
			w.pipe = pl
		}
		it := w.pipe.next()
		switch {
		case it.eof:
			w.stopReading()
			w.stats.CaughtUp.Store(true)
			return nil, nil
		case it.err != nil:
			if err := w.spoolReplaced(ctx, it.err, reopened); err != nil {
				return nil, w.spoolTrouble(ctx, err)
			}
			continue
		}
		w.stats.CaughtUp.Store(false)
		return it.p, nil
	}
}

// spoolReplaced reopens the spools whose folders were replaced when err
// says a reader found one (spool.ErrSpoolReplaced), once per firstRecord
// (again: already reopened), and returns nil when it did; else err.
func (w *Writer) spoolReplaced(ctx context.Context, err error, again bool) error {
	w.stopReading()
	if again || !errors.Is(err, spool.ErrSpoolReplaced) {
		return err
	}
	if rerr := w.reopenReplaced(ctx); rerr != nil {
		return rerr
	}
	return nil
}

// begin opens the batch's transaction. Its statements run to completion
// even when ctx ends: a stop finishes the batch in progress and commits it.
func (w *Writer) begin(ctx context.Context) (*openBatch, error) {
	sctx := context.WithoutCancel(ctx)
	waitStart := time.Now()
	if _, err := w.db.conn.ExecContext(sctx, "BEGIN IMMEDIATE"); err != nil {
		return nil, fmt.Errorf("begin batch: %w", err)
	}
	for _, sl := range w.slots {
		if err := checkPosition(sctx, w.db.conn, sl.info, sl.pos); err != nil {
			w.db.conn.ExecContext(sctx, "ROLLBACK")
			return nil, err
		}
	}
	return &openBatch{ctx: sctx, b: newBatch(sctx, w.store), next: w.state, sources: map[string]struct{}{},
		moved: map[*spoolSlot]*spoolMove{}, waitStart: waitStart, holdStart: time.Now()}, nil
}

// spoolMove is what a batch read from one spool.
type spoolMove struct {
	pos          Position
	records      int
	lastReceived time.Time
	since        time.Time // spoolSlot.since as the batch leaves it
}

// dedup says whether the writer tells receivers' copies apart: when it
// drains more than one spool.
func (w *Writer) dedup() bool { return len(w.slots) > 1 }

// fill writes the batch in its transaction: everything before the COMMIT.
func (w *Writer) fill(ctx context.Context, ob *openBatch, first *prepared) error {
	if err := w.store.loadDeliveries(ob.ctx); err != nil {
		return err
	}
	if err := w.store.loadForms(ob.ctx); err != nil {
		return err
	}
	if w.dedup() {
		if err := w.store.loadCopies(ob.ctx); err != nil {
			return err
		}
		live := make([]spool.Identity, len(w.slots))
		for i, sl := range w.slots {
			live[i] = sl.info.ID
		}
		ob.b.copies = w.store.copies.View(w.opts.DedupWindow, w.opts.DedupMemory, live)
	}
	if err := w.applyRecords(ctx, ob, first); err != nil {
		return err
	}
	if err := w.flush(ob); err != nil {
		return err
	}
	return w.save(ob)
}

// applyRecords applies p and the records after it until the batch is
// full: Options.BatchMaxRecords records, Options.BatchMaxTime of holding
// the lock, the end of what is sealed, or a stop.
func (w *Writer) applyRecords(ctx context.Context, ob *openBatch, p *prepared) error {
	deadline := time.NewTimer(w.opts.BatchMaxTime - time.Since(ob.holdStart))
	defer deadline.Stop()
	for p != nil {
		sl := ob.slot(w, p.pos.Spool)
		mv := ob.moved[sl]
		if mv == nil {
			mv = &spoolMove{pos: sl.pos.Position, since: sl.since}
			ob.moved[sl] = mv
		}
		// Within one receiver process Seqs are contiguous; a restarted
		// one continues after the block its predecessor reserved. A gap
		// therefore starts a new subscription, which can hold no copy of
		// what was published before it (package copies, late copies).
		if mv.pos.Seq != 0 && p.rec.Seq != mv.pos.Seq+1 {
			mv.since = p.t
		}
		p.since, p.streamTime = mv.since, ob.next.StreamTime
		if err := w.in.apply(ob.b, p); err != nil {
			return err
		}
		mv.pos, mv.lastReceived = p.pos, p.t
		mv.records++
		ob.lastSpool = p.pos.Spool
		if p.t.After(ob.next.StreamTime) {
			ob.next.StreamTime = p.t
		}
		ob.lastReceived = p.t
		if p.rec.Source != "" {
			ob.sources[p.rec.Source] = struct{}{}
		}
		if ob.b.counts.messages >= w.opts.BatchMaxRecords || ctx.Err() != nil || time.Since(ob.holdStart) >= w.opts.BatchMaxTime {
			return nil
		}
		p = w.nextRecord(ob, deadline.C)
	}
	return nil
}

// nextRecord returns the batch's next record, or nil where the batch ends:
// deadline fired while the reader was behind, the end of what is sealed, or
// a spool error (what was read is committed; the next batch reopens the
// spool).
func (w *Writer) nextRecord(ob *openBatch, deadline <-chan time.Time) *prepared {
	it, ok := w.pipe.ready()
	if !ok {
		// The reader is behind: this wait is the spool's and the
		// parser's, not SQLite's.
		readWait := time.Now()
		it, ok = w.pipe.nextBefore(deadline)
		ob.starved += time.Since(readWait)
		if !ok {
			return nil
		}
	}
	switch {
	case it.eof:
		w.stopReading()
		w.stats.CaughtUp.Store(true)
		return nil
	case it.err != nil:
		// A replaced folder is reopened by the next batch, which logs it.
		if !errors.Is(it.err, spool.ErrSpoolReplaced) {
			w.log.Warn().Err(it.err).Msg("spool read failed in the middle of a batch; committing what was read")
		}
		w.stopReading()
		return nil
	}
	return it.p
}

// flush writes what the batch queued and aggregated, then the hook's rows.
func (w *Writer) flush(ob *openBatch) error {
	if err := ob.b.flush(); err != nil {
		return err
	}
	if w.opts.Hook != nil {
		if err := w.opts.Hook.Flush(ob.ctx, w.db.conn); err != nil {
			return fmt.Errorf("batch hook flush: %w", err)
		}
	}
	return nil
}

// slot is the slot of spool id; the batch remembers the last one asked.
func (ob *openBatch) slot(w *Writer, id spool.Identity) *spoolSlot {
	if ob.lastSlot != nil && ob.lastSlot.info.ID == id {
		return ob.lastSlot
	}
	ob.lastSlot = w.slotOf(id)
	return ob.lastSlot
}

// save stores where the batch brings the writer and the deliveries it
// applied, in its transaction: the rows, the positions and the delivery
// memory commit together or not at all.
func (w *Writer) save(ob *openBatch) error {
	for sl, mv := range ob.moved {
		// What the spool still holds after the batch, for the day it is
		// replaced.
		unwritten := sl.src.Depth(mv.pos)
		if err := w.store.savePosition(ob.ctx, spoolPosition{Position: mv.pos, legacy: sl.pos.legacy}, unwritten); err != nil {
			return err
		}
	}
	if err := w.store.saveStream(ob.ctx, ob.next, ob.lastSpool); err != nil {
		return err
	}
	if c := ob.b.copies; c != nil {
		var err error
		if ob.copyRow, ob.copyDrop, err = w.store.saveCopies(ob.ctx, c, w.copyHorizon(ob.next.StreamTime)); err != nil {
			return err
		}
	}
	if err := ob.b.saveForms(ob.next.StreamTime); err != nil {
		return err
	}
	if err := ob.b.saveRetained(); err != nil {
		return err
	}
	return ob.b.saveDeliveries()
}

func (w *Writer) commit(ob *openBatch) error {
	ob.commitStart = time.Now()
	if _, err := w.db.conn.ExecContext(ob.ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit batch: %w", err)
	}
	return nil
}

// rollback undoes the open batch, in the database and in the hook, and
// returns err.
func (w *Writer) rollback(ob *openBatch, err error) error {
	w.db.conn.ExecContext(ob.ctx, "ROLLBACK")
	if w.opts.Hook != nil {
		w.opts.Hook.RolledBack()
	}
	return err
}

// afterCommit hands the committed batch on: the writer's position, the
// caches and the hook learn it, the stats count it, and the spool may
// forget its records.
func (w *Writer) afterCommit(ob *openBatch) {
	now := time.Now()
	w.state = ob.next
	if !ob.lastSpool.IsZero() {
		w.state.current = ob.lastSpool // what saveStream stored
	}
	w.posMu.Lock()
	for sl, mv := range ob.moved {
		sl.pos = spoolPosition{Position: mv.pos}
		sl.lastReceived, sl.since = mv.lastReceived, mv.since
	}
	w.posMu.Unlock()
	ob.b.committed()
	if c := ob.b.copies; c != nil {
		c.Commit(ob.copyRow, ob.copyDrop, w.copyHorizon(ob.next.StreamTime))
	}
	if w.opts.Hook != nil {
		w.opts.Hook.Committed()
	}
	wait, hold := ob.holdStart.Sub(ob.waitStart), now.Sub(ob.holdStart)
	w.stats.addBatch(&ob.b.counts, ob.sources, ob.lastReceived, wait, hold, now)
	w.log.Debug().Int("records", ob.b.counts.messages).Int64("wait_ms", wait.Milliseconds()).Int64("hold_ms", hold.Milliseconds()).
		Int64("commit_ms", now.Sub(ob.commitStart).Milliseconds()).Int64("waited_for_records_ms", ob.starved.Milliseconds()).
		Int("spools", len(ob.moved)).Msg("batch committed")
	for sl, mv := range ob.moved {
		sl.stats.committed(mv.records, ob.b.otherCopies[sl.info.ID], ob.b.lateCopies[sl.info.ID], mv.lastReceived)
		// The rows are durable: the spool may forget the records.
		if err := sl.src.Release(mv.pos); err != nil && !errors.Is(err, spool.ErrSpoolReplaced) {
			w.throttledWarn("release", err, "could not delete drained spool segments; they are retried after the next batch")
		}
		if err := sl.src.SavePosition(mv.pos); err != nil {
			w.throttledWarn("position", err, "could not write the advisory writer-position.json")
		}
	}
}

// copyHorizon is the oldest receive time whose copies are remembered, Unix
// ms: DedupMemory behind the newest record applied.
func (w *Writer) copyHorizon(stream time.Time) int64 {
	return stream.Add(-w.opts.DedupMemory).UnixMilli()
}

// spoolTrouble handles a spool that cannot be read (an unsafe file where
// a segment should be, the folder gone): it is not the database's fault,
// so it is no episode; the writer logs it, waits and reads again. The spool
// quarantines damaged records itself.
func (w *Writer) spoolTrouble(ctx context.Context, err error) error {
	w.stopReading()
	w.throttledWarn("spool", err, "reading the spool failed; retrying in a second")
	w.sleep(ctx, time.Second)
	return nil
}

// waitForRecords blocks until the spool may have more, a task is due, or
// at most a second (so the watchdog is petted and the file checked).
func (w *Writer) waitForRecords(ctx context.Context) {
	wait := time.Second
	if iv := shared.WatchdogInterval(); iv > 0 {
		wait = min(wait, iv)
	}
	now := time.Now()
	for _, t := range w.tasks {
		// A task due but not runnable (no record written yet) must not cut
		// the wait short: it made an idle writer on a never-used spool
		// re-list the folder in a loop, a whole core.
		if !t.running && w.tasksRunnable() {
			wait = min(wait, max(t.next.Sub(now), 0))
		}
	}
	if wait <= 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	w.waitSealed(wctx)
}
