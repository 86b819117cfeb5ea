package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Segments []SegmentCheck `json:"segments"`
	Records  uint64         `json:"records"`
	// Quarantined is how many items sit in quarantine/ (damage found
	// earlier, already handled).
	Quarantined int `json:"quarantined"`
}

// SegmentCheck is the verdict on one segment.
type SegmentCheck struct {
	SegmentInfo
	OK      bool   `json:"ok"`
	Damage  string `json:"damage,omitempty"`
	Intact  int    `json:"intact_records,omitempty"`
	Damaged int    `json:"damaged_records,omitempty"`
	Lost    int    `json:"lost_records,omitempty"` // see QuarantineEvent.Lost
	// LostExact: Lost is exact (the trailer gave the record count).
	LostExact bool `json:"lost_exact,omitempty"`
	Entries   int  `json:"unreadable_entries,omitempty"`
	// SetAside: the segment would be moved whole to quarantine/ (another
	// spool's, or out of place) with this many records.
	SetAside int `json:"set_aside_records,omitempty"`
}

// Damaged reports whether any segment failed.
func (v VerifyReport) Damaged() bool {
	for _, s := range v.Segments {
		if !s.OK {
			return true
		}
	}
	return false
}

// Verify checks every sealed segment (data CRC, then every record's
// checksum and Seq order through bbolt) and every segment a dead appender
// left unsealed (by salvage), changing nothing. The active segment of a
// live appender is skipped: it is locked, and its groups were synced.
func Verify(dir string) (VerifyReport, error) {
	var rep VerifyReport
	segs, err := listSegments(dir, sealedExt, activeExt, tmpExt)
	if err != nil {
		return rep, err
	}
	alive := AppenderAlive(dir)
	var setAside *QuarantineEvent
	r, err := OpenReader(dir, ReaderOptions{Inspect: true, OnQuarantine: func(e QuarantineEvent) {
		if e.Whole {
			setAside = &e
		}
	}})
	if err != nil {
		return rep, err
	}
	last := uint64(0)
	for _, s := range segs {
		if s.Ext != sealedExt {
			if alive {
				continue
			}
			rep.Segments = append(rep.Segments, checkUnsealed(dir, s))
			continue
		}
		chk := SegmentCheck{SegmentInfo: SegmentInfo{ID: s.ID, Name: s.Name, State: StateSealed}, OK: true}
		setAside = nil
		sr, err := r.openSegment(s, Position{})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if errors.Is(err, errSetAside) && setAside != nil {
			chk.OK, chk.Damage, chk.SetAside = false, setAside.Reason, setAside.SetAside
			rep.Segments = append(rep.Segments, chk)
			continue
		}
		if err != nil {
			chk.OK, chk.Damage = false, err.Error()
			rep.Segments = append(rep.Segments, chk)
			continue
		}
		if sr.salv != nil {
			chk.OK, chk.State = false, StateDamaged
			chk.Intact, chk.Damaged, chk.Entries = len(sr.salv.Intact), len(sr.salv.Damaged), sr.salv.BadElements
			t, verr := verifySealed(sr.f)
			held := -1
			if t.Version != 0 {
				held = int(t.Records)
			}
			chk.Lost, chk.LostExact = lostRecords(s.ID, held, sr.salv)
			if verr == nil {
				verr = checkBoltFile(sr.f, t.DataLen)
			}
			if verr != nil {
				chk.Damage = verr.Error()
			}
		}
		before := r.Stats().RecordsQuarantined
		for {
			rec, err := sr.next(0)
			if err == io.EOF {
				break
			}
			if err != nil {
				chk.OK, chk.Damage = false, err.Error()
				break
			}
			if rec.Seq <= last {
				chk.OK, chk.Damage = false, fmt.Sprintf("Seq %d after %d: out of order", rec.Seq, last)
			}
			last = rec.Seq
			chk.Records++
			rep.Records++
		}
		if n := r.Stats().RecordsQuarantined - before; n > 0 && sr.salv == nil {
			chk.OK, chk.Damage = false, fmt.Sprintf("%d records fail their checksum", n)
		}
		sr.close()
		if info, err := sealedInfo(dir, s); err == nil {
			chk.Bytes, chk.FirstSeq, chk.LastSeq, chk.Oldest, chk.Newest = info.Bytes, info.FirstSeq, info.LastSeq, info.Oldest, info.Newest
		}
		rep.Segments = append(rep.Segments, chk)
	}
	items, err := ListQuarantine(dir)
	if err != nil {
		return rep, err
	}
	rep.Quarantined = len(items)
	return rep, nil
}

// checkUnsealed salvages an orphaned unsealed segment to say what the next
// appender will recover from it. Torn last writes are normal there.
func checkUnsealed(dir string, s segmentFile) SegmentCheck {
	chk := SegmentCheck{SegmentInfo: SegmentInfo{ID: s.ID, Name: s.Name, State: StateUnsealed}, OK: true}
	f, err := openSpoolFile(filepath.Join(dir, s.Name), os.O_RDONLY, 0)
	if err != nil {
		chk.OK, chk.Damage = false, err.Error()
		return chk
	}
	defer f.Close()
	fi, _ := f.Stat()
	chk.Bytes = fi.Size()
	res, err := salvageSegment(f, fi.Size(), s.ID)
	if err != nil {
		chk.OK, chk.Damage = false, err.Error()
		return chk
	}
	chk.Intact, chk.Damaged, chk.Entries = len(res.Intact), len(res.Damaged), res.BadElements
	chk.Records = uint64(len(res.Intact))
	return chk
}
