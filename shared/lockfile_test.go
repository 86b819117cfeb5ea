package shared

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLockFile_SecondLock_Refused: one holder at a time; the refusal
// carries the holder's pid; a lock file deleted by hand is no longer Held.
func TestLockFile_SecondLock_Refused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var held *LockHeldError
	if _, err := LockFile(path); !errors.As(err, &held) || !errors.Is(err, ErrLockHeld) || held.PID != os.Getpid() {
		t.Fatalf("second LockFile: %v, want a LockHeldError with pid %d", err, os.Getpid())
	}
	if !LockFileHeld(path) {
		t.Error("LockFileHeld false while held")
	}
	os.Remove(path)
	if ok, _ := l.Held(); ok {
		t.Error("Held true after the file was deleted")
	}
	l.Close()
	l2, err := LockFile(path)
	if err != nil {
		t.Fatalf("LockFile after Close: %v", err)
	}
	l2.Close()
	if LockFileHeld(path) {
		t.Error("LockFileHeld true after Close")
	}
}
