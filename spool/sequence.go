package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshingest/meshingest/shared"
)

// Seqs must grow across restarts even when the writer has drained and
// deleted every segment, so the appender reserves them in blocks: the
// "sequence" file holds the highest Seq reserved, written and synced before
// any record with a higher Seq goes to disk. A restart continues after the
// reservation; the unused rest of a block is skipped, which costs nothing
// (Seqs are 64-bit) and saves a sync per group.
const seqBlock = 1 << 24

func readSequence(dir string) (uint64, error) {
	path := filepath.Join(dir, sequenceFile)
	f, err := openSpoolFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, &Error{Op: "read", Path: path, Err: err}
	}
	defer f.Close()
	b := make([]byte, 64)
	n, _ := f.Read(b)
	v, err := strconv.ParseUint(strings.TrimSpace(string(b[:n])), 10, 64)
	if err != nil {
		return 0, &Error{Op: "read", Path: path, Err: fmt.Errorf("%w: not a number", ErrCorrupt),
			Hint: "remove it: the appender then continues after the highest Seq in the segments and the writer position"}
	}
	return v, nil
}

// writeSequence durably replaces the sequence file with v; sync is called
// for the file and then for the folder.
func writeSequence(dir string, v uint64, sync func(*os.File) error, syncFolder func() error) error {
	path := filepath.Join(dir, sequenceFile)
	tmp := path + ".tmp"
	f, err := openSpoolFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return &Error{Op: "reserve Seqs", Path: tmp, Err: err}
	}
	_, err = f.WriteString(strconv.FormatUint(v, 10) + "\n")
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncFolder()
	}
	if err != nil {
		return &Error{Op: "reserve Seqs", Path: path, Err: err, Hint: hintForWriteError(err)}
	}
	return nil
}

// lockAppender takes appender.lock (flock, held for the appender's life)
// and writes our pid into it for `spool status`.
func lockAppender(dir string) (*shared.FileLock, error) {
	path := filepath.Join(dir, lockFile)
	l, err := lockSpoolFile(path)
	var held *shared.LockHeldError
	if errors.As(err, &held) {
		return nil, &Error{Op: "lock", Path: path, Err: fmt.Errorf("%w (pid %d)", ErrLocked, held.PID),
			Hint: "only one receiver may append to a spool folder; stop the other one, or give this one its own spoolDir"}
	}
	var se *Error
	if errors.As(err, &se) {
		return nil, err
	}
	if err != nil {
		return nil, &Error{Op: "lock", Path: path, Err: err}
	}
	return l, nil
}

// ReadAppenderPID reads the pid written in appender.lock, without taking
// the lock. The process may have exited since; see AppenderAlive.
func ReadAppenderPID(dir string) (int, error) {
	return shared.ReadLockPID(filepath.Join(dir, lockFile))
}

// AppenderAlive reports whether an appender holds the spool in dir now. It
// tests the lock with a non-blocking shared flock on a second open file
// description, released at once, so it never waits.
func AppenderAlive(dir string) bool { return shared.LockFileHeld(filepath.Join(dir, lockFile)) }
