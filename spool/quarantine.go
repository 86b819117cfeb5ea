package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The quarantine folder keeps what could not be read, each item with a
// ".reason" file (JSON) beside it:
//
//	SEGMENTID-SEQ.rec    one damaged record's bytes, as found
//	SEGMENTID.seg[.N]    the original of a damaged segment, as found, or a
//	                     segment set aside whole (of another spool, or out
//	                     of place: its .reason gives set_aside_records and
//	                     the Seqs it holds; none of them is in the spool)
//	SEGMENTID.active[.N] the original of a damaged unsealed segment
//
// The intact records of a damaged segment are kept in a rebuilt segment of
// the same id, so a consumer's Position stays valid. A record can be put
// back with `meshingest spool quarantine requeue` (for example after an
// upgrade that reads a newer record version); a segment original is kept
// for inspection only.

// QuarantineEvent reports one damaged or set-aside segment, or one damaged
// record. Its record counts are exact where the segment's trailer is
// readable (Held >= 0); every record the segment held is in exactly one
// of Kept, Damaged, SetAside and Lost.
type QuarantineEvent struct {
	Segment uint64   // segment id
	Spool   Identity // the spool the segment names; zero when it names none
	Path    string   // the damaged file
	Reason  string   // what was wrong with it
	// Held is the record count the segment's trailer gives, -1 when it has
	// no readable trailer (a truncated segment).
	Held     int
	Kept     int // intact records read, and kept in the rebuilt segment
	Damaged  int // records quarantined one by one (quarantine/*.rec)
	SetAside int // records in a segment moved whole to quarantine/ unread
	// Lost is the records that could not be read at all: Held less Kept
	// and Damaged when LostExact, else the Seqs missing between the
	// segment's first Seq and the last record found (a lower bound).
	Lost      int
	LostExact bool
	// Whole: the segment was set aside whole, unread (another spool's, or
	// out of place); SetAside counts its records.
	Whole   bool
	Entries int       // leaf elements that could not even be delimited
	Moved   string    // where the original went in quarantine/, "" when nothing was moved
	At      time.Time // when it was found
}

func (e QuarantineEvent) String() string {
	if e.Whole {
		return fmt.Sprintf("segment %d (%s): %s; set aside whole with its %d records", e.Segment, e.Path, e.Reason, e.SetAside)
	}
	lost := fmt.Sprintf("%d records lost", e.Lost)
	if !e.LostExact {
		lost = fmt.Sprintf("at least %d records lost", e.Lost)
	}
	return fmt.Sprintf("segment %d (%s): %s; kept %d intact records, quarantined %d damaged, %s, %d unreadable entries",
		e.Segment, e.Path, e.Reason, e.Kept, e.Damaged, lost, e.Entries)
}

// QuarantineItem is one file in the quarantine folder.
type QuarantineItem struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"` // "record" or "segment"
	Bytes   int64     `json:"bytes"`
	Segment uint64    `json:"segment"`
	Seq     uint64    `json:"seq,omitempty"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"quarantined_at"`
}

type reasonFile struct {
	Segment uint64    `json:"segment"`
	Spool   Identity  `json:"spool,omitzero"`
	Seq     uint64    `json:"seq,omitempty"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"quarantined_at"`
	Kept    int       `json:"kept_records,omitempty"`
	Damaged int       `json:"damaged_records,omitempty"`
	Lost    int       `json:"lost_records,omitempty"`
	Entries int       `json:"unreadable_entries,omitempty"`
	// SetAside is the records of a segment moved here whole, unread: none
	// of them is in the spool, so `spool quarantine requeue` can append
	// them.
	SetAside int `json:"set_aside_records,omitempty"`
}

func writeReason(path string, r reasonFile) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	f, err := openSpoolFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = fdatasyncFile(f) // as in quarantineRecords
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// quarantineRecords writes each damaged record to quarantine/. An item
// already there (the same damage found again after a crash) is kept.
func quarantineRecords(dir string, segment uint64, recs []damagedRecord, at time.Time) error {
	for _, d := range recs {
		name := fmt.Sprintf("%0*d-%0*d.rec", idDigits, segment, idDigits, d.Seq)
		path := filepath.Join(dir, quarantineDir, name)
		f, err := openSpoolFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return &Error{Op: "quarantine record", Path: path, Err: err}
		}
		_, err = f.Write(d.Raw)
		if err == nil {
			// The callers sync the folder; the content must be durable
			// before the name is, or a power cut leaves an empty item.
			err = fdatasyncFile(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = writeReason(path+".reason", reasonFile{Segment: segment, Seq: d.Seq, Reason: d.Reason, At: at})
		}
		if err != nil {
			return &Error{Op: "quarantine record", Path: path, Err: err}
		}
	}
	return nil
}

// quarantineFile hard-links src into quarantine/ under a free name and
// writes its reason. The caller then replaces or removes src.
func quarantineFile(dir, src string, r reasonFile) (string, error) {
	base := filepath.Base(src)
	for n := 0; ; n++ {
		name := base
		if n > 0 {
			name = fmt.Sprintf("%s.%d", base, n)
		}
		dst := filepath.Join(dir, quarantineDir, name)
		err := os.Link(src, dst)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", &Error{Op: "quarantine segment", Path: src, Err: err}
		}
		if err := writeReason(dst+".reason", r); err != nil {
			return "", &Error{Op: "quarantine segment", Path: dst, Err: err}
		}
		return dst, nil
	}
}

// ListQuarantine lists the quarantine folder of the spool in dir.
func ListQuarantine(dir string) ([]QuarantineItem, error) {
	q := filepath.Join(dir, quarantineDir)
	entries, err := os.ReadDir(q)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &Error{Op: "list quarantine", Path: q, Err: err}
	}
	var items []QuarantineItem
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".reason") || !e.Type().IsRegular() {
			continue
		}
		it := QuarantineItem{Name: name, Kind: "segment"}
		if strings.HasSuffix(name, ".rec") {
			it.Kind = "record"
		}
		if fi, err := e.Info(); err == nil {
			it.Bytes = fi.Size()
			it.At = fi.ModTime().UTC()
		}
		if b, err := os.ReadFile(filepath.Join(q, name+".reason")); err == nil {
			var r reasonFile
			if json.Unmarshal(b, &r) == nil {
				it.Segment, it.Seq, it.Reason, it.At = r.Segment, r.Seq, r.Reason, r.At
			}
		} else {
			it.Reason = "(no .reason file)"
		}
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	return items, nil
}

// RequeueResult says what happened to one quarantined item.
type RequeueResult struct {
	Name string `json:"name"`
	Err  string `json:"error,omitempty"`
}

// Requeue appends the quarantined records named (all records when names is
// empty) through a, waits until they are durable, and removes them from
// quarantine. A record that still fails its checks stays where it is.
// Segment originals cannot be requeued: their intact records were kept.
func Requeue(a *Appender, names []string) ([]RequeueResult, error) {
	items, err := ListQuarantine(a.dir)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[filepath.Base(n)] = true
	}
	var results []RequeueResult
	for _, it := range items {
		if len(want) > 0 && !want[it.Name] {
			continue
		}
		delete(want, it.Name)
		res := RequeueResult{Name: it.Name}
		if it.Kind != "record" {
			if len(names) > 0 {
				res.Err = "a segment original is kept for inspection; its intact records are already in the spool"
				results = append(results, res)
			}
			continue
		}
		path := filepath.Join(a.dir, quarantineDir, it.Name)
		raw, err := os.ReadFile(path)
		if err == nil {
			var rec Record
			if rec, err = decodeRecord(raw); err == nil {
				done := make(chan error, 1)
				if err = a.Append(rec, func(e error) { done <- e }); err == nil {
					err = <-done
				}
			}
		}
		if err == nil {
			os.Remove(path)
			os.Remove(path + ".reason")
		} else {
			res.Err = err.Error()
		}
		results = append(results, res)
	}
	for n := range want {
		results = append(results, RequeueResult{Name: n, Err: "no such item in quarantine"})
	}
	return results, nil
}
