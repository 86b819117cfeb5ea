package writer

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

// DBOptions tune the SQLite connection. Zero values mean the defaults, which
// were chosen by the benchmarks in this package (see measured.md and the
// package documentation).
type DBOptions struct {
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

// DefaultPageSize is the page size of a database the writer creates.
const DefaultPageSize = 4096

func (o DBOptions) withDefaults() DBOptions {
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

// DBError is a database file the writer cannot use: what it was doing, the
// path, what is wrong (Kind, one of the trouble kinds below) and, in the
// message, what the operator can do about it.
type DBError struct {
	Op   string // "open database", "create the database folder"
	Path string
	Kind string
	Err  error
}

func (e *DBError) Error() string {
	return e.Op + " " + e.Path + ": " + e.Err.Error() + " (" + troubleHint(troubleKind(e.Kind)) + ")"
}

func (e *DBError) Unwrap() error { return e.Err }

// Hint is what the operator can do.
func (e *DBError) Hint() string { return troubleHint(troubleKind(e.Kind)) }

// Permanent reports a database that retrying cannot fix: a folder, a file
// that is not a database, one this user may not write, a read-only file
// system, a damaged file. At start the writer exits with the hint instead
// of retrying without ever being ready.
func (e *DBError) Permanent() bool { return permanent(troubleKind(e.Kind)) }

func permanent(k troubleKind) bool {
	switch k {
	case troublePermission, troubleIsDir, troubleNotADB, troubleReadOnlyFS, troubleCorrupt:
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
				return false, &DBError{Op: "open database", Path: path, Kind: string(troubleNoFolder), Err: fmt.Errorf("the folder %s is gone: %w", dir, ErrDatabaseMissing)}
			}
			if err := makeFolder(dir); err != nil {
				return false, fileError("create the database folder", dir, err)
			}
		}
		if !create {
			return false, &DBError{Op: "open database", Path: path, Kind: string(troubleMissing), Err: ErrDatabaseMissing}
		}
		if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
			return false, fileError("create database", path, fmt.Errorf("the folder %s is not writable: %w", dir, err))
		}
		return true, nil
	case err != nil:
		return false, fileError("open database", path, err)
	case fi.IsDir():
		return false, &DBError{Op: "open database", Path: path, Kind: string(troubleIsDir), Err: errors.New("this is a folder, not a database file")}
	case !fi.Mode().IsRegular():
		return false, &DBError{Op: "open database", Path: path, Kind: string(troubleNotADB), Err: fmt.Errorf("not a regular file (%s)", fi.Mode().Type())}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, fileError("open database", path, err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteHeader))
	n, _ := io.ReadFull(f, head)
	if n > 0 && (n < len(head) || !bytes.Equal(head, sqliteHeader)) {
		return false, &DBError{Op: "open database", Path: path, Kind: string(troubleNotADB), Err: fmt.Errorf("the file does not start with the SQLite header (%d bytes)", fi.Size())}
	}
	if err := syscall.Access(filepath.Dir(path), 2 /* W_OK */); err != nil {
		return false, fileError("open database", path, fmt.Errorf("its folder is not writable (SQLite creates the -wal and -shm files there): %w", err))
	}
	return false, nil
}

// fileError classifies a system call's failure on the database's path.
func fileError(op, path string, err error) error {
	kind := troubleIO
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		kind = troublePermission
	case errors.Is(err, syscall.EROFS):
		kind = troubleReadOnlyFS
	case errors.Is(err, syscall.ENOSPC):
		kind = troubleDiskFull
	case errors.Is(err, syscall.ENOTDIR):
		kind = troubleNoFolder
	}
	return &DBError{Op: op, Path: path, Kind: string(kind), Err: err}
}

// database is the writer's one SQLite connection and what it needs to know
// about the file under it.
type database struct {
	path string
	db   *sql.DB
	conn *sql.Conn
	// dev and ino identify the file that was opened, so that a database
	// replaced under the writer (a restore) is noticed and reopened
	// instead of written into the unlinked old inode.
	dev, ino uint64
	// created is set when the open created the file.
	created bool
}

// openDatabase opens (creating it when create is true) the SQLite file at
// path with the writer's connection settings: incremental auto-vacuum set
// before the first table, WAL, synchronous=FULL (under NORMAL a committed
// WAL transaction can vanish on power loss, and batching makes FULL cost
// nothing measurable), foreign keys not enforced (see below), statement
// journals in memory, and one connection.
func openDatabase(ctx context.Context, path string, create bool, opts DBOptions) (*database, error) {
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
	d := &database{path: path, db: db, conn: conn, created: isNew}
	if err := d.checkJournalMode(ctx); err != nil {
		d.close()
		return nil, err
	}
	if isNew {
		// SQLite creates the file but syncs its folder only for the
		// journal and the WAL it creates (os_unix.c, UNIXFILE_DIRSYNC),
		// which covers the database's entry only by the accident of
		// sharing the folder: sync it here.
		if err := syncFolder(filepath.Dir(path)); err != nil {
			d.close()
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

func (d *database) checkJournalMode(ctx context.Context) error {
	var mode string
	if err := d.conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("open database %s: read journal_mode: %w", d.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("open database %s: journal_mode is %q, not wal; another process may hold it in exclusive mode", d.path, mode)
	}
	return nil
}

// replaced reports whether the file at d.path is no longer the one that
// was opened: it was deleted (ErrDatabaseMissing) or another file was moved
// into its place.
func (d *database) replaced() (bool, error) {
	dev, ino, err := fileIdentity(d.path)
	if err != nil {
		return true, err
	}
	return dev != d.dev || ino != d.ino, nil
}

func (d *database) close() error {
	var errs []error
	if d.conn != nil {
		errs = append(errs, d.conn.Close())
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

// troubleKind names why the database refused a batch. It is what the log
// line and the stats file show; every kind is handled the same way (roll
// back, back off, retry the same batch).
type troubleKind string

const (
	troubleBusy     troubleKind = "busy"      // another connection holds the write lock
	troubleReadOnly troubleKind = "read_only" // SQLite opened the file read-only
	troubleDiskFull troubleKind = "disk_full"
	troubleSchema   troubleKind = "schema"  // a table or column missing or altered under us
	troubleIO       troubleKind = "io"      // an I/O error from the file system
	troubleMissing  troubleKind = "missing" // the database file is gone
	// troubleOtherWriter: another writer committed a batch (checkPosition).
	troubleOtherWriter troubleKind = "another_writer"
	troubleOther       troubleKind = "other"
	troublePermission  troubleKind = "permission_denied" // the file or its folder is not ours to write
	troubleIsDir       troubleKind = "is_directory"      // dbPath names a folder
	troubleNotADB      troubleKind = "not_a_database"    // the file is something else
	troubleReadOnlyFS  troubleKind = "read_only_fs"      // mounted read-only (or ProtectSystem=)
	troubleNoFolder    troubleKind = "missing_folder"    // the database's folder is gone
	troubleCantOpen    troubleKind = "cannot_open"       // SQLite could not open it, for a reason it does not say
	troubleCorrupt     troubleKind = "corrupt"           // SQLite found the file damaged
)

// classify maps an error from SQLite (or from opening the file) to a
// troubleKind, and says whether the connection must be reopened and the
// schema checked again before the retry.
func classify(err error) (kind troubleKind, reopen bool) {
	var de *DBError
	if errors.As(err, &de) {
		return troubleKind(de.Kind), true
	}
	if errors.Is(err, ErrDatabaseMissing) {
		return troubleMissing, true
	}
	if errors.Is(err, errPositionMoved) {
		return troubleOtherWriter, true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return troubleBusy, false
		case sqlite3.SQLITE_READONLY:
			return troubleReadOnly, true
		case sqlite3.SQLITE_FULL:
			return troubleDiskFull, false
		case sqlite3.SQLITE_IOERR:
			return troubleIO, true
		case sqlite3.SQLITE_CANTOPEN:
			return troubleCantOpen, true
		case sqlite3.SQLITE_SCHEMA:
			return troubleSchema, true
		case sqlite3.SQLITE_NOTADB:
			return troubleNotADB, true
		case sqlite3.SQLITE_CORRUPT:
			return troubleCorrupt, true
		case sqlite3.SQLITE_ERROR:
			msg := se.Error()
			if strings.Contains(msg, "no such table") || strings.Contains(msg, "no such column") ||
				strings.Contains(msg, "has no column named") || strings.Contains(msg, "no such index") {
				return troubleSchema, true
			}
		}
		return troubleOther, true
	}
	if errors.Is(err, syscall.ENOSPC) {
		return troubleDiskFull, false
	}
	if errors.Is(err, syscall.EROFS) {
		return troubleReadOnlyFS, true
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return troublePermission, true
	}
	return troubleOther, true
}

// IsBusy reports whether err is SQLite saying another connection holds the
// write lock (busy or locked): worth waiting for and trying again. A second
// writer on the database (`meshingest redecode`) retries on it.
func IsBusy(err error) bool {
	kind, _ := classify(err)
	return kind == troubleBusy
}

// troubleHint is the operator advice printed with an episode's first line.
func troubleHint(kind troubleKind) string {
	switch kind {
	case troubleBusy:
		return "another process holds the database write lock (VACUUM, a backup, a migration); the writer retries and catches up when it is released"
	case troubleReadOnly:
		return "SQLite opened the database read-only: the file or its folder is not writable by this user; fix the permissions"
	case troublePermission:
		return "this user may not read and write the database file or create files in its folder (SQLite needs the -wal and -shm files beside it); fix the owner or the mode (the writer runs as the meshingest user under systemd)"
	case troubleIsDir:
		return "dbPath names a folder; give the path of the database file inside it, e.g. .../meshcore.db"
	case troubleNotADB:
		return "the file is not a SQLite database; check dbPath (it names another file?) or restore the database from a backup"
	case troubleReadOnlyFS:
		return "the file system holding the database is read-only: remount it read-write, or under systemd add its folder to ReadWritePaths= (ProtectSystem=strict makes the rest read-only)"
	case troubleNoFolder:
		return "the database's folder is gone or a part of the path is not a folder (an unmounted disk?); the writer waits for it and never creates an empty database in its place"
	case troubleCantOpen:
		return "SQLite cannot open the file: check that it is a database file this user can read and write, in a folder it can write"
	case troubleCorrupt:
		return "SQLite found the database damaged; restore it from a backup (writer/MAINTENANCE.md)"
	case troubleDiskFull:
		return "the disk holding the database is full; free space (the spool keeps every message meanwhile)"
	case troubleSchema:
		return "a table or column the writer needs is missing or was altered; the writer re-checks the schema before each retry"
	case troubleIO:
		return "the file system reported an I/O error; check the disk and the kernel log"
	case troubleOtherWriter:
		return "another writer is writing this database (reached through another path, or its lock file was deleted); the writer reads the position again, but stop the other one"
	case troubleMissing:
		return "the database file is gone; the writer waits for it to come back and never creates an empty one in its place"
	default:
		return "see the error; the writer retries the same batch"
	}
}
