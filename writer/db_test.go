package writer

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshingest/meshingest/shared"
)

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
		want   troubleKind
		reopen bool
		run    func() error
	}{
		{troubleBusy, false, func() error {
			if _, err := d.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			defer d.conn.ExecContext(ctx, "ROLLBACK")
			_, err := oc.ExecContext(ctx, "BEGIN IMMEDIATE")
			return err
		}},
		{troubleReadOnly, true, func() error {
			_, err := ro.Exec(`INSERT INTO _migrations (name) VALUES ('x')`)
			return err
		}},
		{troubleDiskFull, false, func() error {
			_, err := full.Exec(`INSERT INTO _migrations (name) VALUES (hex(randomblob(3000)))`)
			return err
		}},
		{troubleSchema, true, func() error {
			_, err := d.conn.ExecContext(ctx, `INSERT INTO no_such_table VALUES (1)`)
			return err
		}},
		{troubleMissing, true, func() error {
			_, err := openDatabase(ctx, filepath.Join(t.TempDir(), "gone.db"), false, DBOptions{})
			return err
		}},
	}
	for _, c := range cases {
		err := c.run()
		if err == nil {
			t.Errorf("%s: no error provoked", c.want)
			continue
		}
		kind, reopen := classify(err)
		if kind != c.want || reopen != c.reopen {
			t.Errorf("classify(%v) = %s, %v; want %s, %v", err, kind, reopen, c.want, c.reopen)
		}
	}
}

// TestOpenDatabase_NewFile_FoldersSynced: a database created in folders
// that did not exist survives a power cut: the writer fsyncs every folder
// that received a new entry, the new folders' parents included, which
// SQLite does not (it syncs only the folder of a journal or WAL it creates).
// Checked with strace on a real writer process.
func TestOpenDatabase_NewFile_FoldersSynced(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is needed to see the writer's fsyncs")
	}
	dir := t.TempDir()
	p := newProcessSetup(t, dir, map[string]any{"dbPath": filepath.Join(dir, "a", "b", "meshcore.db")})
	trace := filepath.Join(dir, "strace.txt")
	log, _ := os.Create(p.LogFile)
	cmd := exec.Command(strace, "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", trace, meshingestBinary(t), "write", "--config", p.Config)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log.Close()
	p.waitReady(t, 1)
	// The writer under strace: its pid is in its lock file.
	if pid, _ := shared.ReadLockPID(DatabaseLockPath(filepath.Join(dir, "a", "b", "meshcore.db"))); pid > 0 {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("writer under strace: %v", err)
	}
	b, _ := os.ReadFile(trace)
	for _, folder := range []string{dir, filepath.Join(dir, "a"), filepath.Join(dir, "a", "b")} {
		if !strings.Contains(string(b), "<"+folder+">) = 0") {
			t.Errorf("no fsync of the folder %s; fsyncs:\n%s", folder, b)
		}
	}
}
