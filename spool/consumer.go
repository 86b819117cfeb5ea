package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshingest/meshingest/shared"
)

// One consumer per folder. A consumer (the writer) deletes the segments
// it has applied (Release); a second consumer of the same folder, writing
// into another database, would delete segments the first has not applied
// yet, and their records would be lost. LockConsumer enforces one, with an
// flock on writer.lock held for the consumer's life (shared.LockFile): the
// kernel drops it when the process dies, SIGKILL included, so it is never
// left behind. Inspecting readers (the CLI) take no lock: they delete
// nothing.

// consumerLockFile is the consumer lock's file in the spool folder.
const consumerLockFile = "writer.lock"

// ErrConsumerLocked means another consumer drains the spool folder.
var ErrConsumerLocked = errors.New("spool: folder drained by another consumer")

// ConsumerLock is a held consumer lock; Close releases it.
type ConsumerLock struct{ l *shared.FileLock }

// LockConsumer takes the consumer lock of the spool in dir, creating the
// folder (0700) if need be, and writes our pid into the lock file. Take it
// before OpenReader: opening a reader already changes the folder (it
// removes what a crashed reader's repair left). Another holder fails with
// an *Error wrapping ErrConsumerLocked that names the lock file and the
// holder's pid.
func LockConsumer(dir string) (*ConsumerLock, error) {
	// Synced like the appender's (mkdirAllSynced): the writer may start
	// first, and the appender then finds the folder made and syncs
	// nothing, so a folder name left unsynced here would take the whole
	// spool with it in a power cut.
	if err := mkdirAllSynced(dir); err != nil {
		return nil, &Error{Op: "create spool folder", Path: dir, Err: err, Hint: "create it, owned by the user meshingest runs as, mode 0700"}
	}
	path := filepath.Join(dir, consumerLockFile)
	l, err := lockSpoolFile(path)
	var held *shared.LockHeldError
	if errors.As(err, &held) {
		return nil, &Error{Op: "lock", Path: path, Err: fmt.Errorf("%w (pid %d)", ErrConsumerLocked, held.PID),
			Hint: "only one writer may drain a spool folder (it deletes what it has written); stop the other one, or give each writer its own spoolDir and receiver"}
	}
	var se *Error
	if errors.As(err, &se) {
		return nil, err
	}
	if err != nil {
		return nil, &Error{Op: "lock", Path: path, Err: err}
	}
	return &ConsumerLock{l: l}, nil
}

// lockSpoolFile takes the lock file at path (shared.LockFile) once
// openSpoolFile has checked that it is a plain file of ours, not a
// symbolic link or another user's file.
func lockSpoolFile(path string) (*shared.FileLock, error) {
	f, err := openSpoolFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	return shared.LockFile(path)
}

// Close releases the lock. The file stays.
func (c *ConsumerLock) Close() error {
	if c == nil {
		return nil
	}
	return c.l.Close()
}

// ReadConsumerPID reads the pid written in writer.lock, without taking the
// lock. The process may have exited since; see ConsumerAlive.
func ReadConsumerPID(dir string) (int, error) {
	return shared.ReadLockPID(filepath.Join(dir, consumerLockFile))
}

// ConsumerAlive reports whether a consumer holds the spool in dir now,
// testing the lock with a non-blocking shared flock released at once.
func ConsumerAlive(dir string) bool { return shared.LockFileHeld(filepath.Join(dir, consumerLockFile)) }
