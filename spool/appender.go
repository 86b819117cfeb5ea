package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// Appender appends records to the spool. Two goroutines run behind it, and
// each owns its part:
//   - the appender goroutine (run) owns the files being written: it alone
//     creates, writes, syncs and seals segments, reserves Seqs in the
//     sequence file and fsyncs the folder. Append only encodes a record,
//     gives it its Seq and queues it; run gathers queued records into
//     groups, writes each group in one bbolt transaction followed by one
//     fdatasync, reports durability through the records' done callbacks
//     and seals segments.
//   - the housekeeping goroutine (status.go) owns the folder scan: the
//     trailer cache of sealed segments (depth) and appender-status.json.
//     It only reads segment files, and never one being written.
//
// What both need (the queue, the counters, the byte and free-disk figures,
// the active segment's summary) is under mu. Close stops run, then
// housekeeping, and then makes the last housekeeping pass itself, once
// neither runs.
//
// When a group starts: at once when a record arrives and the last group
// started at least MinGroupInterval ago (an idle appender commits the
// first record without waiting), else when that interval is up; records
// that arrive while a group is written form the next group. GroupWindow,
// when set (the low-wear profile), holds a group open that long after its
// first record; GroupMaxRecords, GroupMaxBytes and, for QoS 1, AckWindow
// close it early.
//
// How a group reaches disk, and what it costs in syncs:
//   - Low-latency profile (the default), and in the low-wear profile when
//     there is no active segment and the group is old enough to seal (the
//     usual case at low rates, since GroupWindow equals SegmentMaxAge): the
//     group is written whole as a new segment under a temporary name, its
//     trailer appended, one fdatasync, renamed to its sealed name, one
//     fsync of the folder. Two syncs per group, and the writer sees it at
//     once.
//   - Otherwise (low-wear groups closed early by count, bytes or a QoS 1
//     ack window) the group is committed to the active segment and
//     fdatasynced: one sync per group, plus one folder fsync when the
//     group created the segment. Sealing appends the trailer (one
//     fdatasync) and renames the file (one folder fsync, shared with the
//     next segment's creation when there is one).
type Appender struct {
	dir  string
	id   IdentityInfo
	opts Options
	lock *shared.FileLock
	tmpl []byte

	// Shared by Append, run and housekeeping, under mu.
	mu            sync.Mutex
	queue         []*entry // not yet in a group, in Seq order
	queueBytes    int64
	queueFirstAck time.Time // arrival of the first QoS >= 1 record in queue
	nextSeq       uint64
	closed        bool
	pendingBytes  int64 // queued or in a group being written: not yet durable
	pendingCount  int
	stats         AppenderStats
	fsyncLat      latencyRing
	commitLat     latencyRing
	spoolBytes    int64 // segment and quarantine bytes at the last scan, plus what was written since
	diskFree      int64 // free bytes at the last scan, minus what was written since; -1 unknown
	noSpace       bool  // a write failed with ENOSPC; cleared when space is back
	noSpaceNeed   int64 // free bytes beyond the floor that count as space back
	activeInfo    *SegmentInfo
	refusedFull   string    // why the last append was refused with ErrFull; "" once one succeeds
	lastGroup     time.Time // when the last group was taken from the queue (monotonic)
	// room is closed (and cleared) when a group leaves the queue's bytes:
	// what a full-queue Append waits on. waitedSince and waited are the
	// wait budget's window (waitRoomLocked).
	room        chan struct{}
	waitedSince time.Time
	waited      time.Duration
	// folder is the spool folder the appender writes (remade.go); the
	// appender goroutine replaces it when it remakes the folder.
	folder appenderFolder

	wake     chan struct{}
	exited   chan struct{}
	stopHK   chan struct{}
	hkExited chan struct{}
	closeErr error

	// Owned by the appender goroutine.
	active   *segmentWriter
	stranded *segmentWriter // closed but not sealed after a failure: blocks new segments
	reserved uint64         // Seqs up to here are reserved in the sequence file
	// sealedThrough is the last Seq of the newest segment renamed to its
	// sealed name: records up to it were visible to the writer.
	sealedThrough uint64
	dirDirty      bool // a name in the folder changed since the last folder fsync

	// Owned by the housekeeping goroutine (and by Close once it stopped).
	depth      depthCache // trailers of the sealed segments, read once each
	lastStatus AppenderStatus
	statusAt   time.Time // when appender-status.json was last written
}

type entry struct {
	enc  []byte
	at   time.Time // when Append queued it (monotonic)
	ack  bool      // QoS >= 1: closes its group after AckWindow
	done func(error)
}

// OpenAppender opens the spool in dir for appending, creating the folder if
// needed. It takes appender.lock (one appender per folder), gives the
// folder its identity if it has none (identity.go; a copy of another
// folder is refused with ErrCopiedSpool), recovers and
// seals any segment a dead appender left unsealed, and starts the appender
// goroutine.
func OpenAppender(dir string, opts Options) (*Appender, error) {
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockAppender(dir)
	if err != nil {
		return nil, err
	}
	id, err := openIdentity(dir)
	if err == nil && id.Copied {
		err = &Error{Op: "open spool", Path: dir, Err: ErrCopiedSpool,
			Hint: "its identity file was written in another folder: appending here and there would issue the same Seqs under one identity. " +
				"If the folder was moved (the original is gone), run `meshingest spool identity --adopt --dir " + dir + "`; if it is a copy, append to the original"}
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	tmpl, err := segmentTemplate()
	if err != nil {
		lock.Close()
		return nil, err
	}
	a := &Appender{
		dir:      dir,
		id:       id,
		opts:     opts.withDefaults(),
		lock:     lock,
		tmpl:     tmpl,
		diskFree: -1,
		depth:    depthCache{},
		wake:     make(chan struct{}, 1),
		exited:   make(chan struct{}),
		stopHK:   make(chan struct{}),
		hkExited: make(chan struct{}),
	}
	a.fsyncLat.init(1024)
	a.commitLat.init(1024)
	if a.folder, err = statFolder(dir); err != nil {
		lock.Close()
		return nil, err
	}
	maxSeq, err := a.recover()
	if err == nil {
		err = a.startSequence(maxSeq)
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	// The free-disk floor holds from the first append; the byte count and
	// depth need a scan of every sealed trailer, which the housekeeping
	// goroutine does at once, so that a large backlog does not delay the
	// receiver's start.
	a.diskFree = statfsFree(dir)
	if a.opts.MinFreeBytes == 0 {
		a.opts.MinFreeBytes = defaultMinFree(statfsTotal(dir))
	}
	go a.run()
	go a.housekeeping()
	return a, nil
}

// Identity is the identity of the spool the appender writes.
func (a *Appender) Identity() IdentityInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

// Append queues rec for the spool and returns at once, unless the queue
// is full: then it waits for room at most Options.QueueFullWait within its
// budget (waitRoomLocked), never for a sync. It assigns rec's Seq (the
// caller's copy is not changed) and, when rec.ReceivedAt is zero, sets it
// to now.
//
// done, if not nil, is called exactly once, from the appender goroutine, in
// append order: nil once the group holding rec is committed and synced, or
// the error that kept it off disk. It must return quickly and never block
// (hand the result to another goroutine if acting on it is slow): every
// later record's durability waits for it.
//
// Refusals, for which done is not called: ErrPayloadTooLarge, ErrFull,
// ErrQueueFull, ErrClosed, ErrInvalidRecord.
func (a *Appender) Append(rec Record, done func(error)) error {
	if len(rec.Payload) > a.opts.MaxPayloadBytes {
		a.mu.Lock()
		a.stats.RefusedTooLarge++
		a.mu.Unlock()
		return fmt.Errorf("%w: %d bytes, the limit is %d (spool.maxPayloadBytes)", ErrPayloadTooLarge, len(rec.Payload), a.opts.MaxPayloadBytes)
	}
	if err := checkEncodable(&rec); err != nil {
		a.mu.Lock()
		a.stats.RefusedInvalid++
		a.mu.Unlock()
		return err
	}
	if rec.ReceivedAt.IsZero() {
		rec.ReceivedAt = time.Now()
	}
	size := int64(encodedSize(&rec))
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if err := a.waitRoomLocked(size); err != nil {
		return err
	}
	if reason := a.fullLocked(size); reason != "" {
		a.stats.RefusedFull++
		a.refusedFull = reason
		return fmt.Errorf("%w: %s", ErrFull, reason)
	}
	a.refusedFull = ""
	rec.Seq = a.nextSeq
	a.nextSeq++
	e := &entry{enc: appendRecord(make([]byte, 0, size), &rec), at: time.Now(), ack: rec.QoS > 0, done: done}
	a.queue = append(a.queue, e)
	a.queueBytes += size
	a.pendingBytes += size
	a.pendingCount++
	// Wake the appender goroutine only when its next deadline or a group
	// limit changes, not on every record.
	signal := len(a.queue) == 1 || len(a.queue) == a.opts.GroupMaxRecords ||
		a.queueBytes >= int64(a.opts.GroupMaxBytes) && a.queueBytes-size < int64(a.opts.GroupMaxBytes)
	if e.ack && a.queueFirstAck.IsZero() {
		a.queueFirstAck = e.at
		signal = true
	}
	if signal {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// waitRoomLocked returns once the queue has room for size more bytes, or
// ErrQueueFull, or ErrClosed. Waiting is the receiver's push-back: its
// MQTT handler blocks, paho stops reading, and a burst waits in the socket
// buffers and the broker instead of being dropped. But everything the
// broker sends, its PINGRESP too, queues behind that burst: a handler
// blocked for most of the ping timeout loses the connection, and the
// broker then discards what it held for this (clean, QoS 0) session,
// uncounted (measured with BenchmarkBurst_QoS0 and a 2 MiB queue: 2
// disconnects, 124,000 messages never received). So appends wait at most
// Options.QueueFullWait in all within any 2 × QueueFullWait; past that
// budget they are refused at once, counted, and the reader catches up
// with the stream.
func (a *Appender) waitRoomLocked(size int64) error {
	budget := a.opts.QueueFullWait
	for a.pendingBytes+size > a.opts.QueueMaxBytes && budget > 0 {
		now := time.Now()
		if now.Sub(a.waitedSince) >= 2*budget {
			a.waitedSince, a.waited = now, 0
		}
		left := budget - a.waited
		if left <= 0 {
			break
		}
		if a.room == nil {
			a.room = make(chan struct{})
			a.stats.QueueFullWaits++
		}
		room := a.room
		a.mu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
		a.mu.Lock()
		a.waited += time.Since(now)
		if a.closed {
			return ErrClosed
		}
	}
	if a.pendingBytes+size > a.opts.QueueMaxBytes {
		a.stats.RefusedQueueFull++
		return fmt.Errorf("%w: %d bytes waiting for the disk (spool.queueMaxBytes %d)", ErrQueueFull, a.pendingBytes, a.opts.QueueMaxBytes)
	}
	return nil
}

// wakeWaitersLocked lets every Append waiting for room look again.
func (a *Appender) wakeWaitersLocked() {
	if a.room != nil {
		close(a.room)
		a.room = nil
	}
}

// fullLocked says why an append of size bytes would exceed a limit, or "".
func (a *Appender) fullLocked(size int64) string {
	switch {
	case a.noSpace:
		return "the last write failed for lack of disk space"
	case a.opts.MaxBytes > 0 && a.spoolBytes+a.pendingBytes+size > a.opts.MaxBytes:
		return fmt.Sprintf("the spool holds %d bytes, the cap is %d (spool.maxBytes)", a.spoolBytes+a.pendingBytes, a.opts.MaxBytes)
	case a.opts.MinFreeBytes > 0 && a.diskFree >= 0 && a.diskFree-a.pendingBytes-size < a.opts.MinFreeBytes:
		return fmt.Sprintf("%d bytes free on the disk, the floor is %d (spool.minFreeBytes)", max(a.diskFree-a.pendingBytes, 0), a.opts.MinFreeBytes)
	}
	return ""
}

// Close stops accepting records, writes and syncs everything queued, seals
// the active segment and releases the folder. It returns the first error
// met while doing so.
func (a *Appender) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		<-a.exited
		return a.closeErr
	}
	a.closed = true
	a.wakeWaitersLocked()
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	<-a.exited
	close(a.stopHK)
	<-a.hkExited
	a.housekeep()
	a.lock.Close()
	return a.closeErr
}

// run is the appender goroutine.
func (a *Appender) run() {
	defer close(a.exited)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		a.mu.Lock()
		closing := a.closed
		now := time.Now()
		for len(a.queue) > 0 && (closing || a.groupDueLocked(now)) {
			g, gBytes := a.takeGroupLocked()
			more := len(a.queue) > 0
			a.mu.Unlock()
			a.commitGroup(g, gBytes, closing, more)
			a.mu.Lock()
			now = time.Now()
		}
		deadline := time.Time{}
		if len(a.queue) > 0 {
			deadline = a.groupDeadlineLocked()
		}
		a.mu.Unlock()

		if a.active != nil && (closing || !now.Before(a.active.sealAt)) {
			a.sealActive()
		}
		if closing {
			if a.active == nil && a.stranded != nil {
				a.noteErr(a.sealStranded())
			}
			if a.dirDirty {
				a.noteErr(a.syncFolder())
			}
			return
		}
		if a.active != nil && (deadline.IsZero() || a.active.sealAt.Before(deadline)) {
			deadline = a.active.sealAt
		}
		if a.dirDirty && deadline.IsZero() {
			// Nothing else is coming soon to share the folder fsync with.
			a.noteErr(a.syncFolder())
		}
		wait := time.Hour
		if !deadline.IsZero() {
			wait = max(time.Until(deadline), 0)
		}
		timer.Reset(wait)
		select {
		case <-a.wake:
		case <-timer.C:
		}
	}
}

func (a *Appender) noteErr(err error) {
	if err == nil {
		return
	}
	a.mu.Lock()
	a.stats.LastError = err.Error()
	if a.closeErr == nil && a.closed {
		a.closeErr = err
	}
	if errors.Is(err, syscall.ENOSPC) {
		a.noSpace = true
		a.noSpaceNeed = max(a.noSpaceNeed, int64(a.opts.GroupMaxBytes))
	}
	a.mu.Unlock()
}

func (a *Appender) groupDueLocked(now time.Time) bool {
	return len(a.queue) >= a.opts.GroupMaxRecords || a.queueBytes >= int64(a.opts.GroupMaxBytes) ||
		!now.Before(a.groupDeadlineLocked())
}

// groupDeadlineLocked is when the next group starts: GroupWindow after its
// first record, and not before MinGroupInterval after the last group
// started; a QoS >= 1 record brings it forward to AckWindow after it.
func (a *Appender) groupDeadlineLocked() time.Time {
	d := a.queue[0].at.Add(a.opts.GroupWindow)
	if next := a.lastGroup.Add(a.opts.MinGroupInterval); next.After(d) {
		d = next
	}
	if !a.queueFirstAck.IsZero() {
		if ad := a.queueFirstAck.Add(a.opts.AckWindow); ad.Before(d) {
			d = ad
		}
	}
	return d
}

// takeGroupLocked removes the next group from the queue.
func (a *Appender) takeGroupLocked() ([]*entry, int64) {
	n, bytes := 0, int64(0)
	for n < len(a.queue) && n < a.opts.GroupMaxRecords && (n == 0 || bytes+int64(len(a.queue[n].enc)) <= int64(a.opts.GroupMaxBytes)) {
		bytes += int64(len(a.queue[n].enc))
		n++
	}
	g := a.queue[:n:n]
	a.queue = a.queue[n:]
	a.lastGroup = time.Now()
	a.queueBytes -= bytes
	a.queueFirstAck = time.Time{}
	for _, e := range a.queue {
		if e.ack {
			a.queueFirstAck = e.at
			break
		}
	}
	if len(a.queue) == 0 {
		a.queue = nil // let the backing array go
	}
	return g, bytes
}

func (a *Appender) commitGroup(g []*entry, gBytes int64, closing, more bool) {
	start := time.Now()
	err := a.writeGroup(g, gBytes, closing, more, start)
	took := time.Since(start)
	a.mu.Lock()
	a.pendingBytes -= gBytes
	a.pendingCount -= len(g)
	a.wakeWaitersLocked()
	if err == nil {
		a.stats.AppendedRecords += uint64(len(g))
		a.stats.AppendedBytes += uint64(gBytes)
		a.stats.Groups++
		a.commitLat.add(took)
		a.spoolBytes += gBytes
		if a.diskFree >= 0 {
			a.diskFree -= gBytes
		}
	} else {
		a.stats.FailedRecords += uint64(len(g))
		a.stats.FailedGroups++
		a.stats.LastError = err.Error()
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			a.noSpace = true
			// Space is back when the group that failed would fit.
			a.noSpaceNeed = max(a.noSpaceNeed, min(gBytes+int64(len(a.tmpl)), int64(a.opts.GroupMaxBytes)))
		}
	}
	a.publishActiveLocked()
	a.mu.Unlock()
	for _, e := range g {
		if e.done != nil {
			e.done(err)
		}
	}
}

// writeGroup writes one group (writeGroupIn), then makes sure it is in
// the spool folder: when the folder was deleted under it, the folder is
// made again and the group written there (remade.go), so that its records
// are never reported durable in a folder that is gone.
func (a *Appender) writeGroup(g []*entry, gBytes int64, closing, more bool, now time.Time) error {
	encs := make([][]byte, len(g))
	for i, e := range g {
		encs[i] = e.enc
	}
	err := a.writeGroupIn(encs, gBytes, closing, more, now, g[0].at)
	if a.folderIsOurs() {
		return err
	}
	last := recordSeq(encs[len(encs)-1])
	visible := last <= a.sealedThrough
	res, rerr := a.remakeFolder()
	if rerr != nil {
		return rerr
	}
	switch {
	case !res.remade:
		return err // the folder is ours; only its lock file was gone
	case res.rescued.holds(recordSeq(encs[0])):
		return nil // it was in the active segment, now sealed in the new folder
	case visible:
		// Sealed in the old folder before it went: the writer may have
		// applied it, so writing it again could apply it twice. Not
		// reported durable: a QoS 1 message is redelivered by the
		// broker, and the writer recognises a redelivery it applied.
		return &Error{Op: "append", Path: a.dir, Err: fmt.Errorf("the spool folder was deleted just after records %d to %d were sealed in it", recordSeq(encs[0]), last),
			Hint: "the folder was made again; QoS 1 messages are redelivered, QoS 0 ones are counted as not written"}
	}
	return a.writeWholeSegment(encs)
}

// writeGroupIn writes one group. With the low-latency profile every group is
// a sealed segment of its own. With low-wear, more says records are
// already queued behind it: then a new segment is kept active for them,
// since a segment per group would cost a sync per group more.
func (a *Appender) writeGroupIn(encs [][]byte, gBytes int64, closing, more bool, now, firstAt time.Time) error {
	if err := a.reserveThrough(recordSeq(encs[len(encs)-1])); err != nil {
		return err
	}
	if a.stranded != nil {
		if err := a.sealStranded(); err != nil {
			return err
		}
	}
	if a.active == nil {
		if a.opts.sealEachGroup() {
			return a.writeWholeSegment(encs)
		}
		if !more && (closing || now.Sub(firstAt) >= a.opts.SegmentMaxAge || gBytes >= a.opts.SegmentMaxBytes) {
			return a.writeWholeSegment(encs)
		}
		id := recordSeq(encs[0])
		w, err := createSegment(filepath.Join(a.dir, segmentName(id, activeExt)), id, a.id.ID, a.tmpl, a.mmapSize())
		if err != nil {
			return err
		}
		w.sealAt = firstAt.Add(a.opts.SegmentMaxAge)
		a.active = w
		a.dirDirty = true
	}
	w := a.active
	if err := w.put(encs); err != nil {
		a.strandActive()
		return err
	}
	if err := a.fdatasync(w.file); err != nil {
		a.strandActive()
		return &Error{Op: "fdatasync segment", Path: w.path, Err: err, Hint: hintForWriteError(err)}
	}
	if a.dirDirty {
		if err := a.syncFolder(); err != nil {
			return err
		}
	}
	if w.size >= a.opts.SegmentMaxBytes {
		a.sealActive()
	}
	return nil
}

// writeWholeSegment writes a group as a segment of its own, sealed at once:
// invisible under a temporary name until complete and synced, so bbolt's
// own syncs are not needed.
func (a *Appender) writeWholeSegment(encs [][]byte) error {
	id := recordSeq(encs[0])
	tmp := filepath.Join(a.dir, segmentName(id, tmpExt))
	os.Remove(tmp) // left by a failed attempt of this process
	w, err := createSegment(tmp, id, a.id.ID, a.tmpl, a.mmapSize())
	if err != nil {
		return err
	}
	err = w.put(encs)
	if err == nil {
		err = w.finish(a.fdatasync)
	}
	if err == nil {
		if err = os.Rename(tmp, filepath.Join(a.dir, segmentName(id, sealedExt))); err != nil {
			err = &Error{Op: "seal segment", Path: tmp, Err: err}
		}
	}
	if err != nil {
		w.close()
		os.Remove(tmp)
		return err
	}
	a.sealedThrough = recordSeq(encs[len(encs)-1])
	a.mu.Lock()
	a.stats.SegmentsSealed++
	a.mu.Unlock()
	a.dirDirty = true
	return a.syncFolder()
}

// mmapSize is the address space to map for a segment being written: its
// largest size, a full segment plus one group.
func (a *Appender) mmapSize() int {
	return int(min(a.opts.SegmentMaxBytes+2*int64(a.opts.GroupMaxBytes), 1<<30))
}

// sealActive seals the active segment: trailer, fdatasync, rename. The
// folder fsync is left to the next group or the end of the loop, so that a
// new segment's creation can share it.
func (a *Appender) sealActive() {
	if !a.folderIsOurs() {
		// Sealing would close the only copy of its records left: the
		// file is gone with the folder. remakeFolder writes them anew.
		if res, err := a.remakeFolder(); err != nil {
			a.noteErr(err)
		} else if res.remade {
			return
		}
	}
	w := a.active
	a.active = nil
	a.stranded = w
	a.noteErr(a.sealStranded())
	a.mu.Lock()
	a.publishActiveLocked()
	a.mu.Unlock()
}

func (a *Appender) strandActive() {
	w := a.active
	a.active = nil
	w.close()
	a.stranded = w
}

// sealStranded seals a segment closed after a failure or a failed seal.
// Until it succeeds no new segment is started: segments must become sealed
// in id order, or a reader could pass a segment before it appears.
func (a *Appender) sealStranded() error {
	w := a.stranded
	if err := w.finish(a.fdatasync); err != nil {
		return err
	}
	sealed := filepath.Join(a.dir, segmentName(w.id, sealedExt))
	if err := os.Rename(w.path, sealed); err != nil {
		return &Error{Op: "seal segment", Path: w.path, Err: err}
	}
	a.stranded = nil
	a.sealedThrough = w.sum.LastSeq
	a.dirDirty = true
	a.mu.Lock()
	a.stats.SegmentsSealed++
	a.mu.Unlock()
	return nil
}

// fdatasync syncs f, counting it and its latency.
func (a *Appender) fdatasync(f *os.File) error {
	if a.opts.BeforeSync != nil {
		a.opts.BeforeSync()
	}
	start := time.Now()
	err := fdatasyncFile(f)
	a.countSync(time.Since(start))
	return err
}

// syncFolder fsyncs the spool folder, counting it.
func (a *Appender) syncFolder() error {
	if a.opts.BeforeSync != nil {
		a.opts.BeforeSync()
	}
	start := time.Now()
	err := syncDir(a.dir)
	a.countSync(time.Since(start))
	if err != nil {
		return &Error{Op: "fsync spool folder", Path: a.dir, Err: err, Hint: hintForWriteError(err)}
	}
	a.dirDirty = false
	return nil
}

func (a *Appender) countSync(d time.Duration) {
	a.mu.Lock()
	a.stats.Fsyncs++
	a.fsyncLat.add(d)
	a.mu.Unlock()
}

func (a *Appender) reserveThrough(seq uint64) error {
	if seq <= a.reserved {
		return nil
	}
	v := seq + seqBlock
	if err := writeSequence(a.dir, v, a.fdatasync, a.syncFolder); err != nil {
		return err
	}
	a.reserved = v
	return nil
}

// publishActiveLocked copies the active segment's state for Stats and the
// status file.
func (a *Appender) publishActiveLocked() {
	w := a.active
	if w == nil {
		a.activeInfo = nil
		return
	}
	a.activeInfo = &SegmentInfo{
		ID: w.id, State: StateActive, Bytes: w.size,
		Records: w.sum.Records, FirstSeq: w.sum.FirstSeq, LastSeq: w.sum.LastSeq,
		Oldest: w.sum.OldestTime(), Newest: w.sum.NewestTime(),
	}
}
