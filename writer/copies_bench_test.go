package writer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// BenchmarkCopies_CatchUp measures the writer's CPU per publication
// catching up on two receivers' full copies of a stream against one
// receiver's (issue 16: at most 1.3×). Each round drains, in this
// process, a fresh copy of the same backlog into a new database: one
// receiver's spool, then two instances' spools (the second copy of each
// record received 2 ms later), alternating, so that the load of a shared
// machine falls on both alike; the medians are reported. The writer runs
// without CoreScope's jobs, whose cost is per applied publication: the
// ratio is the harder one. CPU is this
// process's (getrusage), so -cpuprofile shows where the second copy's
// cost goes:
//
//	go test ./writer -run '^$' -bench Copies_CatchUp -benchtime 1x [-cpuprofile cpu.out]
//
// MESHINGEST_BENCH_ROUNDS (default 3) sets the rounds of each,
// MESHINGEST_BENCH_COPIES the publications (default 30,000).
func BenchmarkCopies_CatchUp(b *testing.B) {
	n := 30000
	if v, err := strconv.Atoi(os.Getenv("MESHINGEST_BENCH_COPIES")); err == nil && v > 0 {
		n = v
	}
	work := b.TempDir()
	// The memory limit `meshingest write` sets for the spools drained
	// (MemoryLimit): near it the collector runs more often, and what the
	// second copy adds to the live heap costs CPU there.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(MemoryLimit(1)))
	for b.Loop() {
		var perPub [2][]float64
		for round := 0; round < benchRounds(); round++ {
			for copies := 1; copies <= 2; copies++ {
				spoolDir := filepath.Join(work, fmt.Sprintf("round%d-%d", round, copies), "spool")
				spoolBacklog(b, spoolDir, n, copies)
				debug.SetMemoryLimit(MemoryLimit(copies))
				cpu := catchUpCPU(b, spoolDir, int64(n), int64(n*copies))
				perPub[copies-1] = append(perPub[copies-1], cpu.Seconds()/float64(n))
				b.Logf("round %d, %d copies: %.1f µs CPU per publication", round, copies, 1e6*cpu.Seconds()/float64(n))
				os.RemoveAll(filepath.Dir(spoolDir))
			}
		}
		b.ReportMetric(1e6*median(perPub[0]), "µs-CPU/pub-one")
		b.ReportMetric(1e6*median(perPub[1]), "µs-CPU/pub-two")
		ratios := make([]float64, len(perPub[0]))
		for i := range ratios {
			ratios[i] = perPub[1][i] / perPub[0][i]
		}
		b.ReportMetric(median(ratios), "two/one")
	}
}

// spoolBacklog spools n publications of the same traffic every time into
// spoolDir: as one receiver's spool, or as two instances' (b's copy of
// each record received 2 ms after a's). The records are not kept: the
// writer's heap must be its own.
func spoolBacklog(b *testing.B, spoolDir string, n, copies int) {
	recs := newTrafficGen(b, benchSeed, benchObservers, 5, 20, benchStart).records(n)
	// At QoS 1, as the harness's receivers subscribe: each receiver's
	// session numbers its deliveries itself.
	for i := range recs {
		recs[i].QoS, recs[i].MessageID = 1, uint16(i%65535+1)
	}
	if copies == 1 {
		writertest.AppendToSpool(b, spoolDir, recs, spool.Options{})
		return
	}
	writertest.AppendToSpool(b, shared.InstanceSpoolDir(spoolDir, "a"), recs, spool.Options{})
	later := receiverCopy(recs, 2*time.Millisecond)
	for i := range later {
		later[i].MessageID = uint16((i+7)%65535 + 1)
	}
	writertest.AppendToSpool(b, shared.InstanceSpoolDir(spoolDir, "b"), later, spool.Options{})
}

// catchUpCPU drains the spools of spoolDir with a writer into a new
// database beside it until it has consumed records, and returns the CPU
// time the process spent meanwhile.
func catchUpCPU(b *testing.B, spoolDir string, publications, records int64) time.Duration {
	b.Helper()
	dir := filepath.Dir(spoolDir)
	cfg := &shared.Config{DBPath: filepath.Join(dir, "meshcore.db"), HashChannels: []string{"#test", "#wardriving", "#bot", "#chat"},
		Writer: shared.WriterConfig{StatsFile: filepath.Join(dir, "stats.json")}}
	startBenchDB(b, "", cfg.DBPath)
	set, err := OpenMergedSource(spoolDir, spool.ReaderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer set.Close()
	w, err := NewMerged(set, Options{Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	before := rusageCPU()
	// The label marks the writer's samples in a -cpuprofile (its
	// goroutines inherit it): pprof -tagfocus spools=2.
	pprof.Do(context.Background(), pprof.Labels("spools", fmt.Sprint(records/int64(publications))), func(context.Context) {
		writertest.RunUntil(b, fmt.Sprintf("the writer to consume %d records", records), 10*time.Minute, w.Run, func() bool {
			return w.Stats().Messages.Load() >= records && w.Stats().CaughtUp.Load()
		})
	})
	cpu := rusageCPU() - before
	runtime.ReadMemStats(&m1)
	runtime.GC()
	var live runtime.MemStats
	runtime.ReadMemStats(&live)
	b.Logf("%d spool(s): %.0f bytes allocated per publication, %d GC cycles, live heap after %.1f MiB", records/publications,
		float64(m1.TotalAlloc-m0.TotalAlloc)/float64(publications), m1.NumGC-m0.NumGC, float64(live.HeapAlloc)/(1<<20))
	runtime.KeepAlive(w)
	return cpu
}

func rusageCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
