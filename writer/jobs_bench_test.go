package writer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// BenchmarkCatchUpJobs is BenchmarkCatchUp's writer run (the same backlog:
// 10,000 transmissions heard by 27 of 60 observers, the same real writer
// process, into an empty database and into the preloaded 1 M / 10 M one)
// with CoreScope's jobs off (writer.jobs = false) and on, alternately in
// the same run, and reports the median speed of each and the loss, and the
// writer process's CPU time and disk writes per observation (on a shared
// machine the CPU time varies less than the speed):
//
//	go test -run '^$' -bench CatchUpJobs -benchtime 1x -timeout 120m ./writer/
//
// MESHINGEST_BENCH_ROUNDS sets the rounds (each runs both; default 3).
func BenchmarkCatchUpJobs(b *testing.B) {
	b.Run("empty", func(b *testing.B) { benchCatchUpJobs(b, "") })
	b.Run("preloaded-1M-10M", func(b *testing.B) { benchCatchUpJobs(b, preloadedDB(b)) })
}

func benchCatchUpJobs(b *testing.B, base string) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		work := b.TempDir()
		pristine, _ := benchBacklog(b, work)

		rates := map[bool][]float64{}
		disk := map[bool][]float64{}
		cpu := map[bool][]float64{}
		var obs int64
		for round := 0; round < benchRounds(); round++ {
			// Alternate which goes first, so a drift in the machine's
			// load does not favour one.
			order := []bool{false, true}
			if round%2 == 1 {
				order = []bool{true, false}
			}
			for _, jobs := range order {
				dir := filepath.Join(work, fmt.Sprintf("round%d-jobs-%v", round, jobs))
				r := runCatchUpRound(b, dir, base, pristine, map[string]any{"writer": map[string]any{"jobs": jobs}})
				before, io, cpuSec := r.before, r.io, r.cpuSeconds
				db := writertest.OpenRaw(b, r.setup.DB)
				n := writertest.Count(b, db, `SELECT COUNT(*) FROM observations WHERE id > ?`, before["observations"])
				resolved := writertest.Count(b, db, `SELECT COUNT(*) FROM observations WHERE id > ? AND resolved_path IS NOT NULL`, before["observations"])
				edges := writertest.Count(b, db, `SELECT COUNT(*) FROM neighbor_edges`)
				db.Close()
				if obs == 0 {
					obs = n
				}
				if n != obs || (jobs && (resolved == 0 || edges == 0)) || (!jobs && (resolved != 0 || edges != 0)) {
					b.Fatalf("jobs %v: %d observations (want %d), %d resolved paths, %d edges", jobs, n, obs, resolved, edges)
				}
				rate := float64(n) / r.elapsed.Seconds()
				rates[jobs] = append(rates[jobs], rate)
				disk[jobs] = append(disk[jobs], float64(io.WriteBytes)/float64(n))
				cpu[jobs] = append(cpu[jobs], 1e6*cpuSec/float64(n))
				b.Logf("round %d, jobs %-5v: %.0f obs/s, %.1f CPU µs/obs, %.0f disk B/obs, %d resolved paths, %d edges",
					round, jobs, rate, 1e6*cpuSec/float64(n), float64(io.WriteBytes)/float64(n), resolved, edges)
				os.RemoveAll(dir)
			}
		}
		off, on := median(rates[false]), median(rates[true])
		b.ReportMetric(off, "obs/s-jobs-off")
		b.ReportMetric(on, "obs/s-jobs-on")
		b.ReportMetric(100*(1-on/off), "%-slower-with-jobs")
		b.ReportMetric(median(cpu[false]), "cpu-µs/obs-jobs-off")
		b.ReportMetric(median(cpu[true]), "cpu-µs/obs-jobs-on")
		b.ReportMetric(median(disk[false]), "disk-B/obs-jobs-off")
		b.ReportMetric(median(disk[true]), "disk-B/obs-jobs-on")
	}
}
