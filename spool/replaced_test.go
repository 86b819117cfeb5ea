package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A spool folder deleted and made anew under a running reader (`rm -rf`
// while the writer runs; the receiver makes a new spool there) is not the
// folder the reader opened: its segments are another spool's, and setting
// them aside as "copied in" would keep every record of the new spool from
// the writer. The reader says ErrSpoolReplaced instead, and leaves them.
func TestReader_Cursor_FolderReplaced(t *testing.T) {
	dir := newSpoolDir(t)
	buildSpool(t, dir, 300)
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, poss := readFrom(t, r, Position{})
	last := poss[len(poss)-1]

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	buildSpool(t, dir, 200) // a new spool, Seqs from 1 again
	newID, err := ReadIdentity(dir)
	if err != nil || newID.ID == r.Identity() {
		t.Fatalf("the new folder's identity: %v %v", newID.ID, err)
	}

	if err := firstError(r, last); !errors.Is(err, ErrSpoolReplaced) {
		t.Fatalf("cursor over a replaced folder: %v, want ErrSpoolReplaced", err)
	}
	// Again, from the first record: still replaced, nothing set aside.
	if err := firstError(r, Position{}); !errors.Is(err, ErrSpoolReplaced) {
		t.Fatalf("second cursor: %v, want ErrSpoolReplaced", err)
	}
	if err := r.Release(last); !errors.Is(err, ErrSpoolReplaced) {
		t.Fatalf("release in a replaced folder: %v, want ErrSpoolReplaced", err)
	}
	st := r.Stats()
	if st.SegmentsSetAside != 0 || st.RecordsSetAside != 0 || st.FolderReplaced != 1 {
		t.Fatalf("stats: %+v, want nothing set aside and folder_replaced 1", st)
	}
	if q, _ := os.ReadDir(filepath.Join(dir, quarantineDir)); len(q) != 0 {
		t.Fatalf("quarantine/ holds %d files", len(q))
	}
	// A reader opened again reads the new spool whole.
	r2, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if recs, _ := readFrom(t, r2, Position{}); len(recs) != 200 || r2.Identity() != newID.ID {
		t.Fatalf("reopened: %d records of spool %v", len(recs), r2.Identity())
	}
}

// The identity file alone replaced (the folder kept: its files deleted and
// a new spool made in it) is a replaced spool too; the identity file
// rewritten with the same identity (`spool identity --adopt`) is not.
func TestReader_Cursor_IdentityFileReplaced(t *testing.T) {
	dir := newSpoolDir(t)
	buildSpool(t, dir, 100)
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, poss := readFrom(t, r, Position{})

	// Same identity, rewritten in place: not replaced.
	path := filepath.Join(dir, identityFile)
	b, _ := os.ReadFile(path)
	os.Remove(path)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := firstError(r, poss[len(poss)-1]); err != io.EOF {
		t.Fatalf("identity file rewritten, same identity: %v", err)
	}

	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
	buildSpool(t, dir, 50)
	if err := firstError(r, Position{}); !errors.Is(err, ErrSpoolReplaced) {
		t.Fatalf("new spool in the same folder: %v, want ErrSpoolReplaced", err)
	}
	if st := r.Stats(); st.SegmentsSetAside != 0 {
		t.Fatalf("set aside %d segments", st.SegmentsSetAside)
	}
}

// A folder gone (not yet made again) is an error to retry, not a
// replacement: the reader cannot tell what will come back.
func TestReader_Cursor_FolderGone(t *testing.T) {
	dir := newSpoolDir(t)
	buildSpool(t, dir, 10)
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	os.RemoveAll(dir)
	_, err = r.Cursor(Position{})
	if err == nil || errors.Is(err, ErrSpoolReplaced) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder gone: %v", err)
	}
}

// firstError reads through r after pos and returns the error that ends
// the read (io.EOF at the end).
func firstError(r *Reader, after Position) error {
	c, err := r.Cursor(after)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		if _, _, err := c.Next(); err != nil {
			return err
		}
	}
}
