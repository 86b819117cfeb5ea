package writer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/schema"
)

// The database file's own tests are in writer/dbfile; these need a writer.

// openMigrated opens (creating) the database at path as the writer does and
// brings it to the current schema.
func openMigrated(t *testing.T, path string) (*database, schema.Report) {
	t.Helper()
	ctx := context.Background()
	d, err := openDatabase(ctx, path, true, dbfile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	rep, err := schema.Migrate(ctx, d.conn, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return d, rep
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
	if pid, _ := shared.ReadLockPID(dbfile.DatabaseLockPath(filepath.Join(dir, "a", "b", "meshcore.db"))); pid > 0 {
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

// writer.walAutoCheckpointPages reaches the connection (the power-cut
// test sets it low so that cuts land in checkpoints).
func TestNew_WALAutoCheckpointPages_FromConfig(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	cfg.Writer.WALAutoCheckpointPages = 123
	w, err := New(spoolOf(t, nil), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	d, err := openDatabase(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"), true, w.opts.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var pages int
	if err := d.conn.QueryRowContext(context.Background(), "PRAGMA wal_autocheckpoint").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != 123 {
		t.Fatalf("wal_autocheckpoint %d, want the configured 123", pages)
	}
}
