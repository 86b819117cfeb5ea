package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// Reader reads the sealed segments of a spool in order: the writer drains
// it, the CLI inspects it. It never touches the active segment, and any
// number of readers may run beside the appender.
type Reader struct {
	dir  string
	opts ReaderOptions

	mu     sync.Mutex
	tmpl   []byte // segment template for repairs, built on first use
	seen   uint64 // highest sealed segment id listed so far
	stats  ReaderStats
	watch  watcher // WaitSealed's watch on the folder (watch.go)
	closed bool

	listings atomic.Uint64 // folder listings, for the tests of idle waiting
}

// ReaderStats counts what a Reader did.
type ReaderStats struct {
	SegmentsRead     uint64 `json:"segments_read"`
	RecordsRead      uint64 `json:"records_read"`
	SegmentsReleased uint64 `json:"segments_released"`
	// SegmentsDamaged failed their checks; their intact records were still
	// read. Unless the reader inspects only, each was rebuilt from its
	// intact records and its original moved to quarantine/.
	SegmentsDamaged    uint64 `json:"segments_damaged"`
	RecordsQuarantined uint64 `json:"records_quarantined"`
	EntriesLost        uint64 `json:"entries_lost"` // damaged beyond delimiting
}

// OpenReader opens the spool in dir for reading. Unless opts.Inspect, it
// creates the folder if needed (the writer may start before the receiver
// ever ran) and removes repairs a crashed reader left half done.
func OpenReader(dir string, opts ReaderOptions) (*Reader, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPollInterval
	}
	if opts.PollMaxInterval <= 0 {
		opts.PollMaxInterval = defaultPollMaxInterval
	}
	opts.PollMaxInterval = max(opts.PollMaxInterval, opts.PollInterval)
	if opts.Inspect {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, &Error{Op: "open spool", Path: dir, Err: err, Hint: "check --dir or spoolDir in the configuration"}
		}
		if !fi.IsDir() {
			return nil, &Error{Op: "open spool", Path: dir, Err: errors.New("not a folder")}
		}
	} else {
		if err := prepareDir(dir); err != nil {
			return nil, err
		}
		stale, err := listSegments(dir, repairingExt)
		if err != nil {
			return nil, err
		}
		for _, s := range stale {
			os.Remove(filepath.Join(dir, s.Name))
		}
	}
	return &Reader{dir: dir, opts: opts}, nil
}

// Dir is the spool folder.
func (r *Reader) Dir() string { return r.dir }

// Stats returns the reader's counters.
func (r *Reader) Stats() ReaderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// listSealed lists the sealed segments, counting the listing.
func (r *Reader) listSealed() ([]segmentFile, error) {
	r.listings.Add(1)
	return listSegments(r.dir, sealedExt)
}

func (r *Reader) noteListed(segs []segmentFile) {
	if n := len(segs); n > 0 {
		r.mu.Lock()
		r.seen = max(r.seen, segs[n-1].ID)
		r.mu.Unlock()
	}
}

// Cursor returns a cursor over the records after pos, in Seq order, from
// sealed segments only. Memory does not depend on the backlog: one segment
// is open at a time.
func (r *Reader) Cursor(after Position) (*Cursor, error) {
	if _, err := os.Stat(r.dir); err != nil {
		return nil, &Error{Op: "open spool", Path: r.dir, Err: err}
	}
	return &Cursor{r: r, after: after}, nil
}

// Cursor walks the sealed segments. It is not safe for concurrent use.
type Cursor struct {
	r       *Reader
	after   Position // the last record returned (or the start)
	lastSeg uint64   // id of the last segment opened; 0 before the first
	opened  bool
	pending []segmentFile
	cur     *segmentReader
}

// Next returns the next record and its Position. At the end of the sealed
// segments it returns io.EOF; calling it again later continues with
// segments sealed since. A damaged segment is reported (OnQuarantine,
// Stats) and its intact records are returned; an unsafe file where a
// segment should be stops the cursor with an error that says what to do.
func (c *Cursor) Next() (Record, Position, error) {
	for {
		if c.cur == nil {
			if len(c.pending) == 0 {
				if err := c.list(); err != nil {
					return Record{}, c.after, err
				}
				if len(c.pending) == 0 {
					return Record{}, c.after, io.EOF
				}
			}
			s := c.pending[0]
			c.pending = c.pending[1:]
			c.lastSeg, c.opened = s.ID, true
			sr, err := c.r.openSegment(s, c.after.Seq)
			if errors.Is(err, os.ErrNotExist) {
				continue // released meanwhile
			}
			if err != nil {
				return Record{}, c.after, err
			}
			c.cur = sr
		}
		rec, err := c.cur.next()
		if err == io.EOF {
			c.cur.close()
			c.cur = nil
			continue
		}
		if err != nil {
			return Record{}, c.after, err
		}
		c.after = Position{Segment: c.cur.id, Seq: rec.Seq}
		c.r.mu.Lock()
		c.r.stats.RecordsRead++
		c.r.mu.Unlock()
		return rec, c.after, nil
	}
}

// list finds the sealed segments this cursor has not opened yet, skipping
// those wholly at or before its position: segment ids are the Seq of their
// first record, so a segment is behind pos when the next one starts at or
// before pos.Seq+1.
func (c *Cursor) list() error {
	segs, err := c.r.listSealed()
	if err != nil {
		return err
	}
	c.r.noteListed(segs)
	c.pending = c.pending[:0]
	for i, s := range segs {
		if c.opened && s.ID <= c.lastSeg {
			continue
		}
		if i+1 < len(segs) && segs[i+1].ID <= c.after.Seq+1 {
			continue
		}
		c.pending = append(c.pending, s)
	}
	return nil
}

// Close releases the segment the cursor has open.
func (c *Cursor) Close() error {
	if c.cur != nil {
		c.cur.close()
		c.cur = nil
	}
	return nil
}

// segmentReader reads one sealed segment: through bbolt when its trailer
// verifies, from a salvage of its pages when not.
type segmentReader struct {
	id   uint64
	path string
	db   *bbolt.DB
	tx   *bbolt.Tx
	c    *bbolt.Cursor
	k, v []byte // next key/value, nil at the end
	// salvage path
	f    *os.File
	salv *salvageResult
	idx  int
	r    *Reader
}

func (r *Reader) openSegment(s segmentFile, afterSeq uint64) (*segmentReader, error) {
	path := filepath.Join(r.dir, s.Name)
	f, err := openSpoolFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.stats.SegmentsRead++
	r.mu.Unlock()
	sr := &segmentReader{id: s.ID, path: path, r: r}
	_, verr := verifySealed(f)
	if verr == nil {
		db, err := bbolt.Open(path, 0, boltOptions(f, true))
		if err == nil {
			if sr.tx, err = db.Begin(false); err == nil {
				if b := sr.tx.Bucket(recordsBucket); b != nil {
					sr.db, sr.c = db, b.Cursor()
					sr.k, sr.v = sr.c.Seek(seqKey(afterSeq + 1))
					return sr, nil
				}
				sr.tx.Rollback()
				err = fmt.Errorf("%w: no records bucket", ErrCorrupt)
			}
			db.Close()
			// bbolt closed f; open it again for salvage.
			if f, verr = openSpoolFile(path, os.O_RDONLY, 0); verr != nil {
				return nil, verr
			}
		} else {
			f.Close() // bbolt does not close the file it was handed on failure
			if f, verr = openSpoolFile(path, os.O_RDONLY, 0); verr != nil {
				return nil, verr
			}
		}
		verr = fmt.Errorf("%w: verified, but bbolt cannot read it: %v", ErrCorrupt, err)
	}
	if !errors.Is(verr, ErrCorrupt) {
		f.Close()
		return nil, &Error{Op: "read segment", Path: path, Err: verr}
	}
	if err := r.salvage(sr, f, s, verr); err != nil {
		f.Close()
		return nil, err
	}
	for sr.idx < len(sr.salv.Intact) && sr.salv.Intact[sr.idx].Seq <= afterSeq {
		sr.idx++
	}
	return sr, nil
}

// salvage reads what is intact in a damaged sealed segment and, unless the
// reader only inspects, rebuilds the segment from it and quarantines the
// rest.
func (r *Reader) salvage(sr *segmentReader, f *os.File, s segmentFile, damage error) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	res, err := salvageSegment(f, fi.Size(), s.ID)
	if err != nil {
		return &Error{Op: "salvage segment", Path: sr.path, Err: err}
	}
	sr.f, sr.salv = f, res
	ev := QuarantineEvent{Segment: s.ID, Path: sr.path, Reason: damage.Error(), Kept: len(res.Intact),
		Damaged: len(res.Damaged), Lost: res.BadElements, At: time.Now().UTC()}
	if !r.opts.Inspect {
		moved, err := r.repair(f, res, s, ev)
		if err != nil {
			return err
		}
		ev.Moved = moved
	}
	r.mu.Lock()
	r.stats.SegmentsDamaged++
	r.stats.RecordsQuarantined += uint64(len(res.Damaged))
	r.stats.EntriesLost += uint64(res.BadElements)
	r.mu.Unlock()
	if r.opts.OnQuarantine != nil {
		r.opts.OnQuarantine(ev)
	}
	return nil
}

// repair quarantines the damaged records and the original file, then
// replaces the segment with one rebuilt from its intact records (same id,
// so positions stay valid), or removes it when nothing is intact.
func (r *Reader) repair(f *os.File, res *salvageResult, s segmentFile, ev QuarantineEvent) (string, error) {
	if err := quarantineRecords(r.dir, s.ID, res.Damaged, ev.At); err != nil {
		return "", err
	}
	moved, err := quarantineFile(r.dir, filepath.Join(r.dir, s.Name), reasonFile{Segment: s.ID, Reason: ev.Reason,
		At: ev.At, Kept: ev.Kept, Damaged: ev.Damaged, Lost: ev.Lost})
	if err != nil {
		return "", err
	}
	if err := syncDir(filepath.Join(r.dir, quarantineDir)); err != nil {
		return "", &Error{Op: "fsync quarantine folder", Path: r.dir, Err: err}
	}
	sealed := filepath.Join(r.dir, s.Name)
	if len(res.Intact) == 0 {
		if err := os.Remove(sealed); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", &Error{Op: "remove damaged segment", Path: sealed, Err: err}
		}
		return moved, syncDir(r.dir)
	}
	tmpl, err := r.template()
	if err != nil {
		return "", err
	}
	tmp := filepath.Join(r.dir, segmentName(s.ID, repairingExt))
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	err = writeSalvagedSegment(f, fi.Size(), res, s.ID, tmp, sealed, tmpl, fdatasyncFile, func() error { return syncDir(r.dir) })
	return moved, err
}

func (r *Reader) template() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tmpl == nil {
		t, err := segmentTemplate()
		if err != nil {
			return nil, err
		}
		r.tmpl = t
	}
	return r.tmpl, nil
}

func (sr *segmentReader) next() (Record, error) {
	if sr.salv != nil {
		if sr.idx >= len(sr.salv.Intact) {
			return Record{}, io.EOF
		}
		rec, err := readSalvaged(sr.f, sr.salv.Intact[sr.idx])
		sr.idx++
		if err != nil {
			return Record{}, &Error{Op: "read salvaged record", Path: sr.path, Err: err}
		}
		return rec, nil
	}
	for sr.k != nil {
		k, v := sr.k, sr.v
		sr.k, sr.v = sr.c.Next()
		rec, err := decodeRecord(v)
		if err == nil && (len(k) != 8 || rec.Seq != recordSeqKey(k)) {
			err = fmt.Errorf("%w: record Seq %d under key %x", ErrCorrupt, rec.Seq, k)
		}
		if err != nil {
			// The file verified, so bbolt wrote this value: a bug, not a
			// disk fault. Report it and go on.
			sr.r.mu.Lock()
			sr.r.stats.RecordsQuarantined++
			sr.r.mu.Unlock()
			if sr.r.opts.OnQuarantine != nil {
				sr.r.opts.OnQuarantine(QuarantineEvent{Segment: sr.id, Path: sr.path, Reason: err.Error(), Damaged: 1, At: time.Now().UTC()})
			}
			continue
		}
		return rec, nil
	}
	return Record{}, io.EOF
}

func recordSeqKey(k []byte) uint64 {
	var v uint64
	for _, b := range k {
		v = v<<8 | uint64(b)
	}
	return v
}

func (sr *segmentReader) close() {
	if sr.tx != nil {
		sr.tx.Rollback()
		sr.tx = nil
	}
	if sr.db != nil {
		sr.db.Close()
		sr.db = nil
	}
	if sr.f != nil {
		sr.f.Close()
		sr.f = nil
	}
}

// Release deletes every sealed segment whose records are all at or before
// pos. Idempotent: a segment already gone is not an error. Deletions are
// not synced: a segment that reappears after a power loss is skipped by
// position.
func (r *Reader) Release(pos Position) error {
	segs, err := r.listSealed()
	if err != nil {
		return err
	}
	for i, s := range segs {
		if s.ID > pos.Seq {
			break // ids are first Seqs: this one and the rest hold later records
		}
		drained := s.ID < pos.Segment || (i+1 < len(segs) && segs[i+1].ID <= pos.Seq+1)
		if !drained {
			info, err := sealedInfo(r.dir, s)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			drained = err == nil && info.State == StateSealed && info.LastSeq <= pos.Seq
		}
		if !drained {
			break
		}
		if r.opts.Inspect {
			return &Error{Op: "release", Path: r.dir, Err: errors.New("reader opened for inspection only")}
		}
		if err := os.Remove(filepath.Join(r.dir, s.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return &Error{Op: "delete drained segment", Path: filepath.Join(r.dir, s.Name), Err: err}
		}
		r.mu.Lock()
		r.stats.SegmentsReleased++
		r.mu.Unlock()
	}
	return nil
}
