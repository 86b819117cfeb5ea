// Package dbfile is the writer's database file: opening it with the
// writer's connection settings (Open, Options), telling what is wrong with
// a file the writer cannot use (Error, Kind, Classify, and a hint for the
// operator), the episodes during which the database refuses writes
// (Tracker), and the lock that keeps a second writer out (LockDatabase).
// It knows nothing of the spool or of CoreScope's tables: the writer
// (package writer) builds on it.
package dbfile

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Options tune the SQLite connection. Zero values mean the defaults, which
// were chosen by the writer's benchmarks (docs/reference/measured.md and
// the writer's package documentation).
type Options struct {
	// CacheKiB is the page cache size. A larger cache keeps more of the
	// observation indexes in memory once the tables reach millions of
	// rows (measured.md: 9.4k/s with 2 MiB, 11.4k/s with 64 MiB at 1 M
	// rows), but it is resident memory, about 1.8 KiB per KiB of cache
	// (the pure-Go allocator rounds a 4 KiB page and its header up), and
	// the writer's budget is 64 MiB in all, of which the executable's own
	// pages take about 20. Inserts touch the right edge of the id and
	// time indexes and one spot per observer in the others, a small
	// working set: the catch-up benchmarks ran as fast with 2 or 4 MiB
	// as with 8 or 24. Default 2 MiB, SQLite's own default, which leaves
	// room for the jobs' in-memory state (config writer.cacheKiB).
	CacheKiB int
	// BusyTimeoutMs is how long SQLite itself waits for a lock before a
	// statement fails with SQLITE_BUSY. A lock shorter than this is
	// absorbed silently; a longer one becomes a logged episode that the
	// writer retries with back-off. Default 1000 ms.
	BusyTimeoutMs int
	// WALAutoCheckpointPages is wal_autocheckpoint. A larger value writes
	// hot index pages to the main file less often (measured: 1.1 KiB of
	// disk writes per message at 4000 pages, 0.94 KiB at 16000) but lets
	// the WAL grow to that size before it is folded into the database.
	// Default 16000 pages (62.5 MiB, below journal_size_limit).
	WALAutoCheckpointPages int
	// PageSize is the page size of a database the writer creates (an
	// existing file keeps its own; VACUUM after PRAGMA page_size changes
	// it). Every commit writes each page it touched to the WAL whole, and
	// an observation touches a page in each per-observer index: at the
	// low-latency spool profile's 6-7 commits a second, 4 KiB pages wrote
	// about 20 KiB per message, 1 KiB pages 9 KiB (harness steady run on
	// a loaded machine). Smaller pages write less per commit but make the
	// B-trees a level deeper and push a transmission whose decoded JSON
	// is over about a kilobyte into overflow pages, which CoreScope's
	// server then reads on every page it shows; that cost is not
	// measured. So the default is SQLite's own, 4096, and 1024 is the
	// documented choice for SD cards. Default DefaultPageSize.
	PageSize int
}

// Defaults of the options the configuration can set (writer.cacheKiB,
// writer.pageSize, writer.walAutoCheckpointPages). `meshingest config
// check` prints them and docs/configuration.md is tested against them.
const (
	DefaultCacheKiB = 2 << 10
	// DefaultPageSize is the page size of a database the writer creates.
	DefaultPageSize = 4096
	// DefaultWALAutoCheckpointPages is wal_autocheckpoint.
	DefaultWALAutoCheckpointPages = 16000
)

func (o Options) withDefaults() Options {
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.CacheKiB <= 0 {
		o.CacheKiB = DefaultCacheKiB
	}
	if o.BusyTimeoutMs <= 0 {
		o.BusyTimeoutMs = 1000
	}
	if o.WALAutoCheckpointPages <= 0 {
		o.WALAutoCheckpointPages = DefaultWALAutoCheckpointPages
	}
	return o
}

// ErrDatabaseMissing is returned when the database file disappeared while
// the writer runs (moved away for a restore, say). The writer never creates
// a new, empty database in its place: it waits for the file to come back.
var ErrDatabaseMissing = errors.New("database file missing")

// Error is a database file the writer cannot use: what it was doing, the
// path, what is wrong (Kind) and, in the message, what the operator can do
// about it.
type Error struct {
	Op   string // "open database", "create the database folder"
	Path string
	Kind Kind
	Err  error
}

func (e *Error) Error() string {
	return e.Op + " " + e.Path + ": " + e.Err.Error() + " (" + e.Kind.Hint() + ")"
}

func (e *Error) Unwrap() error { return e.Err }

// Hint is what the operator can do.
func (e *Error) Hint() string { return e.Kind.Hint() }

// Permanent reports a database that retrying cannot fix: a folder, a file
// that is not a database, one this user may not write, a read-only file
// system, a damaged file. At start the writer exits with the hint instead
// of retrying without ever being ready.
func (e *Error) Permanent() bool { return e.Kind.Permanent() }

// Permanent reports a kind of trouble that retrying cannot fix.
func (k Kind) Permanent() bool {
	switch k {
	case Permission, IsDir, NotADB, ReadOnlyFS, Corrupt:
		return true
	}
	return false
}

// sqliteHeader starts every SQLite database file.
var sqliteHeader = []byte("SQLite format 3\x00")

// checkDatabaseFile looks at path before SQLite does, which says "unable
// to open database file" for a folder, a missing folder and a permission
// problem alike, and "file is not a database" only at the first query. It
// reports whether the database does not exist yet (created by the open,
// with create) and, for an existing one, whether it is a SQLite file this
// user can read and write in a folder it can write (SQLite creates the
// -wal and -shm files beside it).
func checkDatabaseFile(path string, create bool) (isNew bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		dir := filepath.Dir(path)
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			if !create {
				return false, &Error{Op: "open database", Path: path, Kind: NoFolder, Err: fmt.Errorf("the folder %s is gone: %w", dir, ErrDatabaseMissing)}
			}
			if err := makeFolder(dir); err != nil {
				return false, fileError("create the database folder", dir, err)
			}
		}
		if !create {
			return false, &Error{Op: "open database", Path: path, Kind: Missing, Err: ErrDatabaseMissing}
		}
		if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
			return false, fileError("create database", path, fmt.Errorf("the folder %s is not writable: %w", dir, err))
		}
		return true, nil
	case err != nil:
		return false, fileError("open database", path, err)
	case fi.IsDir():
		return false, &Error{Op: "open database", Path: path, Kind: IsDir, Err: errors.New("this is a folder, not a database file")}
	case !fi.Mode().IsRegular():
		return false, &Error{Op: "open database", Path: path, Kind: NotADB, Err: fmt.Errorf("not a regular file (%s)", fi.Mode().Type())}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, fileError("open database", path, err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteHeader))
	n, _ := io.ReadFull(f, head)
	if n > 0 && (n < len(head) || !bytes.Equal(head, sqliteHeader)) {
		return false, &Error{Op: "open database", Path: path, Kind: NotADB, Err: fmt.Errorf("the file does not start with the SQLite header (%d bytes)", fi.Size())}
	}
	if err := syscall.Access(filepath.Dir(path), 2 /* W_OK */); err != nil {
		return false, fileError("open database", path, fmt.Errorf("its folder is not writable (SQLite creates the -wal and -shm files there): %w", err))
	}
	return false, nil
}

// fileError classifies a system call's failure on the database's path.
func fileError(op, path string, err error) error {
	kind := IO
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		kind = Permission
	case errors.Is(err, syscall.EROFS):
		kind = ReadOnlyFS
	case errors.Is(err, syscall.ENOSPC):
		kind = DiskFull
	case errors.Is(err, syscall.ENOTDIR):
		kind = NoFolder
	}
	return &Error{Op: op, Path: path, Kind: kind, Err: err}
}

// File is the writer's one SQLite connection and what it needs to know
// about the file under it.
type File struct {
	Path string
	db   *sql.DB
	Conn *sql.Conn
	// dev and ino identify the file that was opened, so that a database
	// replaced under the writer (a restore) is noticed and reopened
	// instead of written into the unlinked old inode.
	dev, ino uint64
	// Created is set when the open created the file.
	Created bool
}

// Open opens (creating it when create is true) the SQLite file at
// path with the writer's connection settings: incremental auto-vacuum set
// before the first table, WAL, synchronous=FULL (under NORMAL a committed
// WAL transaction can vanish on power loss, and batching makes FULL cost
// nothing measurable), foreign keys not enforced (see below), statement
// journals in memory, and one connection.
func Open(ctx context.Context, path string, create bool, opts Options) (*File, error) {
	opts = opts.withDefaults()
	isNew, err := checkDatabaseFile(path, create)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if isNew {
		if err := initDatabaseFile(ctx, path, opts.PageSize); err != nil {
			return nil, err
		}
	}
	// auto_vacuum only takes effect before the first table exists (a new
	// file has it from initDatabaseFile; here it is a no-op).
	for _, p := range []string{
		"auto_vacuum(INCREMENTAL)",
		"journal_mode(WAL)",
		"synchronous(FULL)",
		// CoreScope's ingestor turns foreign keys on. The writer
		// keeps the schema's one reference (observations.transmission_id)
		// by construction instead: a transmission is inserted before its
		// observations in the same transaction, and retention deletes
		// observations before their transmission. Enforcing it costs a
		// lookup per observation and, since the check can abort a
		// multi-row INSERT midway, a statement journal; the tests and the
		// harness run PRAGMA foreign_key_check on what the writer wrote.
		"foreign_keys(OFF)",
		fmt.Sprintf("busy_timeout(%d)", opts.BusyTimeoutMs),
		"temp_store(MEMORY)",
		fmt.Sprintf("cache_size(%d)", -opts.CacheKiB),
		fmt.Sprintf("wal_autocheckpoint(%d)", opts.WALAutoCheckpointPages),
		// Keep a checkpointed WAL from staying at its high-water size.
		"journal_size_limit(67108864)",
	} {
		q.Add("_pragma", p)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	d := &File{Path: path, db: db, Conn: conn, Created: isNew}
	if err := d.checkJournalMode(ctx); err != nil {
		d.Close()
		return nil, err
	}
	if isNew {
		// SQLite creates the file but syncs its folder only for the
		// journal and the WAL it creates (os_unix.c, UNIXFILE_DIRSYNC),
		// which covers the database's entry only by the accident of
		// sharing the folder: sync it here.
		if err := syncFolder(filepath.Dir(path)); err != nil {
			d.Close()
			return nil, fmt.Errorf("open database %s: %w", path, err)
		}
	}
	d.dev, d.ino, _ = fileIdentity(path)
	return d, nil
}

// initDatabaseFile creates the database file with its page size, then
// incremental auto-vacuum, then WAL, in that order: each fixes what comes
// before it. They are separate statements on a first connection because
// the driver runs a DSN's _pragma list sorted by name, which put
// auto_vacuum before page_size and left every new file at 4096.
func initDatabaseFile(ctx context.Context, path string, pageSize int) error {
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	defer db.Close()
	for _, s := range []string{fmt.Sprintf("PRAGMA page_size=%d", pageSize), "PRAGMA auto_vacuum=INCREMENTAL", "PRAGMA journal_mode=WAL"} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fileError("create database", path, fmt.Errorf("%s: %w", s, err))
		}
	}
	return nil
}

// makeFolder creates dir and its missing parents (0755), and syncs the
// parent of each folder it created, so that a new folder survives a power
// cut before anything is written into it. SQLite syncs a folder only when it
// creates a journal or WAL file in it, never the folders above.
func makeFolder(dir string) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncFolder(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// syncFolder fsyncs a folder: the entries created in it are durable.
func syncFolder(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

func (d *File) checkJournalMode(ctx context.Context) error {
	var mode string
	if err := d.Conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("open database %s: read journal_mode: %w", d.Path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("open database %s: journal_mode is %q, not wal; another process may hold it in exclusive mode", d.Path, mode)
	}
	return nil
}

// Replaced reports whether the file at d.Path is no longer the one that
// was opened: it was deleted (ErrDatabaseMissing) or another file was moved
// into its place.
func (d *File) Replaced() (bool, error) {
	dev, ino, err := fileIdentity(d.Path)
	if err != nil {
		return true, err
	}
	return dev != d.dev || ino != d.ino, nil
}

// Close closes the connection.
func (d *File) Close() error {
	var errs []error
	if d.Conn != nil {
		errs = append(errs, d.Conn.Close())
	}
	if d.db != nil {
		errs = append(errs, d.db.Close())
	}
	return errors.Join(errs...)
}

func fileIdentity(path string) (dev, ino uint64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, 0, fmt.Errorf("database %s: %w", path, ErrDatabaseMissing)
		}
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, nil
	}
	return uint64(st.Dev), st.Ino, nil
}

// Kind names why the database refused a batch. It is what the log line
// and the stats file show; every kind is handled the same way (roll back,
// back off, retry the same batch).
type Kind string

const (
	Busy     Kind = "busy"      // another connection holds the write lock
	ReadOnly Kind = "read_only" // SQLite opened the file read-only
	DiskFull Kind = "disk_full"
	Schema   Kind = "schema"  // a table or column missing or altered under us
	IO       Kind = "io"      // an I/O error from the file system
	Missing  Kind = "missing" // the database file is gone
	// OtherWriter: another writer committed a batch (the writer's
	// position check finds it; Classify does not).
	OtherWriter Kind = "another_writer"
	Other       Kind = "other"
	Permission  Kind = "permission_denied" // the file or its folder is not ours to write
	IsDir       Kind = "is_directory"      // dbPath names a folder
	NotADB      Kind = "not_a_database"    // the file is something else
	ReadOnlyFS  Kind = "read_only_fs"      // mounted read-only (or ProtectSystem=)
	NoFolder    Kind = "missing_folder"    // the database's folder is gone
	CantOpen    Kind = "cannot_open"       // SQLite could not open it, for a reason it does not say
	Corrupt     Kind = "corrupt"           // SQLite found the file damaged
)

// Classify maps an error from SQLite (or from opening the file) to a
// Kind, and says whether the connection must be reopened and the
// schema checked again before the retry.
func Classify(err error) (kind Kind, reopen bool) {
	var de *Error
	if errors.As(err, &de) {
		return de.Kind, true
	}
	if errors.Is(err, ErrDatabaseMissing) {
		return Missing, true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return Busy, false
		case sqlite3.SQLITE_READONLY:
			return ReadOnly, true
		case sqlite3.SQLITE_FULL:
			return DiskFull, false
		case sqlite3.SQLITE_IOERR:
			return IO, true
		case sqlite3.SQLITE_CANTOPEN:
			return CantOpen, true
		case sqlite3.SQLITE_SCHEMA:
			return Schema, true
		case sqlite3.SQLITE_NOTADB:
			return NotADB, true
		case sqlite3.SQLITE_CORRUPT:
			return Corrupt, true
		case sqlite3.SQLITE_ERROR:
			msg := se.Error()
			if strings.Contains(msg, "no such table") || strings.Contains(msg, "no such column") ||
				strings.Contains(msg, "has no column named") || strings.Contains(msg, "no such index") {
				return Schema, true
			}
		}
		return Other, true
	}
	if errors.Is(err, syscall.ENOSPC) {
		return DiskFull, false
	}
	if errors.Is(err, syscall.EROFS) {
		return ReadOnlyFS, true
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return Permission, true
	}
	return Other, true
}

// IsBusy reports whether err is SQLite saying another connection holds the
// write lock (busy or locked): worth waiting for and trying again. A second
// writer on the database (`meshingest redecode`) retries on it.
func IsBusy(err error) bool {
	kind, _ := Classify(err)
	return kind == Busy
}

// Hint is the operator advice printed with an episode's first line.
func (k Kind) Hint() string {
	switch k {
	case Busy:
		return "another process holds the database write lock (VACUUM, a backup, a migration); the writer retries and catches up when it is released"
	case ReadOnly:
		return "SQLite opened the database read-only: the file or its folder is not writable by this user; fix the permissions"
	case Permission:
		return "this user may not read and write the database file or create files in its folder (SQLite needs the -wal and -shm files beside it); fix the owner or the mode (the writer runs as the meshingest user under systemd)"
	case IsDir:
		return "dbPath names a folder; give the path of the database file inside it, e.g. .../meshcore.db"
	case NotADB:
		return "the file is not a SQLite database; check dbPath (it names another file?) or restore the database from a backup"
	case ReadOnlyFS:
		return "the file system holding the database is read-only: remount it read-write, or under systemd add its folder to ReadWritePaths= (ProtectSystem=strict makes the rest read-only)"
	case NoFolder:
		return "the database's folder is gone or a part of the path is not a folder (an unmounted disk?); the writer waits for it and never creates an empty database in its place"
	case CantOpen:
		return "SQLite cannot open the file: check that it is a database file this user can read and write, in a folder it can write"
	case Corrupt:
		return "SQLite found the database damaged; restore it from a backup (writer/MAINTENANCE.md)"
	case DiskFull:
		return "the disk holding the database is full; free space (the spool keeps every message meanwhile)"
	case Schema:
		return "a table or column the writer needs is missing or was altered; the writer re-checks the schema before each retry"
	case IO:
		return "the file system reported an I/O error; check the disk and the kernel log"
	case OtherWriter:
		return "another writer is writing this database (reached through another path, or its lock file was deleted); the writer reads the position again, but stop the other one"
	case Missing:
		return "the database file is gone; the writer waits for it to come back and never creates an empty one in its place"
	default:
		return "see the error; the writer retries the same batch"
	}
}
