package dbfile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/writer/schema"
)

// openMigrated opens (creating) the database at path as the writer does and
// brings it to the current schema.
func openMigrated(t *testing.T, path string) (*File, schema.Report) {
	t.Helper()
	ctx := context.Background()
	d, err := Open(ctx, path, true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	rep, err := schema.Migrate(ctx, d.Conn, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return d, rep
}

// TestClassify_RealSQLiteErrors provokes each kind of refusal on a real
// database and checks how the writer classifies it.
func TestClassify_RealSQLiteErrors(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meshcore.db")
	d, _ := openMigrated(t, path)

	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oc, _ := other.Conn(ctx)
	defer oc.Close()

	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()

	full, err := sql.Open("sqlite", "file:"+path+"?_pragma=max_page_count(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	full.SetMaxOpenConns(1)

	cases := []struct {
		want   Kind
		reopen bool
		run    func() error
	}{
		{Busy, false, func() error {
			if _, err := d.Conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			defer d.Conn.ExecContext(ctx, "ROLLBACK")
			_, err := oc.ExecContext(ctx, "BEGIN IMMEDIATE")
			return err
		}},
		{ReadOnly, true, func() error {
			_, err := ro.Exec(`INSERT INTO _migrations (name) VALUES ('x')`)
			return err
		}},
		{DiskFull, false, func() error {
			_, err := full.Exec(`INSERT INTO _migrations (name) VALUES (hex(randomblob(3000)))`)
			return err
		}},
		{Schema, true, func() error {
			_, err := d.Conn.ExecContext(ctx, `INSERT INTO no_such_table VALUES (1)`)
			return err
		}},
		{Missing, true, func() error {
			_, err := Open(ctx, filepath.Join(t.TempDir(), "gone.db"), false, Options{})
			return err
		}},
	}
	for _, c := range cases {
		err := c.run()
		if err == nil {
			t.Errorf("%s: no error provoked", c.want)
			continue
		}
		kind, reopen := Classify(err)
		if kind != c.want || reopen != c.reopen {
			t.Errorf("Classify(%v) = %s, %v; want %s, %v", err, kind, reopen, c.want, c.reopen)
		}
	}
}

// Each thing that is wrong with dbPath gets its own kind and hint, from
// real files; SQLite said "unable to open database file" (classified as an
// I/O error, "check the disk") for most of them.
func TestOpenDatabase_WrongFiles_KindAndHint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "notes.txt")
	os.WriteFile(garbage, []byte("this is not a database, it is a shopping list\n"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o600)
	fileAsFolder := filepath.Join(dir, "plain")
	os.WriteFile(fileAsFolder, nil, 0o600)
	cases := []struct {
		name      string
		path      string
		create    bool
		kind      Kind
		permanent bool
		hint      string
	}{
		{"a folder", dir, true, IsDir, true, "dbPath names a folder"},
		{"not a database", garbage, true, NotADB, true, "not a SQLite database"},
		{"a FIFO", fifo, true, NotADB, true, "not a SQLite database"},
		{"a file where a folder should be", filepath.Join(fileAsFolder, "meshcore.db"), true, NoFolder, false, "not a folder"},
		{"folder gone while running", filepath.Join(dir, "unmounted", "meshcore.db"), false, NoFolder, false, "folder is gone"},
		{"file gone while running", filepath.Join(dir, "gone.db"), false, Missing, false, "never creates an empty one"},
	}
	for _, c := range cases {
		_, err := Open(ctx, c.path, c.create, Options{})
		if err == nil {
			t.Errorf("%s: opened", c.name)
			continue
		}
		kind, _ := Classify(err)
		var de *Error
		isDB := errors.As(err, &de)
		if kind != c.kind || (isDB && de.Permanent()) != c.permanent || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("%s: kind %s permanent %v, error %q; want %s, %v, a hint containing %q", c.name, kind, isDB && de.Permanent(), err, c.kind, c.permanent, c.hint)
		}
	}
}

// A database on a read-only file system (or one systemd's ProtectSystem=
// made read-only) is read_only_fs, permanent, with the ReadWritePaths=
// hint. Needs root to mount a read-only tmpfs.
func TestOpenDatabase_ReadOnlyFileSystem_Permanent(t *testing.T) {
	ro := t.TempDir()
	if err := syscall.Mount("none", ro, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs here (%v)", err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, 0) })
	for _, path := range []string{filepath.Join(ro, "meshcore.db"), filepath.Join(ro, "data", "meshcore.db")} {
		_, err := Open(context.Background(), path, true, Options{})
		var de *Error
		if !errors.As(err, &de) || de.Kind != ReadOnlyFS || !de.Permanent() || !strings.Contains(err.Error(), "ReadWritePaths=") {
			t.Errorf("%s: %v; want a permanent read_only_fs error with the ReadWritePaths= hint", path, err)
		}
	}
}

// A database that does not exist is created with its folder, and says so.
func TestOpenDatabase_Missing_CreatedWithFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "data", "meshcore.db")
	d, err := Open(context.Background(), path, true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.Created {
		t.Error("a new database not reported as created")
	}
	d2, err := Open(context.Background(), path, true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if d2.Created {
		t.Error("an existing database reported as created")
	}
}

// A commit is durable at COMMIT only in WAL mode with synchronous=FULL
// (NORMAL syncs the WAL at checkpoints only; tests/powercut shows the loss).
func TestOpenDatabase_Connection_WALAndSynchronousFull(t *testing.T) {
	d, err := Open(context.Background(), filepath.Join(t.TempDir(), "meshcore.db"), true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var mode string
	var sync int
	d.Conn.QueryRowContext(context.Background(), `PRAGMA journal_mode`).Scan(&mode)
	d.Conn.QueryRowContext(context.Background(), `PRAGMA synchronous`).Scan(&sync)
	if mode != "wal" || sync != 2 {
		t.Errorf("journal_mode = %s, synchronous = %d; want wal and 2 (FULL)", mode, sync)
	}
}

// TestOpenDatabase_NewFile_PageSizeAutoVacuumWAL: a database the writer
// creates has the page size asked for, incremental auto-vacuum and WAL.
// The driver sorts a DSN's pragmas by name, which once set WAL and
// auto-vacuum before the page size and left every file at 4096; an
// existing file keeps its page size.
func TestOpenDatabase_NewFile_PageSizeAutoVacuumWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshcore.db")
	for _, ps := range []int{2048, 8192} { // the second open finds the file
		d, err := Open(context.Background(), path, true, Options{PageSize: ps})
		if err != nil {
			t.Fatal(err)
		}
		var pageSize, autoVacuum int
		var mode string
		for q, dst := range map[string]any{"PRAGMA page_size": &pageSize, "PRAGMA auto_vacuum": &autoVacuum, "PRAGMA journal_mode": &mode} {
			if err := d.Conn.QueryRowContext(context.Background(), q).Scan(dst); err != nil {
				t.Fatal(q, err)
			}
		}
		d.Close()
		if pageSize != 2048 || autoVacuum != 2 || mode != "wal" {
			t.Fatalf("opened with PageSize %d: page_size %d, auto_vacuum %d, journal_mode %s; want 2048, 2 (incremental), wal", ps, pageSize, autoVacuum, mode)
		}
	}
}
