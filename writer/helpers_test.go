package writer

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// spoolOf appends recs to a new spool folder (through a real appender,
// which seals its segments on Close) and returns a Source over it.
func spoolOf(t testing.TB, recs []Record) *SpoolSource {
	t.Helper()
	return NewSpoolSource(writertest.SpoolOf(t, recs))
}

// sealedSegments counts the sealed segment files left in a spool folder.
func sealedSegments(t testing.TB, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// drain runs a writer over src until it has consumed n messages and caught
// up, then stops it and waits for Run to return.
func drain(t testing.TB, src Source, opts Options, n int64) *Writer {
	t.Helper()
	w, err := New(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	writertest.RunUntil(t, fmt.Sprintf("the writer to consume %d messages", n), 60*time.Second, w.Run, func() bool {
		return w.Stats().Messages.Load() >= n && w.Stats().CaughtUp.Load()
	})
	writertest.CheckForeignKeys(t, opts.Config.DBPath)
	return w
}

func spoolOf2(t testing.TB, dir string) *SpoolSource {
	return NewSpoolSource(writertest.OpenSpool(t, dir))
}
