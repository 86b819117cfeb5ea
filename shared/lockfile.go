package shared

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A lock file keeps a second process of a kind out of a resource (one
// appender per spool folder, one writer per spool folder and per
// database): an exclusive flock held for the holder's life on a file that
// holds its pid. The kernel drops the lock when the process dies, SIGKILL
// included, so it is never left behind, and the file is never deleted (a
// second process could then lock a new file while a third holds the old).

// ErrLockHeld is what a *LockHeldError matches with errors.Is.
var ErrLockHeld = errors.New("lock held by another process")

// LockHeldError says another process holds the lock file at Path.
type LockHeldError struct {
	Path string
	PID  int // the holder's pid as it wrote it; 0 if unreadable
}

func (e *LockHeldError) Error() string {
	return fmt.Sprintf("%s is locked by another process (pid %d)", e.Path, e.PID)
}

func (e *LockHeldError) Is(target error) bool { return target == ErrLockHeld }

// FileLock is a held lock file; Close releases it.
type FileLock struct {
	path string
	f    *os.File
}

// LockFile takes an exclusive flock on the file at path (created 0600 if
// need be, never through a symbolic link) and writes our pid into it. A
// lock another process holds is a *LockHeldError at once, after a few
// retries over 200 ms for a tool that tests the lock (LockFileHeld).
func LockFile(path string) (*FileLock, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, err
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			if attempt < 20 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			pid, _ := ReadLockPID(path)
			return nil, &LockHeldError{Path: path, PID: pid}
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		// Deleted or replaced between the open and the flock: the lock
		// would guard nothing; take the new file.
		l := &FileLock{path: path, f: f}
		if same, err := l.Held(); err != nil || !same {
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
			return nil, fmt.Errorf("write pid to %s: %w", path, err)
		}
		return l, nil
	}
}

// Path is the lock file.
func (l *FileLock) Path() string { return l.path }

// Held reports whether the file at the lock's path is still the one
// locked: false when it was deleted or replaced (by hand).
func (l *FileLock) Held() (bool, error) {
	a, err := l.f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Lstat(l.path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// Close releases the lock; the file stays.
func (l *FileLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// ReadLockPID reads the pid a holder wrote into the lock file at path,
// without taking the lock. The process may have exited since.
func ReadLockPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// LockFileHeld reports whether a process holds the lock file at path now,
// testing it with a non-blocking shared flock released at once.
func LockFileHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
