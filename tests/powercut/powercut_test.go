package powercut

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// syncDir fsyncs a folder.
func syncDir(t testing.TB, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// writeFile writes data to a new or truncated file, fsyncs it when sync,
// and closes it.
func writeFile(t testing.TB, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// durableFile writes a file whose content and name are both synced.
func durableFile(t testing.TB, path string, data []byte) {
	t.Helper()
	writeFile(t, path, data, true)
	syncDir(t, filepath.Dir(path))
}

func cut(t testing.TB, pfs *FS, opts CutOptions) {
	t.Helper()
	if err := pfs.Cut(opts); err != nil {
		t.Fatal(err)
	}
}

func wantContent(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: holds %q, want %q", filepath.Base(path), clip(got), clip(want))
	}
}

func wantMissing(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: want it gone after the cut, Lstat says %v", filepath.Base(path), err)
	}
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return append(b[:64:64], "..."...)
	}
	return b
}

func TestFS_Cut_SyncedDataSurvives(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	durableFile(t, p, []byte("synced"))
	cut(t, pfs, CutOptions{})
	wantContent(t, p, []byte("synced"))
	// And again: a Cut is a boot, the mount works on.
	durableFile(t, p, []byte("synced twice"))
	cut(t, pfs, CutOptions{})
	wantContent(t, p, []byte("synced twice"))
	wantContent(t, filepath.Join(pfs.Lower(), "a"), []byte("synced twice"))
	if s := pfs.Stats(); s.Cuts != 2 || s.FileSyncs < 2 || s.DirSyncs < 2 || s.ForcedCuts != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestFS_Cut_UnsyncedWritesAreLost(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	durableFile(t, p, []byte("0123456789"))
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("XX"), 2)
	f.WriteAt([]byte("appended"), 10)
	f.Close()
	wantContent(t, p, []byte("01XX456789appended"))
	cut(t, pfs, CutOptions{})
	wantContent(t, p, []byte("0123456789"))
	if s := pfs.Stats(); s.DiscardedBytes != 10 {
		t.Fatalf("DiscardedBytes %d, want 10", s.DiscardedBytes)
	}
}

func TestFS_Cut_FileNeverSyncedIsEmpty(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	writeFile(t, p, []byte("not synced"), false)
	syncDir(t, pfs.Dir())
	cut(t, pfs, CutOptions{})
	wantContent(t, p, nil)
}

func TestFS_Cut_FileInUnsyncedFolderIsGone(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	sub := filepath.Join(pfs.Dir(), "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	syncDir(t, pfs.Dir())
	p := filepath.Join(sub, "f")
	writeFile(t, p, []byte("synced data, unsynced name"), true)
	cut(t, pfs, CutOptions{})
	if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
		t.Fatalf("sub: %v", err)
	}
	wantMissing(t, p)

	// A folder made and never synced in its parent is gone with all in it.
	sub2 := filepath.Join(pfs.Dir(), "sub2")
	os.Mkdir(sub2, 0o700)
	durableFile(t, filepath.Join(sub2, "f"), []byte("x"))
	cut(t, pfs, CutOptions{})
	wantMissing(t, sub2)
}

func TestFS_Cut_RenameWithoutFolderSyncIsUndone(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, tmp := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "a.tmp")
	durableFile(t, a, []byte("old"))
	durableFile(t, tmp, []byte("new"))
	if err := os.Rename(tmp, a); err != nil {
		t.Fatal(err)
	}
	cut(t, pfs, CutOptions{})
	wantContent(t, a, []byte("old"))
	wantContent(t, tmp, []byte("new"))
}

func TestFS_Cut_RenameWithFolderSyncSurvives(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, tmp := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "a.tmp")
	durableFile(t, a, []byte("old"))
	writeFile(t, tmp, []byte("new"), true)
	if err := os.Rename(tmp, a); err != nil {
		t.Fatal(err)
	}
	syncDir(t, pfs.Dir())
	cut(t, pfs, CutOptions{})
	wantContent(t, a, []byte("new"))
	wantMissing(t, tmp)
}

// A rename between folders is durable per folder: synced on one side only,
// the file is in both after a cut, or in neither.
func TestFS_Cut_RenameBetweenFoldersSyncedOnOneSide(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	src, dst := filepath.Join(pfs.Dir(), "src"), filepath.Join(pfs.Dir(), "dst")
	os.Mkdir(src, 0o700)
	os.Mkdir(dst, 0o700)
	syncDir(t, pfs.Dir())
	durableFile(t, filepath.Join(src, "f"), []byte("f"))
	durableFile(t, filepath.Join(src, "g"), []byte("g"))
	os.Rename(filepath.Join(src, "f"), filepath.Join(dst, "f"))
	os.Rename(filepath.Join(src, "g"), filepath.Join(dst, "g"))
	syncDir(t, dst)
	cut(t, pfs, CutOptions{})
	wantContent(t, filepath.Join(src, "f"), []byte("f"))
	wantContent(t, filepath.Join(dst, "f"), []byte("f"))

	os.Rename(filepath.Join(dst, "g"), filepath.Join(src, "g2"))
	syncDir(t, dst)
	cut(t, pfs, CutOptions{})
	wantMissing(t, filepath.Join(dst, "g"))
	wantMissing(t, filepath.Join(src, "g2"))
}

func TestFS_Cut_RemoveWithoutFolderSyncIsUndone(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, b := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "b")
	durableFile(t, a, []byte("a"))
	durableFile(t, b, []byte("b"))
	os.Remove(a)
	os.Remove(b)
	syncDir(t, pfs.Dir())
	durableFile(t, a, []byte("a2")) // a new file under the old name
	os.Remove(a)
	cut(t, pfs, CutOptions{})
	wantContent(t, a, []byte("a2"))
	wantMissing(t, b)
}

func TestFS_Cut_TruncateIsAChange(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	durableFile(t, p, []byte("0123456789"))
	if err := os.Truncate(p, 4); err != nil {
		t.Fatal(err)
	}
	cut(t, pfs, CutOptions{})
	wantContent(t, p, []byte("0123456789"))

	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.Truncate(4)
	f.Truncate(6) // grows with zeros
	f.Sync()
	f.Truncate(1)
	f.Close()
	cut(t, pfs, CutOptions{})
	wantContent(t, p, []byte("0123\x00\x00"))
}

func TestFS_Cut_FdatasyncAndSyncOpens(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, b := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "b")
	f, _ := os.Create(a)
	f.Write([]byte("fdatasynced"))
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g, err := os.OpenFile(b, os.O_WRONLY|os.O_CREATE|syscall.O_DSYNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("O_DSYNC"))
	g.Close()
	syncDir(t, pfs.Dir())
	// sync(2) reaches no FUSE daemon: what follows it is not durable.
	h, _ := os.OpenFile(a, os.O_WRONLY|os.O_APPEND, 0)
	h.Write([]byte(" and more"))
	h.Close()
	syscall.Sync()
	cut(t, pfs, CutOptions{})
	wantContent(t, a, []byte("fdatasynced"))
	wantContent(t, b, []byte("O_DSYNC"))
}

// fallocate and copy_file_range change content too: the model follows
// them (Verify, run at every cut, would fail otherwise), and a cut undoes
// them unless synced.
func TestFS_Cut_FallocateAndCopyFileRange(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, b := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "b")
	durableFile(t, a, bytes.Repeat([]byte("A"), 8192))
	durableFile(t, b, nil)
	f, _ := os.OpenFile(a, os.O_RDWR, 0)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 8192, 4096); err != nil { // grows the file
		t.Fatal(err)
	}
	g, _ := os.OpenFile(b, os.O_RDWR, 0)
	if n, err := unix.CopyFileRange(int(f.Fd()), nil, int(g.Fd()), nil, 8192, 0); err != nil || n != 8192 {
		t.Fatalf("copy_file_range: %d, %v", n, err)
	}
	g.Sync()
	g.Close()
	f.Close()
	want := append(make([]byte, 4096), bytes.Repeat([]byte("A"), 4096)...)
	wantContent(t, b, want)
	if err := pfs.Verify(); err != nil {
		t.Fatal(err)
	}
	cut(t, pfs, CutOptions{})
	wantContent(t, a, bytes.Repeat([]byte("A"), 8192))
	wantContent(t, b, want)
}

func TestFS_Cut_HardLinks(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, b := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "b")
	durableFile(t, a, []byte("one file"))
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	syncDir(t, pfs.Dir())
	cut(t, pfs, CutOptions{})
	wantContent(t, b, []byte("one file"))
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(pfs.Lower(), "a"), &st); err != nil || st.Nlink != 2 {
		t.Fatalf("a: nlink %d, %v; want 2", st.Nlink, err)
	}
}

// Unsynced changes kept by KeepPrefix are always a prefix, in each file.
func TestFS_Cut_KeepPrefix(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	durableFile(t, p, nil)
	const writes = 8
	seen := map[int]bool{}
	for seed := uint64(1); seed <= 40; seed++ {
		f, _ := os.OpenFile(p, os.O_WRONLY, 0)
		for i := range writes {
			f.WriteAt([]byte{byte('a' + i)}, int64(i))
		}
		f.Close()
		cut(t, pfs, CutOptions{KeepPrefix: true, Seed: seed})
		got, _ := os.ReadFile(p)
		if want := []byte("abcdefgh")[:len(got)]; !bytes.Equal(got, want) {
			t.Fatalf("seed %d: %q is not a prefix of the writes", seed, got)
		}
		seen[len(got)] = true
		// Back to empty and durable for the next round.
		if err := os.Truncate(p, 0); err != nil {
			t.Fatal(err)
		}
		f, _ = os.OpenFile(p, os.O_WRONLY, 0)
		f.Sync()
		f.Close()
	}
	if !seen[0] || !seen[writes] || len(seen) < 4 {
		t.Fatalf("prefix lengths kept over 40 seeds: %v; want none, all, and some between", seen)
	}
}

// A rename within a folder is atomic in every cut: a kept prefix of the
// folder's changes holds all of it or none of it.
func TestFS_Cut_KeepPrefixKeepsRenamesWhole(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	a, b := filepath.Join(pfs.Dir(), "a"), filepath.Join(pfs.Dir(), "b")
	durableFile(t, a, []byte("a"))
	seen := map[string]bool{}
	for seed := uint64(1); seed <= 30; seed++ {
		from, to := a, b
		if _, err := os.Stat(a); err != nil {
			from, to = b, a
		}
		writeFile(t, filepath.Join(pfs.Dir(), "before"), nil, false)
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(pfs.Dir(), "after"), nil, false)
		cut(t, pfs, CutOptions{KeepPrefix: true, Seed: seed})
		_, errA := os.Stat(a)
		_, errB := os.Stat(b)
		if (errA == nil) == (errB == nil) {
			t.Fatalf("seed %d: a: %v, b: %v; want exactly one of them", seed, errA, errB)
		}
		seen[filepath.Base(from)+"→"+filepath.Base(to)+fmt.Sprint(errA == nil)] = true
		os.Remove(filepath.Join(pfs.Dir(), "before"))
		os.Remove(filepath.Join(pfs.Dir(), "after"))
		syncDir(t, pfs.Dir())
	}
	if len(seen) < 3 {
		t.Fatalf("outcomes over 30 seeds: %v; want the rename both kept and undone", seen)
	}
}

// A torn write keeps whole leading sectors of the new data over the old.
func TestFS_Cut_TearLastPage(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	old, new := bytes.Repeat([]byte{'o'}, 8192), bytes.Repeat([]byte{'n'}, 8192)
	seen := map[int]bool{}
	for seed := uint64(1); seed <= 20; seed++ {
		durableFile(t, p, old)
		f, _ := os.OpenFile(p, os.O_WRONLY, 0)
		f.WriteAt(new, 0)
		f.Close()
		cut(t, pfs, CutOptions{TearLastPage: true, Seed: seed})
		got, _ := os.ReadFile(p)
		n := bytes.IndexByte(got, 'o')
		if len(got) != 8192 || n <= 0 || n%512 != 0 || !bytes.Equal(got[:n], new[:n]) || !bytes.Equal(got[n:], old[n:]) {
			t.Fatalf("seed %d: not a write torn at a sector: new up to %d of %d bytes", seed, n, len(got))
		}
		seen[n] = true
	}
	if len(seen) < 3 {
		t.Fatalf("tears at %v over 20 seeds; want several places", seen)
	}
	if pfs.Stats().TornWrites != 20 {
		t.Fatalf("TornWrites %d, want 20", pfs.Stats().TornWrites)
	}
}

// Reads through a mapping show the lower file after a cut, not pages the
// kernel cached before it; writes through a shared mapping count once
// msync'd, and not before.
func TestFS_Cut_Mmap(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	durableFile(t, p, bytes.Repeat([]byte("A"), 8192))
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte("B"), 4096), 0) // not synced
	m, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if m[0] != 'B' || m[4096] != 'A' {
		t.Fatalf("mapping shows %q %q before the cut", m[0], m[4096])
	}
	m[4096] = 'C' // through the mapping, synced below
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	m[4097] = 'D' // through the mapping, never synced
	unix.Munmap(m)
	f.Close()
	cut(t, pfs, CutOptions{})
	f, _ = os.Open(p)
	defer f.Close()
	m, err = unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// msync flushed the whole file, so the unsynced pwrite became durable
	// with it: fsync makes the file durable, not one range.
	if m[0] != 'B' || m[4096] != 'C' || m[4097] != 'A' {
		t.Fatalf("after the cut the mapping shows %q %q %q, want B C A", m[0], m[4096], m[4097])
	}
}

func TestFS_Cut_OpenFileIsCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the open file to be released")
	}
	pfs := Mount(t, t.TempDir())
	p := filepath.Join(pfs.Dir(), "a")
	durableFile(t, p, []byte("durable"))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cut(t, pfs, CutOptions{})
	if _, err := f.WriteAt([]byte("late"), 0); err == nil {
		t.Fatal("a write through a file opened before the cut succeeded")
	}
	wantContent(t, p, []byte("durable"))
	if s := pfs.Stats(); s.ForcedCuts != 1 {
		t.Fatalf("ForcedCuts %d, want 1", s.ForcedCuts)
	}
}

func TestFS_Mount_ExistingContentIsDurable(t *testing.T) {
	lower := t.TempDir()
	os.MkdirAll(filepath.Join(lower, "d", "e"), 0o700)
	os.WriteFile(filepath.Join(lower, "d", "e", "f"), []byte("before"), 0o640)
	os.Symlink("d/e/f", filepath.Join(lower, "link"))
	pfs := Mount(t, lower)
	wantContent(t, filepath.Join(pfs.Dir(), "link"), []byte("before"))
	writeFile(t, filepath.Join(pfs.Dir(), "d", "e", "f"), []byte("after"), false)
	cut(t, pfs, CutOptions{})
	wantContent(t, filepath.Join(pfs.Dir(), "link"), []byte("before"))
	if fi, err := os.Stat(filepath.Join(lower, "d", "e", "f")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("f: %v %v, want mode 0640", fi.Mode(), err)
	}
}

func TestFS_Close_KeepsEverything(t *testing.T) {
	lower := t.TempDir()
	pfs := Mount(t, lower)
	writeFile(t, filepath.Join(pfs.Dir(), "a"), []byte("unsynced"), false)
	if err := pfs.Close(); err != nil {
		t.Fatal(err)
	}
	wantContent(t, filepath.Join(lower, "a"), []byte("unsynced"))
	if err := pfs.Cut(CutOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Cut after Close: %v, want ErrClosed", err)
	}
}

// A change made to the lower folder behind the mount's back puts the model
// out of step, and Verify (run by every Cut) says so.
func TestFS_Verify_ChangeBehindTheMount(t *testing.T) {
	lower := t.TempDir()
	pfs := Mount(t, lower)
	durableFile(t, filepath.Join(pfs.Dir(), "a"), []byte("model"))
	if err := pfs.Verify(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(lower, "a"), []byte("behind"), 0o600)
	if err := pfs.Verify(); err == nil {
		t.Fatal("Verify passed a file changed behind the mount")
	}
	if err := pfs.Cut(CutOptions{}); err == nil {
		t.Fatal("Cut passed a file changed behind the mount")
	}
	if _, err := os.ReadFile(filepath.Join(pfs.Dir(), "a")); err == nil {
		t.Fatal("the mount still serves after a failed Cut")
	}
	// In step again for the Verify at the end of the test.
	os.WriteFile(filepath.Join(lower, "a"), []byte("model"), 0o600)
}

// The spool tells a copied folder from its original by the folder's inode,
// so a cut that renumbered the files would make every spool a "copy".
func TestFS_Cut_KeepsInodeNumbers(t *testing.T) {
	pfs := Mount(t, t.TempDir())
	dir := filepath.Join(pfs.Dir(), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	syncDir(t, pfs.Dir())
	durableFile(t, filepath.Join(dir, "f"), []byte("synced"))
	ino := func(path string) uint64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before := map[string]uint64{}
	for _, p := range []string{pfs.Dir(), dir, filepath.Join(dir, "f")} {
		before[p] = ino(p)
	}
	cut(t, pfs, CutOptions{})
	for p, want := range before {
		if got := ino(p); got != want {
			t.Errorf("%s: inode %d after the cut, %d before", p, got, want)
		}
	}
	// A file made after the cut gets a number none of the old ones had.
	durableFile(t, filepath.Join(dir, "g"), nil)
	if n := ino(filepath.Join(dir, "g")); n == before[dir] || n == before[filepath.Join(dir, "f")] || n == before[pfs.Dir()] {
		t.Errorf("a new file got inode %d, an old one's", n)
	}
}
