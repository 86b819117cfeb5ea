package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLockConsumer_SecondConsumer_Refused: one consumer per folder; the
// refusal names the lock file and the holder's pid, and the lock is free
// again once the first closes it.
func TestLockConsumer_SecondConsumer_Refused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	l, err := LockConsumer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ConsumerAlive(dir) {
		t.Error("ConsumerAlive false while the lock is held")
	}
	_, err = LockConsumer(dir)
	if !errors.Is(err, ErrConsumerLocked) {
		t.Fatalf("second LockConsumer: %v, want ErrConsumerLocked", err)
	}
	if msg := err.Error(); !strings.Contains(msg, filepath.Join(dir, consumerLockFile)) || !strings.Contains(msg, "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("refusal %q does not name the lock file and pid %d", msg, os.Getpid())
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool folder made with %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	l.Close()
	if ConsumerAlive(dir) {
		t.Error("ConsumerAlive true after Close")
	}
	l2, err := LockConsumer(dir)
	if err != nil {
		t.Fatalf("LockConsumer after Close: %v", err)
	}
	l2.Close()
}

// TestLockConsumer_LockFileNotLegacy: a fresh folder holding only the lock
// file is not taken for a spool made before identities.
func TestLockConsumer_LockFileNotLegacy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	l, err := LockConsumer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.IdentityInfo().AdoptedLegacy {
		t.Error("a new folder with only writer.lock was adopted as a legacy spool")
	}
}
