package writer

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/meshingest/meshingest/spool"
)

func TestTmpAlloc(t *testing.T) {
	dir := t.TempDir()
	g := newTrafficGen(t, benchSeed, benchObservers, benchFanout, benchFanout, benchStart)
	n := appendGenerated(t, filepath.Join(dir, "spool"), g, 4000)
	r, _ := spool.OpenReader(filepath.Join(dir, "spool"), spool.ReaderOptions{})
	cfg := corpusConfig(t)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	runtime.MemProfileRate = 512
	drain(t, NewSpoolSource(r), Options{Config: cfg}, int64(n))
	runtime.ReadMemStats(&m1)
	t.Logf("%d msgs: %.0f bytes/msg allocated, %.1f allocs/msg", n, float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), float64(m1.Mallocs-m0.Mallocs)/float64(n))
}
