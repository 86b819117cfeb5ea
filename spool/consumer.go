package spool

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

// One consumer per folder. A consumer (the writer) deletes the segments
// it has applied (Release); a second consumer of the same folder, writing
// into another database, would delete segments the first has not applied
// yet, and their records would be lost. LockConsumer enforces one, with an
// flock on writer.lock held for the consumer's life: the kernel drops it
// when the process dies, SIGKILL included, so it is never left behind.
// Inspecting readers (the CLI) take no lock: they delete nothing.

// consumerLockFile is the consumer lock's file in the spool folder.
const consumerLockFile = "writer.lock"

// ErrConsumerLocked means another consumer drains the spool folder.
var ErrConsumerLocked = errors.New("spool: folder drained by another consumer")

// ConsumerLock is a held consumer lock; Close releases it.
type ConsumerLock struct {
	f *os.File
}

// LockConsumer takes the consumer lock of the spool in dir, creating the
// folder (0700) if need be, and writes our pid into the lock file. Take it
// before OpenReader: opening a reader already changes the folder (it
// removes what a crashed reader's repair left). Another holder fails with
// an *Error wrapping ErrConsumerLocked that names the lock file and the
// holder's pid.
func LockConsumer(dir string) (*ConsumerLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &Error{Op: "create spool folder", Path: dir, Err: err, Hint: "create it, owned by the user meshingest runs as, mode 0700"}
	}
	path := filepath.Join(dir, consumerLockFile)
	for attempt := 0; ; attempt++ {
		f, err := openSpoolFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, &Error{Op: "open", Path: path, Err: err}
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) && attempt < 20 {
			// A tool testing the lock (ConsumerAlive) holds it for
			// microseconds.
			f.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			pid, _ := ReadConsumerPID(dir)
			return nil, &Error{Op: "lock", Path: path, Err: fmt.Errorf("%w (pid %d)", ErrConsumerLocked, pid),
				Hint: "only one writer may drain a spool folder (it deletes what it has written); stop the other one, or give each writer its own spoolDir and receiver"}
		}
		if err != nil {
			f.Close()
			return nil, &Error{Op: "lock", Path: path, Err: err}
		}
		// Deleted or replaced between the open and the flock: the lock
		// would guard nothing; take the new file.
		a, aerr := f.Stat()
		b, berr := os.Lstat(path)
		if aerr != nil || berr != nil || !os.SameFile(a, b) {
			f.Close()
			if attempt < 20 {
				continue
			}
			return nil, &Error{Op: "lock", Path: path, Err: errors.New("the file keeps being replaced")}
		}
		if err = f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		if err != nil {
			f.Close()
			return nil, &Error{Op: "write pid to", Path: path, Err: err}
		}
		return &ConsumerLock{f: f}, nil
	}
}

// Close releases the lock. The file stays: deleting it would let a second
// consumer lock a new file while a third still holds the old one.
func (l *ConsumerLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// ReadConsumerPID reads the pid written in writer.lock, without taking the
// lock. The process may have exited since; see ConsumerAlive.
func ReadConsumerPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, consumerLockFile))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// ConsumerAlive reports whether a consumer holds the spool in dir now,
// testing the lock with a non-blocking shared flock released at once.
func ConsumerAlive(dir string) bool {
	f, err := os.Open(filepath.Join(dir, consumerLockFile))
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
