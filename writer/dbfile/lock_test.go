package dbfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLock_Check_DeletedFileLockedAgain: a lock file deleted by hand is
// created and locked again, so a writer started afterwards is still kept
// out.
func TestLock_Check_DeletedFileLockedAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := AcquireLock(path, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if renewed, err := l.Check(); err != nil || renewed {
		t.Fatalf("check of an untouched lock: renewed %v, %v", renewed, err)
	}
	os.Remove(path)
	if renewed, err := l.Check(); err != nil || !renewed {
		t.Fatalf("check after the file was deleted: renewed %v, %v; want renewed", renewed, err)
	}
	if _, err := AcquireLock(path, "test", ""); !errors.Is(err, ErrLocked) {
		t.Fatalf("a second lock on the renewed file: %v, want ErrLocked", err)
	}
}

// TestDatabaseLockPath_Symlink: two paths to one database, one through a
// symbolic link, give one lock file.
func TestDatabaseLockPath_Symlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	os.Mkdir(real, 0o700)
	os.WriteFile(filepath.Join(real, "meshcore.db"), nil, 0o600)
	os.Symlink(real, filepath.Join(dir, "link"))
	a, b := DatabaseLockPath(filepath.Join(real, "meshcore.db")), DatabaseLockPath(filepath.Join(dir, "link", "meshcore.db"))
	if a != b {
		t.Errorf("lock files %s and %s for one database", a, b)
	}
}
