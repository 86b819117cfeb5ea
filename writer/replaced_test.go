package writer

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// runInBackground runs w until the test ends and fails it if Run returned
// an error.
func runInBackground(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	})
}

// removeWhileRunning is `rm -rf dir` beside a running writer, which may
// write its advisory position into the folder meanwhile: tried again as
// an operator would. The writer may find the folder replaced more than
// once meanwhile (its identity file gone, then the folder), so the tests
// want folder_replaced at least 1.
func removeWhileRunning(t *testing.T, dir string) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "rm -rf "+dir, func() bool { return os.RemoveAll(dir) == nil })
}

func caughtUpAt(w *Writer, n int64) func() bool {
	return func() bool { return w.Stats().Messages.Load() >= n && w.Stats().CaughtUp.Load() }
}

// storedSeq is the Seq of the position the database holds for spool id, 0
// when it holds none.
func storedSeq(t *testing.T, dbPath string, id spool.Identity) int64 {
	t.Helper()
	db := writertest.OpenRaw(t, dbPath)
	defer db.Close()
	return writertest.Count(t, db, `SELECT COALESCE(MAX(json_extract(value, '$.seq')), 0) FROM meshingest_state WHERE key = ?`, "spool_position:"+id.String())
}

// TestWriter_Run_SpoolFolderReplacedWhileRunning is harness finding 8: the
// spool folder is deleted under a running writer and a new spool made in
// its place (the receiver restarted). The writer drains the new spool
// from its first record, under its own identity, sets nothing aside as
// "copied in from another spool", and says once that the folder was
// replaced.
func TestWriter_Run_SpoolFolderReplacedWhileRunning(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	g := newTrafficGen(t, 7, 20, 1, 5, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	first, second := g.records(600), g.records(900)
	writertest.AppendToSpool(t, dir, first, spool.Options{})
	old, _ := spool.ReadIdentity(dir)

	src, err := OpenSpoolSource(dir, spool.ReaderOptions{PollInterval: 5 * time.Millisecond, PollMaxInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	w, err := New(src, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, w)
	testkit.WaitFor(t, 60*time.Second, "the first spool drained", caughtUpAt(w, int64(len(first))))

	removeWhileRunning(t, dir)
	writertest.AppendToSpool(t, dir, second, spool.Options{})
	fresh, _ := spool.ReadIdentity(dir)
	testkit.WaitFor(t, 60*time.Second, "the new spool drained by the running writer", caughtUpAt(w, int64(len(first)+len(second))))

	if got := w.Stats().Messages.Load(); got != int64(len(first)+len(second)) {
		t.Errorf("%d records consumed, want %d", got, len(first)+len(second))
	}
	rs := src.ReaderStats()
	if rs.SegmentsSetAside != 0 || rs.RecordsSetAside != 0 || rs.FolderReplaced < 1 {
		t.Errorf("reader stats %+v: want nothing set aside, folder_replaced ≥ 1", rs)
	}
	if q, _ := os.ReadDir(filepath.Join(dir, "quarantine")); len(q) != 0 {
		t.Errorf("quarantine/ holds %d files", len(q))
	}
	if got := storedSeq(t, cfg.DBPath, fresh.ID); got != int64(len(second)) {
		t.Errorf("position stored for the new spool %s: Seq %d, want %d", fresh.ID.Short(), got, len(second))
	}
	if got := storedSeq(t, cfg.DBPath, old.ID); got != int64(len(first)) {
		t.Errorf("position stored for the old spool: Seq %d, want %d", got, len(first))
	}
	f := w.Stats().snapshot(time.Now(), nil, -1, dbfile.Snapshot{})
	if f.Meshingest.Spool.Identity != fresh.ID.String() || f.Meshingest.Spool.Replaced == nil || f.Meshingest.Spool.Replaced.Previous != old.ID.String() {
		t.Errorf("stats spool %+v (replaced %+v), want spool %s replacing %s", f.Meshingest.Spool, f.Meshingest.Spool.Replaced, fresh.ID, old.ID)
	}
	if r := w.readerStats(); r == nil || r.FolderReplaced < 1 {
		t.Errorf("writer reader stats %+v, want folder_replaced ≥ 1", r)
	}
	// The advisory position in the new folder is the new spool's.
	testkit.WaitFor(t, 10*time.Second, "the advisory position of the new spool", func() bool {
		p, err := spool.ReadWriterPosition(dir)
		return err == nil && p.Spool == fresh.ID
	})
}

// TestWriter_Run_InstanceFolderReplacedWhileRunning: with receiver
// instances, one instance's folder replaced is reopened on its own; the
// other instance's spool goes on from its position.
func TestWriter_Run_InstanceFolderReplacedWhileRunning(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	spoolDir := filepath.Join(t.TempDir(), "spool")
	a, b := shared.InstanceSpoolDir(spoolDir, "a"), shared.InstanceSpoolDir(spoolDir, "b")
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ga, gb := newTrafficGen(t, 11, 10, 1, 3, start), newTrafficGen(t, 12, 10, 1, 3, start.Add(time.Second))
	writertest.AppendToSpool(t, a, ga.records(300), spool.Options{})
	writertest.AppendToSpool(t, b, gb.records(300), spool.Options{})

	set, err := OpenMergedSource(spoolDir, spool.ReaderOptions{PollInterval: 5 * time.Millisecond, PollMaxInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	w, err := NewMerged(set, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, w)
	testkit.WaitFor(t, 60*time.Second, "both spools drained", caughtUpAt(w, 600))
	oldB, _ := spool.ReadIdentity(b)

	removeWhileRunning(t, a)
	writertest.AppendToSpool(t, a, ga.records(400), spool.Options{})
	writertest.AppendToSpool(t, b, gb.records(200), spool.Options{})
	fresh, _ := spool.ReadIdentity(a)
	testkit.WaitFor(t, 60*time.Second, "the new instance spool and the rest of the other drained", caughtUpAt(w, 1200))

	if got := w.Stats().Messages.Load(); got != 1200 {
		t.Errorf("%d records consumed, want 1200", got)
	}
	if r := w.readerStats(); r == nil || r.SegmentsSetAside != 0 || r.FolderReplaced < 1 {
		t.Errorf("reader stats %+v: want nothing set aside, folder_replaced ≥ 1", r)
	}
	if got := storedSeq(t, cfg.DBPath, fresh.ID); got != 400 {
		t.Errorf("position stored for the new spool of instance a: Seq %d, want 400", got)
	}
	if got := storedSeq(t, cfg.DBPath, oldB.ID); got <= 300 {
		t.Errorf("position stored for instance b: Seq %d, want one past its first 300", got)
	}
}
