package writer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// TestWriter_SecondProcess_RefusedWhileFirstRuns: two `meshingest write`
// on one database (whatever their spools), or on one spool (whatever their
// databases), never run together: the second exits with status 3 and names
// the lock file and the first one's pid. Once the first is SIGKILLed, a new
// writer starts at once (the kernel dropped the flock).
func TestWriter_SecondProcess_RefusedWhileFirstRuns(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "first"), 0o700)
	first := newProcessSetup(t, filepath.Join(dir, "first"), nil)
	recs := writertest.CorpusRecords(t)
	writertest.AppendToSpool(t, first.Spool, recs, spool.Options{})
	cmd := first.start(t)
	first.waitDrained(t, 2*time.Minute)
	pid := cmd.Process.Pid
	packets := func() int64 {
		return writertest.Count(t, writertest.OpenRaw(t, first.DB), `SELECT SUM(packet_count) FROM observers`)
	}
	before := packets()

	for _, c := range []struct {
		name      string
		db, spool string
		lockFile  string
	}{
		{"same database, own spool", first.DB, filepath.Join(dir, "other-spool"), dbfile.DatabaseLockPath(first.DB)},
		{"same database and spool", first.DB, first.Spool, ""},
		{"own database, same spool", filepath.Join(dir, "other.db"), first.Spool, filepath.Join(first.Spool, "writer.lock")},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			os.MkdirAll(d, 0o700)
			second := newProcessSetup(t, d, map[string]any{"dbPath": c.db, "spoolDir": c.spool})
			status := waitExit(t, second.start(t), 2*time.Minute, second.LogFile)
			log, _ := os.ReadFile(second.LogFile)
			if status != 3 {
				t.Fatalf("second writer exited with status %d, want 3; log:\n%s", status, log)
			}
			if c.lockFile != "" && !strings.Contains(string(log), c.lockFile) {
				t.Errorf("the refusal does not name the lock file %s:\n%s", c.lockFile, log)
			}
			if !strings.Contains(string(log), fmt.Sprintf("pid %d", pid)) {
				t.Errorf("the refusal does not name the holder's pid %d:\n%s", pid, log)
			}
		})
	}
	if n := packets(); n != before {
		t.Errorf("sum of packet_count %d after the refused starts, want %d", n, before)
	}

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	again := first.start(t)
	first.waitReady(t, first.readyBefore+1)
	stopProcess(t, again)
}

// TestWriter_Run_SecondWriterInProcess: the lock holds between two writers
// of one process too (flock is per open file), and is released when Run
// returns.
func TestWriter_Run_SecondWriterInProcess(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	w1, err := New(spoolOf(t, recs), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w1.Run(ctx) }()
	testkit.WaitFor(t, time.Minute, "the first writer to be ready", w1.ready.Load)

	w2, err := New(spoolOf(t, recs), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	err = w2.Run(t.Context())
	var le *dbfile.LockError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.PID != os.Getpid() || le.Path != dbfile.DatabaseLockPath(cfg.DBPath) {
		t.Fatalf("second Run: %v, want a dbfile.LockError naming %s and pid %d", err, dbfile.DatabaseLockPath(cfg.DBPath), os.Getpid())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Released: a third writer runs.
	drain(t, spoolOf(t, nil), Options{Config: cfg}, 0)
}

// TestWriter_Begin_PositionMovedByAnotherWriter: a batch that finds
// another position stored than the one the writer started from (another
// writer committed, reaching the database through a path the lock does
// not cover) applies nothing; the writer reads the position again and
// goes on from there, so nothing counts twice.
func TestWriter_Begin_PositionMovedByAnotherWriter(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	src := spoolOf(t, recs)
	drain(t, src, Options{Config: cfg}, int64(len(recs)))
	db := writertest.OpenRaw(t, cfg.DBPath)
	before := writertest.Count(t, db, `SELECT SUM(packet_count) FROM observers`)

	w, err := New(src, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := w.openDB(ctx, false); err != nil {
		t.Fatal(err)
	}
	defer w.closeDB()
	w.slots[0].pos.Position = Position{} // what a second writer that started before the first committed believes
	_, err = w.begin(ctx)
	if !errors.Is(err, errPositionMoved) {
		t.Fatalf("begin: %v, want errPositionMoved", err)
	}
	if kind, reopen := classify(err); kind != dbfile.OtherWriter || !reopen {
		t.Errorf("classified %s (reopen %v), want %s and a reopen", kind, reopen, dbfile.OtherWriter)
	}
	if n := writertest.Count(t, db, `SELECT SUM(packet_count) FROM observers`); n != before {
		t.Errorf("packet_count sum %d, want %d", n, before)
	}
}
