package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// accountFor checks that every record of orig was either read (read) or
// set aside in quarantine/ with its whole segment, per the reader's
// counters, and that no record vanished.
func accountFor(t *testing.T, dir string, orig map[uint64]Record, read []Record, st ReaderStats) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, r := range read {
		if seen[r.Seq] {
			t.Fatalf("record %d read twice", r.Seq)
		}
		seen[r.Seq] = true
		if !sameContent(r, orig[r.Seq]) {
			t.Fatalf("record %d differs", r.Seq)
		}
	}
	// What was not read is in the set-aside segments in quarantine/.
	inQuarantine := map[uint64]bool{}
	items, _ := ListQuarantine(dir)
	for _, it := range items {
		if it.Kind != "segment" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, quarantineDir, it.Name))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		res, _ := salvageSegment(f, fi.Size(), 0)
		f.Close()
		for _, r := range res.Intact {
			inQuarantine[r.Seq] = true
		}
	}
	missing := 0
	for seq := range orig {
		if !seen[seq] && !inQuarantine[seq] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d records neither read nor in quarantine/ (read %d, stats %+v)", missing, len(read), st)
	}
	if uint64(len(read))+st.RecordsSetAside < uint64(len(orig)) {
		t.Fatalf("read %d and set aside %d of %d records", len(read), st.RecordsSetAside, len(orig))
	}
}

func drainAll(t *testing.T, dir string, pos Position) ([]Record, ReaderStats) {
	t.Helper()
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := drainAfter(t, r, pos)
	return recs, r.Stats()
}

// Two sealed segment files swapped lost the records of the one that came
// to lie behind the position: read past, then deleted by Release.
func TestReader_Cursor_SwappedSegmentsAreSetAside(t *testing.T) {
	src := newSpoolDir(t)
	orig := buildSpool(t, src, 2000)
	segs, _ := listSegments(src, sealedExt)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	for _, pair := range [][2]int{{0, 1}, {0, len(segs) - 1}, {1, 2}} {
		dir := newSpoolDir(t)
		copyDir(t, src, dir)
		a, b := filepath.Join(dir, segs[pair[0]].Name), filepath.Join(dir, segs[pair[1]].Name)
		os.Rename(a, a+".x")
		os.Rename(b, a)
		os.Rename(a+".x", b)
		read, st := drainAll(t, dir, Position{})
		if st.SegmentsSetAside == 0 {
			t.Fatalf("swap %v: nothing set aside, read %d of %d", pair, len(read), len(orig))
		}
		accountFor(t, dir, orig, read, st)
	}
}

// A segment renamed to another id: before all others, after all others.
func TestReader_Cursor_RenamedSegmentIsSetAside(t *testing.T) {
	src := newSpoolDir(t)
	orig := buildSpool(t, src, 2000)
	segs, _ := listSegments(src, sealedExt)
	for _, to := range []uint64{0, segs[len(segs)-1].ID + 1_000_000} {
		dir := newSpoolDir(t)
		copyDir(t, src, dir)
		victim := segs[1]
		os.Rename(filepath.Join(dir, victim.Name), filepath.Join(dir, segmentName(to, sealedExt)))
		read, st := drainAll(t, dir, Position{})
		accountFor(t, dir, orig, read, st)
		if uint64(len(read))+st.RecordsSetAside != uint64(len(orig)) && to != 0 {
			t.Fatalf("renamed to %d: read %d, set aside %d of %d", to, len(read), st.RecordsSetAside, len(orig))
		}
	}
}

// A writer that already drained part of the spool finds the files
// swapped behind its position: nothing it has not applied is deleted.
func TestReader_Release_KeepsWhatWasNotApplied(t *testing.T) {
	dir := newSpoolDir(t)
	orig := buildSpool(t, dir, 2000)
	segs, _ := listSegments(dir, sealedExt)
	r, _ := OpenReader(dir, ReaderOptions{})
	c, _ := r.Cursor(Position{})
	var pos Position
	var read []Record
	for {
		rec, p, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, rec)
		pos = p
		if p.Segment == segs[1].ID {
			break // the position is inside the second segment
		}
	}
	c.Close()
	a, b := filepath.Join(dir, segs[1].Name), filepath.Join(dir, segs[2].Name)
	os.Rename(a, a+".x")
	os.Rename(b, a)
	os.Rename(a+".x", b)
	rest, st := drainAll(t, dir, pos)
	accountFor(t, dir, orig, append(read, rest...), st)
}

// A segment copied in from another spool is never applied under this
// spool's name.
func TestReader_Cursor_SegmentOfAnotherSpoolIsSetAside(t *testing.T) {
	dir := newSpoolDir(t)
	orig := buildSpool(t, dir, 500)
	other := filepath.Join(t.TempDir(), "other")
	buildSpool(t, other, 300)
	osegs, _ := listSegments(other, sealedExt)
	segs, _ := listSegments(dir, sealedExt)
	foreignID := segs[len(segs)-1].ID + 1000
	copyFile(t, filepath.Join(other, osegs[0].Name), filepath.Join(dir, segmentName(foreignID, sealedExt)))
	t0, _ := segmentTrailer(other, osegs[0])
	read, st := drainAll(t, dir, Position{})
	if len(read) != len(orig) || st.SegmentsSetAside != 1 || st.RecordsSetAside != t0.Records {
		t.Fatalf("read %d of %d, stats %+v (the foreign segment held %d)", len(read), len(orig), st, t0.Records)
	}
	items, _ := ListQuarantine(dir)
	if len(items) != 1 || !contains(items[0].Reason, "a segment of spool") {
		t.Fatalf("quarantine %+v", items)
	}
}
