package dbfile

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/meshingest/meshingest/shared"
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
// every batch's transaction (writer/drain.go, begin): a batch that finds another
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

// Lock is a held lock file (shared.LockFile) and what a refusal says.
type Lock struct {
	path, what, hint string
	l                *shared.FileLock
}

// AcquireLock takes the lock file at path. A lock another process holds
// is a *LockError at once: the caller decides whether to wait.
func AcquireLock(path, what, hint string) (*Lock, error) {
	l, err := shared.LockFile(path)
	var held *shared.LockHeldError
	if errors.As(err, &held) {
		return nil, &LockError{What: what, Path: path, PID: held.PID, Hint: hint}
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{path: path, what: what, hint: hint, l: l}, nil
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// Check makes sure the lock still guards the file at its path: one deleted
// or replaced by hand is locked anew. It fails with a *LockError when
// another process took the new file first.
func (l *Lock) Check() (renewed bool, err error) {
	if held, err := l.l.Held(); err == nil && held {
		return false, nil
	}
	n, err := AcquireLock(l.path, l.what, l.hint)
	if err != nil {
		return false, err
	}
	l.l.Close()
	l.l = n.l
	return true, nil
}

// Release drops the lock. The file stays: deleting it would let a second
// writer lock a new file while a third still holds the old one.
func (l *Lock) Release() {
	if l != nil {
		l.l.Close()
	}
}

// LockDatabase takes the database's writer lock, creating the database's
// folder if need be (as opening it would).
func LockDatabase(dbPath string) (*Lock, error) {
	if err := makeFolder(filepath.Dir(dbPath)); err != nil {
		return nil, fmt.Errorf("lock database %s: create folder: %w", dbPath, err)
	}
	return AcquireLock(DatabaseLockPath(dbPath), "database "+dbPath,
		"only one `meshingest write` may write a database; stop the other one (systemctl status meshingest-writer), or give this one its own dbPath")
}
