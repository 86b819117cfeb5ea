package spool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// drainAfter reads every record after pos through a writer's reader and
// releases them, as the writer does; it returns the records and the last
// position.
func drainAfter(t *testing.T, r *Reader, pos Position) ([]Record, Position) {
	t.Helper()
	recs, poss := readFrom(t, r, pos)
	if len(poss) > 0 {
		pos = poss[len(poss)-1]
	}
	if err := r.Release(pos); err != nil {
		t.Fatal(err)
	}
	return recs, pos
}

// The reproduction: drain a spool, wipe its folder, spool new
// records into a fresh one, drain again. The position of the old folder
// skipped the first records of the new one; now the new folder has its
// own identity, the old position is refused, and the new spool starts at
// its first record.
func TestReader_Cursor_WipedSpoolIsANewSpool(t *testing.T) {
	dir := newSpoolDir(t)
	buildSpool(t, dir, 531)
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := r.Identity()
	if old.IsZero() || r.IdentityInfo().AdoptedLegacy {
		t.Fatalf("fresh spool: identity %+v", r.IdentityInfo())
	}
	recs, oldPos := drainAfter(t, r, Position{Spool: old})
	if len(recs) != 531 || oldPos.Spool != old {
		t.Fatalf("drained %d records, position %v", len(recs), oldPos)
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	orig := buildSpool(t, dir, 2000)
	r2, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Identity() == old || r2.Identity().IsZero() || r2.IdentityInfo().AdoptedLegacy {
		t.Fatalf("wiped and re-created spool: identity %v (was %v), %+v", r2.Identity(), old, r2.IdentityInfo())
	}
	if _, err := r2.Cursor(oldPos); !errors.Is(err, ErrOtherSpool) {
		t.Fatalf("a position of the old spool on the new one: %v", err)
	}
	if err := r2.Release(oldPos); !errors.Is(err, ErrOtherSpool) {
		t.Fatalf("release by a position of the old spool: %v", err)
	}
	got, _ := drainAfter(t, r2, Position{Spool: r2.Identity()})
	if len(got) != 2000 {
		t.Fatalf("the new spool drained %d of its 2000 records", len(got))
	}
	for _, rec := range got {
		if !sameContent(rec, orig[rec.Seq]) {
			t.Fatalf("record %d differs", rec.Seq)
		}
	}
}

func TestOpenReader_Identity_LegacyFreshRestoredRefused(t *testing.T) {
	// A folder made before identities: a sequence file, no identity.
	legacy := newSpoolDir(t)
	os.MkdirAll(legacy, 0o700)
	os.WriteFile(filepath.Join(legacy, sequenceFile), []byte("16777216\n"), 0o600)
	r, err := OpenReader(legacy, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info := r.IdentityInfo(); !info.AdoptedLegacy || info.ID.IsZero() || info.Restored {
		t.Fatalf("legacy folder: %+v", info)
	}
	// The identity stays the same at the next open.
	if again, _ := OpenReader(legacy, ReaderOptions{}); again.Identity() != r.Identity() {
		t.Fatalf("identity changed between opens: %v then %v", r.Identity(), again.Identity())
	}

	// The identity file lost: the segments give it back.
	dir := newSpoolDir(t)
	buildSpool(t, dir, 300)
	id, err := ReadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, identityFile))
	if _, err := ReadIdentity(dir); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("no identity file: %v", err)
	}
	r, err = OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info := r.IdentityInfo(); info.ID != id.ID || !info.Restored || info.AdoptedLegacy {
		t.Fatalf("restored identity %+v, want %v", info, id.ID)
	}

	// Segments of two spools and no identity file: refused, clearly.
	other := newSpoolDir(t)
	buildSpool(t, other, 50)
	segs, _ := listSegments(other, sealedExt)
	mixed := filepath.Join(t.TempDir(), "mixed")
	copyDir(t, dir, mixed)
	copyFile(t, filepath.Join(other, segs[0].Name), filepath.Join(mixed, segmentName(1<<40, sealedExt)))
	os.Remove(filepath.Join(mixed, identityFile))
	if _, err := OpenReader(mixed, ReaderOptions{}); err == nil || !contains(err.Error(), "2 different spools") || !contains(err.Error(), "move the foreign ones out") {
		t.Fatalf("segments of two spools: %v", err)
	}
}

func TestOpenAppender_CopiedFolder_RefusedUntilAdopted(t *testing.T) {
	dir := newSpoolDir(t)
	orig := buildSpool(t, dir, 200)
	cp := filepath.Join(t.TempDir(), "copy")
	copyDir(t, dir, cp)
	_, err := OpenAppender(cp, fastOptions())
	if !errors.Is(err, ErrCopiedSpool) || !contains(err.Error(), "spool identity --adopt") {
		t.Fatalf("appending to a copy: %v", err)
	}
	// Reading a copy is safe: positions are per identity.
	r, err := OpenReader(cp, ReaderOptions{Inspect: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.IdentityInfo().Copied {
		t.Fatalf("copy not seen: %+v", r.IdentityInfo())
	}
	got, _ := readAll(t, cp, ReaderOptions{})
	if len(got) != len(orig) {
		t.Fatalf("read %d of the copy's %d records", len(got), len(orig))
	}
	// The operator says the folder was moved, not copied.
	if info, err := AdoptCopiedFolder(cp); err != nil || info.Copied {
		t.Fatalf("adopt: %+v %v", info, err)
	}
	a, err := OpenAppender(cp, fastOptions())
	if err != nil {
		t.Fatalf("after adopting: %v", err)
	}
	a.Close()
}

// A receiver and a writer opening a fresh folder together agree on one
// identity.
func TestOpenIdentity_ConcurrentOpensAgree(t *testing.T) {
	for i := 0; i < 20; i++ {
		dir := filepath.Join(t.TempDir(), "spool")
		prepareDir(dir)
		ids := make(chan Identity, 8)
		for j := 0; j < 8; j++ {
			go func() {
				info, err := openIdentity(dir)
				if err != nil {
					t.Error(err)
				}
				ids <- info.ID
			}()
		}
		first := <-ids
		for j := 1; j < 8; j++ {
			if id := <-ids; id != first {
				t.Fatalf("two identities for one folder: %v and %v", first, id)
			}
		}
	}
}

func TestIdentity_TextRoundTrip(t *testing.T) {
	id, _ := newIdentity()
	b, _ := id.MarshalText()
	var back Identity
	if err := back.UnmarshalText(b); err != nil || back != id || len(id.String()) != 32 {
		t.Fatalf("%s -> %v %v", b, back, err)
	}
	if _, err := ParseIdentity("xyz"); err == nil {
		t.Fatal("parsed a bad identity")
	}
	p := Position{Spool: id, Segment: 3, Seq: 4}
	if p.String() != id.Short()+"/3:4" || (Position{Segment: 3, Seq: 4}).String() != "3:4" {
		t.Fatalf("position strings %q", p.String())
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The advisory writer position of another spool (left by a writer that
// drained the folder this one replaced) drains nothing of this one.
func TestInspect_WriterPositionOfAnotherSpool_CountsNothingDrained(t *testing.T) {
	dir := newSpoolDir(t)
	buildSpool(t, dir, 300)
	other, _ := newIdentity()
	WriteWriterPosition(dir, Position{Spool: other, Segment: 1, Seq: 1 << 40})
	st, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 300 {
		t.Fatalf("%d records to drain, want 300", st.Records)
	}
}
