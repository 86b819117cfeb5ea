package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// recover seals or rebuilds every segment a dead appender left unsealed,
// and returns the highest Seq found in them.
//
//   - X.recovered: a rebuild that did not finish; its source is still
//     there, so it is removed and the rebuild starts over.
//   - X.active or X.tmp with X.seg beside it: the rebuild finished, only
//     the removal of the source did not.
//   - X.active or X.tmp whose trailer verifies: sealing stopped between the
//     trailer and the rename; fdatasync and rename.
//   - otherwise: salvage the intact records (which never trusts bbolt's
//     meta pages, so a torn last transaction costs nothing that was synced)
//     into X.recovered, rename it to X.seg, quarantine what is damaged.
func (a *Appender) recover() (maxSeq uint64, err error) {
	segs, err := listSegments(a.dir, activeExt, tmpExt, recoveredExt)
	if err != nil {
		return 0, err
	}
	for _, s := range segs {
		path := filepath.Join(a.dir, s.Name)
		sealed := filepath.Join(a.dir, segmentName(s.ID, sealedExt))
		if s.Ext == recoveredExt {
			os.Remove(path)
			continue
		}
		if _, err := os.Lstat(sealed); err == nil {
			os.Remove(path)
			continue
		}
		seq, err := a.recoverSegment(s, path, sealed)
		if err != nil {
			return 0, err
		}
		maxSeq = max(maxSeq, seq)
	}
	if len(segs) > 0 {
		if err := a.syncFolder(); err != nil {
			return 0, err
		}
	}
	return maxSeq, nil
}

func (a *Appender) recoverSegment(s segmentFile, path, sealed string) (maxSeq uint64, err error) {
	f, err := openSpoolFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, &Error{Op: "recover segment", Path: path, Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if t, err := verifySealed(f); err == nil {
		if err := a.fdatasync(f); err != nil {
			return 0, &Error{Op: "recover segment", Path: path, Err: err}
		}
		if err := os.Rename(path, sealed); err != nil {
			return 0, &Error{Op: "recover segment", Path: path, Err: err}
		}
		a.stats.RecoveredSegments++
		return t.LastSeq, nil
	}
	res, err := salvageSegment(f, fi.Size(), s.ID)
	if err != nil {
		return 0, &Error{Op: "salvage segment", Path: path, Err: err}
	}
	if len(res.Intact) > 0 {
		maxSeq = res.Intact[len(res.Intact)-1].Seq
		tmp := filepath.Join(a.dir, segmentName(s.ID, recoveredExt))
		if err := writeSalvagedSegment(f, fi.Size(), res, s.ID, a.id.ID, tmp, sealed, a.tmpl, a.fdatasync, a.syncFolder); err != nil {
			return 0, err
		}
	}
	if n := len(res.Damaged); n > 0 {
		maxSeq = max(maxSeq, res.Damaged[n-1].Seq)
	}
	if len(res.Damaged) > 0 || res.BadElements > 0 {
		now := time.Now().UTC()
		reason := fmt.Sprintf("unsealed segment left by a dead appender: %d damaged records, %d unreadable entries (a torn last write)", len(res.Damaged), res.BadElements)
		if err := quarantineRecords(a.dir, s.ID, res.Damaged, now); err != nil {
			return 0, err
		}
		if _, err := quarantineFile(a.dir, path, reasonFile{Segment: s.ID, Reason: reason, At: now,
			Kept: len(res.Intact), Damaged: len(res.Damaged), Entries: res.BadElements}); err != nil {
			return 0, err
		}
		a.stats.QuarantinedRecords += len(res.Damaged)
		if err := syncDir(filepath.Join(a.dir, quarantineDir)); err != nil {
			return 0, err
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, &Error{Op: "remove recovered segment", Path: path, Err: err}
	}
	a.stats.RecoveredSegments++
	return maxSeq, nil
}

// startSequence sets the next Seq above everything the spool has ever
// issued: the sequence file, the recovered segments, the newest sealed
// segment and the writer position, and reserves a block.
func (a *Appender) startSequence(recovered uint64) error {
	reserved, err := readSequence(a.dir)
	if err != nil {
		return err
	}
	high := max(reserved, recovered)
	if pos, err := ReadWriterPosition(a.dir); err == nil {
		high = max(high, pos.Seq)
	}
	segs, err := listSegments(a.dir, sealedExt)
	if err != nil {
		return err
	}
	if n := len(segs); n > 0 {
		last := segs[n-1]
		high = max(high, last.ID)
		if info, err := sealedInfo(a.dir, last); err == nil && info.State == StateSealed {
			high = max(high, info.LastSeq)
		} else if f, err := openSpoolFile(filepath.Join(a.dir, last.Name), os.O_RDONLY, 0); err == nil {
			// Damaged trailer: find its Seqs the hard way.
			if fi, err := f.Stat(); err == nil {
				if res, err := salvageSegment(f, fi.Size(), last.ID); err == nil {
					if k := len(res.Intact); k > 0 {
						high = max(high, res.Intact[k-1].Seq)
					}
					if k := len(res.Damaged); k > 0 {
						high = max(high, res.Damaged[k-1].Seq)
					}
				}
			}
			f.Close()
		}
	}
	a.reserved = reserved
	a.nextSeq = high + 1
	return a.reserveThrough(a.nextSeq)
}
