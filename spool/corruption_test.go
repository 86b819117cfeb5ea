package spool

import (
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/meshingest/meshingest/internal/testkit"
)

// buildSpool writes n 400-byte records into a spool of several sealed
// segments and returns them by Seq.
func buildSpool(t testing.TB, dir string, n int) map[uint64]Record {
	t.Helper()
	opts := fastOptions()
	opts.SegmentMaxBytes = 256 << 10
	opts.GroupMaxRecords = 100
	a, err := OpenAppender(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < n; i++ {
		recs = append(recs, testRecord(i, 400))
	}
	appendAll(t, a, recs)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	bySeq := map[uint64]Record{}
	for _, r := range got {
		bySeq[r.Seq] = r
	}
	if len(bySeq) != n {
		t.Fatalf("built %d records, want %d", len(bySeq), n)
	}
	return bySeq
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// damageAndRead damages one sealed segment of a copy of src with damage,
// reads the copy as the writer would, and checks: every record returned is
// an original, in order; every record of the other segments is returned;
// the damage is reported; a second read finds nothing more to repair; the
// repaired spool passes the consistency check. It returns the Seqs of the
// damaged segment that were returned.
func damageAndRead(t *testing.T, src string, orig map[uint64]Record, seed uint64, damage func(path string, rng *rand.Rand)) (victim segmentFile, kept map[uint64]bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	dir := newSpoolDir(t)
	copyDir(t, src, dir)
	segs, _ := listSegments(dir, sealedExt)
	victim = segs[rng.IntN(len(segs))]
	damage(filepath.Join(dir, victim.Name), rng)

	var events []QuarantineEvent
	got, poss := readAll(t, dir, ReaderOptions{OnQuarantine: func(e QuarantineEvent) { events = append(events, e) }})
	kept = map[uint64]bool{}
	var last uint64
	for i, r := range got {
		o, ok := orig[r.Seq]
		if !ok || !sameContent(o, r) {
			t.Fatalf("seed %d: record Seq %d read back different from what was written", seed, r.Seq)
		}
		if r.Seq <= last {
			t.Fatalf("seed %d: Seq %d after %d", seed, r.Seq, last)
		}
		last = r.Seq
		if poss[i].Segment == victim.ID {
			kept[r.Seq] = true
		}
	}
	// Every record outside the victim is there.
	for seq := range orig {
		inVictim := seq >= victim.ID && (victim == segs[len(segs)-1] || seq < nextID(segs, victim))
		if !inVictim && !containsSeq(got, seq) {
			t.Fatalf("seed %d: record %d of an undamaged segment is missing", seed, seq)
		}
	}
	// Every record the victim held is counted once: returned, quarantined
	// one by one, set aside or lost; exactly when its trailer survived,
	// and at least the Seqs missing up to the last record found when not.
	held := 0
	for seq := range orig {
		if seq >= victim.ID && (victim == segs[len(segs)-1] || seq < nextID(segs, victim)) {
			held++
		}
	}
	for _, e := range events {
		if e.Segment != victim.ID {
			continue
		}
		counted := e.Kept + e.Damaged + e.SetAside + e.Lost
		if e.Held >= 0 && (!e.LostExact || e.Held != held || counted != held) {
			t.Fatalf("seed %d: the trailer held %d (truth %d) records, counted %d: %+v", seed, e.Held, held, counted, e)
		}
		if e.Held < 0 && (e.LostExact || counted > held) {
			t.Fatalf("seed %d: no trailer, counted %d of %d: %+v", seed, counted, held, e)
		}
	}
	// A second read is clean: the damage was repaired and quarantined.
	var again []QuarantineEvent
	got2, _ := readAll(t, dir, ReaderOptions{OnQuarantine: func(e QuarantineEvent) { again = append(again, e) }})
	if len(got2) != len(got) || len(again) != 0 {
		t.Fatalf("seed %d: second read: %d records (first %d), %d events", seed, len(got2), len(got), len(again))
	}
	if len(events) > 0 {
		if events[0].Segment != victim.ID || events[0].Moved == "" {
			t.Fatalf("seed %d: event %+v for victim %d", seed, events[0], victim.ID)
		}
		if _, err := os.Stat(events[0].Moved + ".reason"); err != nil {
			t.Fatalf("seed %d: no reason beside the quarantined original: %v", seed, err)
		}
	}
	return victim, kept
}

func nextID(segs []segmentFile, s segmentFile) uint64 {
	for i := range segs {
		if segs[i] == s && i+1 < len(segs) {
			return segs[i+1].ID
		}
	}
	return ^uint64(0)
}

func containsSeq(recs []Record, seq uint64) bool {
	for _, r := range recs {
		if r.Seq == seq {
			return true
		}
	}
	return false
}

func TestReader_Cursor_TruncatedSegment(t *testing.T) {
	src := newSpoolDir(t)
	orig := buildSpool(t, src, 3000)
	for seed := uint64(0); seed < damageSeeds(25); seed++ {
		var recoverable map[uint64]bool
		var cut int64
		victim, kept := damageAndRead(t, src, orig, seed, func(path string, rng *rand.Rand) {
			fi, _ := os.Stat(path)
			cut = rng.Int64N(fi.Size())
			// What an ideal salvage keeps: every record with a copy wholly
			// before the cut.
			f, _ := os.Open(path)
			res, err := salvageSegment(f, fi.Size(), 0)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			recoverable = map[uint64]bool{}
			for _, r := range res.Intact {
				if r.Off+int64(r.Len) <= cut {
					recoverable[r.Seq] = true
				}
			}
			if err := os.Truncate(path, cut); err != nil {
				t.Fatal(err)
			}
		})
		for seq := range recoverable {
			if !kept[seq] {
				t.Fatalf("seed %d: segment %d cut at %d: record %d lay before the cut and was not kept", seed, victim.ID, cut, seq)
			}
		}
	}
}

// damageSeeds is how many damaged copies of a spool a test reads: long
// with MESHINGEST_LONG_TESTS=1, a third of it by default (each copy is a
// spool copied and read under -race).
func damageSeeds(long uint64) uint64 {
	if testkit.Long() {
		return long
	}
	return long / 3
}

func TestReader_Cursor_FlippedBytes(t *testing.T) {
	src := newSpoolDir(t)
	orig := buildSpool(t, src, 3000)
	segs, _ := listSegments(src, sealedExt)
	perSegment := map[uint64]int{}
	for seq := range orig {
		for i := len(segs) - 1; i >= 0; i-- {
			if seq >= segs[i].ID {
				perSegment[segs[i].ID]++
				break
			}
		}
	}
	for seed := uint64(0); seed < damageSeeds(40); seed++ {
		flips := 1 + int(seed%3)
		victim, kept := damageAndRead(t, src, orig, seed, func(path string, rng *rand.Rand) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			for i := 0; i < flips; i++ {
				off := rng.Int64N(fi.Size())
				b := make([]byte, 1)
				f.ReadAt(b, off)
				b[0] ^= byte(1 + rng.IntN(255))
				f.WriteAt(b, off)
			}
		})
		// A flipped byte can cost at most the records of one leaf page
		// (8 of these) unless an old copy of the page survives.
		if lost := perSegment[victim.ID] - len(kept); lost > 8*flips {
			t.Fatalf("seed %d: %d flipped bytes lost %d records", seed, flips, lost)
		}
	}
}

func TestReader_Cursor_InspectChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	buildSpool(t, dir, 500)
	segs, _ := listSegments(dir, sealedExt)
	path := filepath.Join(dir, segs[0].Name)
	fi, _ := os.Stat(path)
	os.Truncate(path, fi.Size()/2)
	var events int
	readAll(t, dir, ReaderOptions{Inspect: true, OnQuarantine: func(QuarantineEvent) { events++ }})
	fi2, _ := os.Stat(path)
	if events != 1 || fi2.Size() != fi.Size()/2 {
		t.Fatalf("inspect: %d events, size %d (was %d)", events, fi2.Size(), fi.Size()/2)
	}
	if items, _ := ListQuarantine(dir); len(items) != 0 {
		t.Fatalf("inspect quarantined %v", items)
	}
	rep, err := Verify(dir)
	if err != nil || !rep.Damaged() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

func TestReader_Cursor_RefusesSymlinkAndForeignFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	buildSpool(t, dir, 200)
	segs, _ := listSegments(dir, sealedExt)
	path := filepath.Join(dir, segs[0].Name)
	elsewhere := filepath.Join(t.TempDir(), "x")
	os.Rename(path, elsewhere)
	os.Symlink(elsewhere, path)
	r, _ := OpenReader(dir, ReaderOptions{})
	c, _ := r.Cursor(Position{})
	_, _, err := c.Next()
	if err == nil || !contains(err.Error(), "symlink") || !contains(err.Error(), "move it out") {
		t.Fatalf("symlinked segment: %v", err)
	}
	if os.Geteuid() == 0 {
		os.Remove(path)
		os.Rename(elsewhere, path)
		os.Chown(path, 12345, 12345)
		c, _ := r.Cursor(Position{})
		_, _, err := c.Next()
		if err == nil || !contains(err.Error(), "owned by uid 12345") {
			t.Fatalf("foreign segment: %v", err)
		}
	}
}

var _ = io.EOF
