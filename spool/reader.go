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
//
// Nothing is assumed of a segment file that its checks do not show: a
// segment of another spool (its trailer names another identity), one out
// of place (its records lie before its own name, or behind the position a
// cursor reached in an earlier segment: a file renamed or two files
// swapped) and one whose bbolt structure is inconsistent are quarantined
// with a reason and counted, never applied under the wrong name, never
// deleted unread, and never allowed to crash the process.
type Reader struct {
	dir  string
	id   IdentityInfo // zero for an inspecting reader of a folder without one
	opts ReaderOptions

	mu     sync.Mutex
	tmpl   []byte // segment template for repairs, built on first use
	seen   uint64 // highest sealed segment id listed so far
	stats  ReaderStats
	watch  watcher // WaitSealed's watch on the folder (watch.go)
	closed bool
	// reported: segments an inspecting reader reported set aside
	reported map[string]bool
	// opened is the folder and identity file the reader opened, to tell
	// when the folder was replaced under it (replaced.go).
	opened openedFolder

	listings atomic.Uint64 // folder listings, for the tests of idle waiting
}

// ReaderStats counts what a Reader did. Every record a reader did not
// return is in exactly one of RecordsQuarantined, RecordsSetAside and
// RecordsLost (as far as the segment's trailer or Seqs tell).
type ReaderStats struct {
	SegmentsRead     uint64 `json:"segments_read"`
	RecordsRead      uint64 `json:"records_read"`
	SegmentsReleased uint64 `json:"segments_released"`
	// SegmentsDamaged failed their checks (CRC, bbolt structure); their
	// intact records were still read. Unless the reader inspects only,
	// each was rebuilt from its intact records and its original moved to
	// quarantine/.
	SegmentsDamaged uint64 `json:"segments_damaged"`
	// RecordsQuarantined failed their own checks (checksum, an unknown
	// record version) and were written one by one to quarantine/, from
	// where `spool quarantine requeue` puts them back.
	RecordsQuarantined uint64 `json:"records_quarantined"`
	// SegmentsSetAside were moved whole to quarantine/ unread: of another
	// spool, or out of place. RecordsSetAside is the records they held, by
	// their trailers (salvage's count when a trailer is unreadable).
	SegmentsSetAside uint64 `json:"segments_set_aside"`
	RecordsSetAside  uint64 `json:"records_set_aside"`
	// RecordsLost were in a damaged segment and could not be read at all:
	// its trailer's record count less what was kept and quarantined, or,
	// without a readable trailer, the Seqs missing between the segment's
	// first Seq and the last record found (a lower bound: what followed
	// the last record found in a truncated segment is not known).
	RecordsLost uint64 `json:"records_lost"`
	// RecordsLostUnbounded is true once a loss was counted without a
	// trailer, so RecordsLost may be below the truth.
	RecordsLostUnbounded bool   `json:"records_lost_unbounded,omitempty"`
	EntriesLost          uint64 `json:"entries_lost"` // leaf entries damaged beyond delimiting
	// FolderReplaced counts the times the reader found its folder
	// replaced under it (ErrSpoolReplaced): deleted and made anew, or
	// another spool put in its place. A reader counts it once; a writer
	// that reopens its spool carries the count over.
	FolderReplaced uint64 `json:"folder_replaced"`
}

// Add returns the sum of s and o, for a consumer that reopened its reader
// and keeps counting across readers.
func (s ReaderStats) Add(o ReaderStats) ReaderStats {
	s.SegmentsRead += o.SegmentsRead
	s.RecordsRead += o.RecordsRead
	s.SegmentsReleased += o.SegmentsReleased
	s.SegmentsDamaged += o.SegmentsDamaged
	s.RecordsQuarantined += o.RecordsQuarantined
	s.SegmentsSetAside += o.SegmentsSetAside
	s.RecordsSetAside += o.RecordsSetAside
	s.RecordsLost += o.RecordsLost
	s.RecordsLostUnbounded = s.RecordsLostUnbounded || o.RecordsLostUnbounded
	s.EntriesLost += o.EntriesLost
	s.FolderReplaced += o.FolderReplaced
	return s
}

// OpenReader opens the spool in dir for reading. Unless opts.Inspect, it
// creates the folder if needed (the writer may start before the receiver
// ever ran), gives it its identity if it has none (identity.go) and
// removes repairs a crashed reader left half done. An inspecting reader
// of a folder without an identity file reads it as the folder's own.
func OpenReader(dir string, opts ReaderOptions) (*Reader, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPollInterval
	}
	if opts.PollMaxInterval <= 0 {
		opts.PollMaxInterval = defaultPollMaxInterval
	}
	opts.PollMaxInterval = max(opts.PollMaxInterval, opts.PollInterval)
	var id IdentityInfo
	if opts.Inspect {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, &Error{Op: "open spool", Path: dir, Err: err, Hint: "check --dir or spoolDir in the configuration"}
		}
		if !fi.IsDir() {
			return nil, &Error{Op: "open spool", Path: dir, Err: errors.New("not a folder")}
		}
		if id, err = ReadIdentity(dir); err != nil && !errors.Is(err, ErrNoIdentity) {
			return nil, err
		}
	} else {
		if err := prepareDir(dir); err != nil {
			return nil, err
		}
		var err error
		if id, err = openIdentity(dir); err != nil {
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
	r := &Reader{dir: dir, id: id, opts: opts}
	if !opts.Inspect {
		opened, err := statOpened(dir)
		if err != nil {
			return nil, err
		}
		r.opened = opened
	}
	return r, nil
}

// Dir is the spool folder.
func (r *Reader) Dir() string { return r.dir }

// Identity is the identity of the spool read; zero only for an inspecting
// reader of a folder that has none yet.
func (r *Reader) Identity() Identity { return r.id.ID }

// IdentityInfo is the spool's identity file as read at open (with
// AdoptedLegacy, Restored and Copied).
func (r *Reader) IdentityInfo() IdentityInfo { return r.id }

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

// checkPosition refuses a position of another spool. A position without
// a spool (stored before identities) is taken as this spool's: whether it
// belongs here is the caller's decision (IdentityInfo.AdoptedLegacy).
func (r *Reader) checkPosition(op string, pos Position) error {
	if pos.Spool.IsZero() || pos.Spool == r.id.ID {
		return nil
	}
	return &Error{Op: op, Path: r.dir, Err: fmt.Errorf("%w: %v names spool %s, this folder is spool %s", ErrOtherSpool, pos, pos.Spool, r.id.ID),
		Hint: "a consumer keeps one position per spool identity: start a spool it has not seen at its first record (the zero Position with this Spool)"}
}

// Cursor returns a cursor over the records after pos, in Seq order, from
// sealed segments only. pos must name this spool (or no spool, see
// checkPosition); ErrOtherSpool otherwise. Memory does not depend on the
// backlog: one segment is open at a time.
func (r *Reader) Cursor(after Position) (*Cursor, error) {
	if err := r.checkPosition("open cursor", after); err != nil {
		return nil, err
	}
	if r.opts.Inspect {
		if _, err := os.Stat(r.dir); err != nil {
			return nil, &Error{Op: "open spool", Path: r.dir, Err: err}
		}
	} else if err := r.checkReplaced(); err != nil {
		return nil, err
	}
	after.Spool = r.id.ID
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

// errSetAside means a segment was quarantined whole instead of read.
var errSetAside = errors.New("segment set aside")

// Next returns the next record and its Position (which names this spool).
// At the end of the sealed segments it returns io.EOF; calling it again
// later continues with segments sealed since. A damaged segment is
// reported (OnQuarantine, Stats) and its intact records are returned; a
// segment that cannot be placed is set aside; an unsafe file where a
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
			sr, err := c.r.openSegment(s, c.after)
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, errSetAside) {
				continue // released meanwhile, or quarantined whole
			}
			if err != nil {
				return Record{}, c.after, err
			}
			c.cur = sr
		}
		rec, err := c.cur.next(c.after.Seq)
		if err == io.EOF {
			c.cur.close()
			c.cur = nil
			continue
		}
		if err != nil {
			return Record{}, c.after, err
		}
		c.after = Position{Spool: c.r.id.ID, Segment: c.cur.id, Seq: rec.Seq}
		c.r.mu.Lock()
		c.r.stats.RecordsRead++
		c.r.mu.Unlock()
		return rec, c.after, nil
	}
}

// list finds the sealed segments this cursor has not opened yet, skipping
// those wholly at or before its position: segment ids are the Seq of their
// first record, so a segment is behind pos when the next one starts at or
// before pos.Seq+1. A skipped segment whose trailer says it holds later
// records overlaps the next one: it is out of place and set aside.
func (c *Cursor) list() error {
	if err := c.r.checkReplaced(); err != nil {
		return err
	}
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
			if t, err := segmentTrailer(c.r.dir, s); err == nil && t.Records > 0 && t.LastSeq > c.after.Seq {
				reason := fmt.Sprintf("out of place: holds Seqs %d to %d, past the position %d, but lies before segment %d, which the position already reached (a renamed or swapped segment file)",
					t.FirstSeq, t.LastSeq, c.after.Seq, segs[i+1].ID)
				if err := c.r.setAside(s, reason, t.Spool, int(t.Records)); err != nil {
					return err
				}
			}
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
// and structure verify, from a salvage of its pages when not.
type segmentReader struct {
	id   uint64
	path string
	db   *bbolt.DB
	tx   *bbolt.Tx
	c    *bbolt.Cursor
	k, v []byte // next key/value, nil at the end
	// boltFile is the file bbolt reads (bbolt closes it, unless poisoned)
	boltFile *os.File
	// salvage path
	f    *os.File
	salv *salvageResult
	idx  int
	r    *Reader
	seg  segmentFile
	// poisoned: bbolt panicked or faulted on this file. Its locks may be
	// held and its state is unknown, so it is never called again (Close
	// could wait forever); the file is closed and the mapping left.
	poisoned bool
}

// placement says why a segment whose records run from first to last (n of
// them) cannot be read after the position after, or "".
func placement(s segmentFile, first, last uint64, n int, after Position) string {
	switch {
	case n == 0:
		return ""
	case first < s.ID:
		return fmt.Sprintf("out of place: its first record has Seq %d, before its own name %d (a renamed or swapped segment file)", first, s.ID)
	case !after.IsZero() && s.ID > after.Segment && first <= after.Seq:
		return fmt.Sprintf("out of place: holds Seqs %d to %d, at or behind the position %d reached in an earlier segment (%d; a renamed or swapped segment file)",
			first, last, after.Seq, after.Segment)
	}
	return ""
}

func (r *Reader) openSegment(s segmentFile, after Position) (*segmentReader, error) {
	path := filepath.Join(r.dir, s.Name)
	f, err := openSpoolFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.stats.SegmentsRead++
	r.mu.Unlock()
	sr := &segmentReader{id: s.ID, path: path, r: r, seg: s}
	t, verr := verifySealed(f)
	trailerOK := verr == nil || t.Version != 0
	if trailerOK {
		if reason := r.foreign(t.Spool); reason != "" {
			f.Close()
			return nil, r.setAsideErr(s, reason, t.Spool, int(t.Records))
		}
		if reason := placement(s, t.FirstSeq, t.LastSeq, int(t.Records), after); reason != "" {
			f.Close()
			return nil, r.setAsideErr(s, reason, t.Spool, int(t.Records))
		}
	}
	if verr == nil {
		verr = checkBoltFile(f, t.DataLen)
	}
	if verr == nil {
		if err := sr.openBolt(f, after.Seq); err == nil {
			return sr, nil
		} else {
			verr = err
		}
		// bbolt closed f (or never took it); open it again for salvage.
		if f, err = openSpoolFile(path, os.O_RDONLY, 0); err != nil {
			return nil, err
		}
	}
	if !errors.Is(verr, ErrCorrupt) {
		f.Close()
		return nil, &Error{Op: "read segment", Path: path, Err: verr}
	}
	held := -1
	if trailerOK {
		held = int(t.Records)
	}
	if err := r.salvage(sr, f, s, verr, held, after); err != nil {
		f.Close()
		return nil, err
	}
	return sr, nil
}

// foreign says why a segment naming spool id does not belong in this
// folder, or "". A segment naming no spool (format 1) belongs to the
// folder it is in.
func (r *Reader) foreign(id Identity) string {
	if id.IsZero() || r.id.ID.IsZero() || id == r.id.ID {
		return ""
	}
	return fmt.Sprintf("a segment of spool %s in the folder of spool %s (copied in from another spool)", id, r.id.ID)
}

// openBolt opens f, whose structure checkBoltFile passed, in bbolt and
// seeks to the first record after afterSeq.
func (sr *segmentReader) openBolt(f *os.File, afterSeq uint64) error {
	var db *bbolt.DB
	var err error
	gerr := guardBolt(func() {
		db, err = bbolt.Open(sr.path, 0, boltOptions(f, true))
		if err != nil {
			f.Close() // bbolt does not close the file it was handed on failure
			return
		}
		if sr.tx, err = db.Begin(false); err != nil {
			return
		}
		b := sr.tx.Bucket(recordsBucket)
		if b == nil {
			err = fmt.Errorf("%w: no records bucket", ErrCorrupt)
			return
		}
		sr.db, sr.c, sr.boltFile = db, b.Cursor(), f
		sr.k, sr.v = sr.c.Seek(seqKey(afterSeq + 1))
	})
	if gerr != nil {
		err, sr.poisoned = gerr, true
	}
	if err != nil {
		if !sr.poisoned {
			if sr.tx != nil {
				sr.tx.Rollback()
			}
			if db != nil {
				db.Close()
			}
		}
		sr.tx, sr.db, sr.c = nil, nil, nil
		f.Close() // closed already unless a panic cut bbolt short
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: verified, but bbolt cannot read it: %v", ErrCorrupt, err)
		}
		return err
	}
	return nil
}

// setAsideErr sets a segment aside and returns errSetAside, or the error
// that kept it in place.
func (r *Reader) setAsideErr(s segmentFile, reason string, spool Identity, records int) error {
	if err := r.setAside(s, reason, spool, records); err != nil {
		return err
	}
	return errSetAside
}

// setAside moves a whole segment to quarantine/ unread (unless the reader
// only inspects), reports it and counts its records.
func (r *Reader) setAside(s segmentFile, reason string, spool Identity, records int) error {
	path := filepath.Join(r.dir, s.Name)
	ev := QuarantineEvent{Segment: s.ID, Spool: spool, Path: path, Reason: reason, Held: records, SetAside: records, Whole: true, LostExact: true, At: time.Now().UTC()}
	if r.opts.Inspect {
		// Nothing moves, so a cursor meets the segment again at every
		// listing: report it once.
		r.mu.Lock()
		again := r.reported[s.Name]
		if r.reported == nil {
			r.reported = map[string]bool{}
		}
		r.reported[s.Name] = true
		r.mu.Unlock()
		if again {
			return nil
		}
	} else {
		// A folder replaced since it was listed holds another spool's
		// segments, which are not this reader's to set aside.
		if err := r.checkReplaced(); err != nil {
			return err
		}
		moved, err := quarantineFile(r.dir, path, reasonFile{Segment: s.ID, Reason: reason, At: ev.At, SetAside: records, Spool: spool})
		if err != nil {
			return err
		}
		if err := syncDir(filepath.Join(r.dir, quarantineDir)); err != nil {
			return &Error{Op: "fsync quarantine folder", Path: r.dir, Err: err}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return &Error{Op: "set aside segment", Path: path, Err: err}
		}
		if err := syncDir(r.dir); err != nil {
			return &Error{Op: "fsync spool folder", Path: r.dir, Err: err}
		}
		ev.Moved = moved
	}
	r.mu.Lock()
	r.stats.SegmentsSetAside++
	r.stats.RecordsSetAside += uint64(max(records, 0))
	r.mu.Unlock()
	if r.opts.OnQuarantine != nil {
		r.opts.OnQuarantine(ev)
	}
	return nil
}

// salvage reads what is intact in a damaged sealed segment and, unless the
// reader only inspects, rebuilds the segment from it and quarantines the
// rest. held is the record count its trailer gives, -1 when it has none.
// A segment whose intact records cannot be placed is set aside instead.
func (r *Reader) salvage(sr *segmentReader, f *os.File, s segmentFile, damage error, held int, after Position) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	res, err := salvageSegment(f, fi.Size(), s.ID)
	if err != nil {
		return &Error{Op: "salvage segment", Path: sr.path, Err: err}
	}
	if n := len(res.Intact); n > 0 {
		if reason := placement(s, res.Intact[0].Seq, res.Intact[n-1].Seq, n, after); reason != "" {
			f.Close()
			return r.setAsideErr(s, damage.Error()+"; "+reason, spoolOf(f), n+len(res.Damaged))
		}
	}
	sr.f, sr.salv = f, res
	ev := QuarantineEvent{Segment: s.ID, Spool: r.id.ID, Path: sr.path, Reason: damage.Error(), Held: held, Kept: len(res.Intact),
		Damaged: len(res.Damaged), Entries: res.BadElements, At: time.Now().UTC()}
	ev.Lost, ev.LostExact = lostRecords(s.ID, held, res)
	if !r.opts.Inspect {
		// Rebuilt, the segment would carry this reader's identity.
		if err := r.checkReplaced(); err != nil {
			return err
		}
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
	r.stats.RecordsLost += uint64(ev.Lost)
	if !ev.LostExact && held < 0 {
		r.stats.RecordsLostUnbounded = true
	}
	r.mu.Unlock()
	if r.opts.OnQuarantine != nil {
		r.opts.OnQuarantine(ev)
	}
	return nil
}

// lostRecords counts the records of a damaged segment that salvage could
// neither keep nor quarantine: exact when the trailer gives the count
// (held >= 0), else the Seqs missing from the segment's first Seq (its id:
// the appender names a segment after its first record) to the last record
// found, since Seqs are contiguous within a segment.
func lostRecords(id uint64, held int, res *salvageResult) (lost int, exact bool) {
	found := len(res.Intact) + len(res.Damaged)
	if held >= 0 {
		return max(held-found, 0), true
	}
	last := uint64(0)
	if n := len(res.Intact); n > 0 {
		last = res.Intact[n-1].Seq
	}
	if n := len(res.Damaged); n > 0 {
		last = max(last, res.Damaged[n-1].Seq)
	}
	if last < id {
		return 0, false
	}
	return max(int(last-id+1)-found, 0), false
}

// repair quarantines the damaged records and the original file, then
// replaces the segment with one rebuilt from its intact records (same id,
// so positions stay valid), or removes it when nothing is intact.
func (r *Reader) repair(f *os.File, res *salvageResult, s segmentFile, ev QuarantineEvent) (string, error) {
	if err := quarantineRecords(r.dir, s.ID, res.Damaged, ev.At); err != nil {
		return "", err
	}
	moved, err := quarantineFile(r.dir, filepath.Join(r.dir, s.Name), reasonFile{Segment: s.ID, Reason: ev.Reason,
		At: ev.At, Kept: ev.Kept, Damaged: ev.Damaged, Lost: ev.Lost, Entries: ev.Entries})
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
	err = writeSalvagedSegment(f, fi.Size(), res, s.ID, r.id.ID, tmp, sealed, tmpl, fdatasyncFile, func() error { return syncDir(r.dir) })
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

// next returns the segment's next record after afterSeq. A record that
// fails its own checks in a segment that verified (a newer record
// version, or a bug) is written to quarantine/ before the reader moves
// past it, so that a consumer that releases the segment loses nothing;
// if that write fails, the error stops the cursor and the segment stays.
func (sr *segmentReader) next(afterSeq uint64) (Record, error) {
	if sr.salv != nil {
		for sr.idx < len(sr.salv.Intact) && sr.salv.Intact[sr.idx].Seq <= afterSeq {
			sr.idx++
		}
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
		rec, err := decodeRecord(v)
		if err == nil && (len(k) != 8 || rec.Seq != recordSeqKey(k)) {
			err = fmt.Errorf("%w: record Seq %d under key %x", ErrCorrupt, rec.Seq, k)
		}
		if err == nil && rec.Seq <= afterSeq {
			err = fmt.Errorf("%w: record Seq %d after %d: Seqs go backwards", ErrCorrupt, rec.Seq, afterSeq)
		}
		if err != nil {
			if qerr := sr.quarantineValue(k, v, err); qerr != nil {
				return Record{}, qerr
			}
		}
		if ferr := guardBolt(func() { sr.k, sr.v = sr.c.Next() }); ferr != nil {
			sr.poisoned = true
			if ferr = sr.fallBack(ferr); ferr != nil {
				return Record{}, ferr
			}
			if err != nil {
				return sr.next(afterSeq) // on from the salvage
			}
		}
		if err != nil {
			continue
		}
		return rec, nil
	}
	return Record{}, io.EOF
}

// quarantineValue writes one record that failed its checks to
// quarantine/ (unless the reader only inspects) and counts it.
func (sr *segmentReader) quarantineValue(k, v []byte, damage error) error {
	r := sr.r
	seq := recordSeqKey(k)
	if len(v) >= recordHeaderSize {
		seq = recordSeq(v)
	}
	at := time.Now().UTC()
	if !r.opts.Inspect {
		d := damagedRecord{Seq: seq, Raw: append([]byte(nil), v...), Reason: damage.Error()}
		if err := quarantineRecords(r.dir, sr.id, []damagedRecord{d}, at); err != nil {
			return err
		}
		if err := syncDir(filepath.Join(r.dir, quarantineDir)); err != nil {
			return &Error{Op: "fsync quarantine folder", Path: r.dir, Err: err}
		}
	}
	r.mu.Lock()
	r.stats.RecordsQuarantined++
	r.mu.Unlock()
	if r.opts.OnQuarantine != nil {
		r.opts.OnQuarantine(QuarantineEvent{Segment: sr.id, Spool: r.id.ID, Path: sr.path, Reason: damage.Error(), Held: -1, Damaged: 1, LostExact: true, At: at})
	}
	return nil
}

// fallBack is for bbolt failing in the middle of a segment that passed
// every check: the segment is salvaged instead, and reading goes on after
// the last record returned.
func (sr *segmentReader) fallBack(damage error) error {
	sr.closeBolt()
	f, err := openSpoolFile(sr.path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	if err := sr.r.salvage(sr, f, sr.seg, damage, -1, Position{}); err != nil {
		f.Close()
		if errors.Is(err, errSetAside) {
			sr.salv = &salvageResult{}
			return nil
		}
		return err
	}
	return nil
}

// spoolOf is the identity a segment's trailer names, zero when it names
// none or cannot be read.
func spoolOf(f *os.File) Identity {
	fi, err := f.Stat()
	if err != nil {
		return Identity{}
	}
	t, _ := readTrailer(f, fi.Size())
	return t.Spool
}

func recordSeqKey(k []byte) uint64 {
	var v uint64
	for _, b := range k {
		v = v<<8 | uint64(b)
	}
	return v
}

func (sr *segmentReader) closeBolt() {
	if sr.poisoned {
		if sr.boltFile != nil {
			sr.boltFile.Close()
		}
	} else {
		if sr.tx != nil {
			guardBolt(func() { sr.tx.Rollback() })
		}
		if sr.db != nil {
			guardBolt(func() { sr.db.Close() })
		}
	}
	sr.tx, sr.db, sr.c, sr.k, sr.v, sr.boltFile = nil, nil, nil, nil, nil, nil
}

func (sr *segmentReader) close() {
	sr.closeBolt()
	if sr.f != nil {
		sr.f.Close()
		sr.f = nil
	}
}

// Release deletes every sealed segment whose records are all at or before
// pos: segments at or before pos's own segment whose trailers say so. A
// segment that cannot say so (no readable trailer) or lies before pos but
// holds later records is kept: a record is never deleted unless it was
// applied, or quarantined. Idempotent: a segment already gone is not an
// error. Deletions are not synced: a segment that reappears after a power
// loss is skipped by position. pos must name this spool (ErrOtherSpool).
func (r *Reader) Release(pos Position) error {
	if err := r.checkPosition("release", pos); err != nil {
		return err
	}
	if pos.IsZero() {
		return nil
	}
	if err := r.checkReplaced(); err != nil {
		return err
	}
	segs, err := r.listSealed()
	if err != nil {
		return err
	}
	for _, s := range segs {
		if s.ID > pos.Segment || s.ID > pos.Seq {
			break // ids are first Seqs: this one and the rest hold later records
		}
		t, err := segmentTrailer(r.dir, s)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil || (t.Records > 0 && t.LastSeq > pos.Seq) || r.foreign(t.Spool) != "" {
			continue
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
