package writer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// One writer per database, and one per spool folder. Two writers on one
// database each read the stored position once and then apply the same
// records (packet_count 20-64 % high, measured); two writers on one spool
// each release segments the other has not applied (records lost). Each
// claim is an flock on a file (the database's here, the spool folder's in
// spool.LockConsumer, which OpenSpoolSource takes), held for the writer's
// life: the
// kernel drops it when the process dies, SIGKILL included, so a lock is
// never left behind and a restarted writer starts at once. A row in the
// database could not do that.
//
// The lock only keeps a second writer out. What keeps two writers from
// counting twice if they ever meet anyway (one database reached through two
// paths, a bind mount, a lock file deleted by hand) is the position check in
// every batch's transaction (drain.go, begin): a batch that finds another
// position stored than the one it started from is rolled back.

// ErrLocked is what a LockError matches with errors.Is: another writer
// holds the database or the spool folder.
var ErrLocked = errors.New("held by another writer")

// LockError says that another process holds a lock the writer needs.
type LockError struct {
	What string // what the lock guards: "database /x/meshcore.db"
	Path string // the lock file
	PID  int    // the holder's pid as it wrote it in the file; 0 if unknown
	Hint string
}

func (e *LockError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = fmt.Sprintf("another process (pid %d)", e.PID)
	}
	s := fmt.Sprintf("%s is held by %s: lock file %s", e.What, holder, e.Path)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockError) Is(target error) bool { return target == ErrLocked }

// DatabaseLockPath is the lock file of the database at dbPath: beside it,
// named after it, with symbolic links resolved so that two paths to one
// file give one lock file.
func DatabaseLockPath(dbPath string) string {
	return resolvedPath(dbPath) + ".writer.lock"
}

// resolvedPath is path absolute, with the symbolic links of the file (if
// it exists) or else of its folder resolved.
func resolvedPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(dir, filepath.Base(abs))
	}
	return abs
}

// fileLock is an flock held on a file for as long as the file stays open.
type fileLock struct {
	path, what, hint string
	f                *os.File
}

// acquireLock takes an exclusive flock on the file at path (created if
// need be, 0600) and writes our pid into it. A lock another process holds
// is a *LockError at once: the caller decides whether to wait.
func acquireLock(path, what, hint string) (*fileLock, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock file %s: %w", path, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) && attempt < 20 {
			// A tool testing the lock holds it for microseconds.
			f.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, &LockError{What: what, Path: path, PID: readLockPID(path), Hint: hint}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// The file may have been deleted or replaced between the open and
		// the flock: then the lock guards nothing, take the new file.
		if same, err := sameFile(f, path); err != nil || !same {
			f.Close()
			if attempt < 20 {
				continue
			}
			return nil, fmt.Errorf("lock %s: the file keeps being replaced", path)
		}
		if err = f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("write pid to lock file %s: %w", path, err)
		}
		return &fileLock{path: path, what: what, hint: hint, f: f}, nil
	}
}

// check makes sure the lock still guards the file at its path: one deleted
// or replaced by hand is locked anew. It fails with a *LockError when
// another process took the new file first.
func (l *fileLock) check() (renewed bool, err error) {
	if same, err := sameFile(l.f, l.path); err == nil && same {
		return false, nil
	}
	n, err := acquireLock(l.path, l.what, l.hint)
	if err != nil {
		return false, err
	}
	l.f.Close()
	l.f = n.f
	return true, nil
}

// release drops the lock. The file stays: deleting it would let a second
// writer lock a new file while a third still holds the old one.
func (l *fileLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

func sameFile(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Lstat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// readLockPID is the pid a lock holder wrote, 0 if it cannot be read.
func readLockPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// lockDatabase takes the database's writer lock, creating the database's
// folder if need be (as opening it would).
func lockDatabase(dbPath string) (*fileLock, error) {
	if err := makeFolder(filepath.Dir(dbPath)); err != nil {
		return nil, fmt.Errorf("lock database %s: create folder: %w", dbPath, err)
	}
	return acquireLock(DatabaseLockPath(dbPath), "database "+dbPath,
		"only one `meshingest write` may write a database; stop the other one (systemctl status meshingest-writer), or give this one its own dbPath")
}
