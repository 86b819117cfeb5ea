package shared

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileAtomic_Mode0600AndReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := WriteFileAtomic(path, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte(`{"a":2}`)); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != `{"a":2}` {
		t.Fatalf("content %q", got)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("tmp file left behind: %v", err)
	}
}

func TestWriteFileAtomic_RefusesSymlinkTmp(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o644)
	path := filepath.Join(dir, "stats.json")
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(path, []byte("x"))
	if !errors.Is(err, ErrUnsafeStatsPath) {
		t.Fatalf("err = %v, want ErrUnsafeStatsPath", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious" {
		t.Fatalf("symlink target was written: %q", got)
	}
}

func TestWriteFileAtomic_RefusesFIFOAndHardLink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	if err := syscall.Mkfifo(path+".tmp", 0o600); err != nil {
		t.Fatal(err)
	}
	// Opening a FIFO for writing blocks until a reader appears; O_NONBLOCK
	// is not used on purpose, so open it from a reader first.
	go func() {
		if f, err := os.OpenFile(path+".tmp", os.O_RDONLY, 0); err == nil {
			f.Close()
		}
	}()
	if err := WriteFileAtomic(path, []byte("x")); !errors.Is(err, ErrUnsafeStatsPath) {
		t.Fatalf("FIFO: err = %v, want ErrUnsafeStatsPath", err)
	}
	os.Remove(path + ".tmp")

	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("keep"), 0o600)
	if err := os.Link(other, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("x")); !errors.Is(err, ErrUnsafeStatsPath) {
		t.Fatalf("hard link: err = %v, want ErrUnsafeStatsPath", err)
	}
}
