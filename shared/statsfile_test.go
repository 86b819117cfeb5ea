package shared

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

// A FIFO planted at the temporary path once blocked the open for writing
// until a reader appeared, which was never: the stats loop and the shutdown
// behind it hung. It must be refused at once, with no reader.
func TestWriteFileAtomic_FIFOTmp_RefusedWithoutBlocking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := syscall.Mkfifo(path+".tmp", 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- WriteFileAtomic(path, []byte("x")) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnsafeStatsPath) {
			t.Fatalf("err = %v, want ErrUnsafeStatsPath", err)
		}
	case <-time.After(30 * time.Second):
		// Unblock the stuck open so the test binary can exit.
		if f, err := os.OpenFile(path+".tmp", os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			defer f.Close()
		}
		t.Fatal("WriteFileAtomic blocked on a FIFO at the temporary path")
	}
}

// A hard link planted at the temporary path once had its target truncated
// (O_TRUNC ran before the link count was checked). The name is unlinked
// instead: the other file keeps its content and the write goes through.
func TestWriteFileAtomic_HardLinkTmp_TargetKept(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(other); string(got) != "keep" {
		t.Fatalf("hard-linked file now holds %q, want %q", got, "keep")
	}
	if got, _ := os.ReadFile(path); string(got) != "new" {
		t.Fatalf("stats file holds %q", got)
	}
}

func TestWriteFileAtomic_DirectoryTmp_Refused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := os.Mkdir(path+".tmp", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("x")); !errors.Is(err, ErrUnsafeStatsPath) {
		t.Fatalf("err = %v, want ErrUnsafeStatsPath", err)
	}
	if fi, err := os.Lstat(path + ".tmp"); err != nil || !fi.IsDir() {
		t.Fatalf("the directory was not left alone: %v", err)
	}
}

// A temporary file left by a crash (or planted, owned by anyone) is
// replaced, never written through.
func TestWriteFileAtomic_StaleTmp_Replaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := os.WriteFile(path+".tmp", []byte("half a stats fi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("whole")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "whole" {
		t.Fatalf("stats file holds %q", got)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}
