package writer

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/schema"
	"github.com/rs/zerolog"
)

// Benchmarks of the writer (issue 5). Run them with
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 60m ./writer/
//
// Each reports its figures with b.ReportMetric; -benchtime 1x because each
// iteration is a whole catch-up. The preloaded database (1 M transmissions,
// 10 M observations, about 4 GB) is built on first use in
// $MESHINGEST_BENCH_CACHE (default ~/.cache/meshingest-bench), which takes
// several minutes, and reused afterwards.

const (
	benchTransmissions = 10000 // new transmissions per catch-up run
	benchFanout        = 27    // observations per transmission
	benchSeed          = 7
	benchObservers     = 60
)

// benchStart is when the benchmark traffic was "received"; the preloaded
// rows are from the 30 days before.
var benchStart = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// BenchmarkCatchUp drains a backlog of benchTransmissions × 27 observations
// with a real writer process, into an empty database and into one
// preloaded with 1 M transmissions and 10 M observations, and beside it
// inserts the same rows with the simplest possible loop (one prepared
// INSERT per table, one transaction): the ceiling.
func BenchmarkCatchUp(b *testing.B) {
	b.Run("empty", func(b *testing.B) { benchCatchUp(b, "") })
	b.Run("preloaded-1M-10M", func(b *testing.B) { benchCatchUp(b, preloadedDB(b)) })
}

// benchRounds is how many times the writer and the ceiling each run,
// alternately, per catch-up benchmark; medians are reported (the machine
// is shared, single runs are noisy). MESHINGEST_BENCH_ROUNDS overrides.
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("MESHINGEST_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

func benchCatchUp(b *testing.B, base string) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		work := b.TempDir()
		pristine, messages := benchBacklog(b, work)

		var writerRates, ceilingRates, ratios, diskObs, diskMsg []float64
		var peak int64
		var rows map[string]*tableRows
		var obs int64
		for round := 0; round < benchRounds(); round++ {
			dir := filepath.Join(work, fmt.Sprint("round", round))
			var extra map[string]any
			if v := os.Getenv("MESHINGEST_BENCH_WRITER"); v != "" { // e.g. {"batchMaxRecords":16000}
				var w map[string]any
				if err := json.Unmarshal([]byte(v), &w); err != nil {
					b.Fatal(err)
				}
				extra = map[string]any{"writer": w}
			}
			r := runCatchUpRound(b, dir, base, pristine, extra)
			p, before, io, rss, cpu := r.setup, r.before, r.io, r.rss, r.cpuSeconds
			if rows == nil {
				rows = newRows(b, p.DB, before)
				obs = int64(len(rows["observations"].values))
				if obs < int64(benchTransmissions*benchFanout*9/10) {
					b.Fatalf("only %d observations written", obs)
				}
			}
			if lb, err := os.ReadFile(p.LogFile); err == nil && strings.Contains(string(lb), `"commit"`) {
				var commit, hold, starved float64
				var batches int
				for _, l := range strings.Split(string(lb), "\n") {
					var e struct {
						Commit, Hold float64
						Starved      float64 `json:"waited_for_records"`
					}
					if json.Unmarshal([]byte(l), &e) == nil && e.Hold > 0 {
						commit += e.Commit
						hold += e.Hold
						starved += e.Starved
						batches++
					}
				}
				b.Logf("%d batches: %.0f ms in transactions, %.0f ms in COMMIT, %.0f ms waiting for the reader", batches, hold, commit, starved)
			}
			os.RemoveAll(dir)
			writer := r.elapsed

			ceilingPath := filepath.Join(work, "ceiling.db")
			startBenchDB(b, base, ceilingPath)
			ceiling := insertCeiling(b, ceilingPath, rows)
			for _, f := range []string{ceilingPath, ceilingPath + "-wal", ceilingPath + "-shm"} {
				os.Remove(f)
			}

			writerRates = append(writerRates, float64(obs)/writer.Seconds())
			ceilingRates = append(ceilingRates, float64(obs)/ceiling.Seconds())
			ratios = append(ratios, 100*ceiling.Seconds()/writer.Seconds())
			diskObs = append(diskObs, float64(io.WriteBytes)/float64(obs))
			diskMsg = append(diskMsg, float64(io.WriteBytes)/float64(messages))
			peak = max(peak, rss)
			b.Logf("round %d: writer %.0f obs/s (%.0f%% CPU), ceiling %.0f obs/s (%.0f%%), %.0f disk B/msg, peak RSS %.1f MiB",
				round, writerRates[round], 100*cpu/writer.Seconds(), ceilingRates[round], ratios[round], diskMsg[round], float64(rss)/(1<<20))
		}
		b.ReportMetric(median(writerRates), "obs/s")
		b.ReportMetric(median(ceilingRates), "ceiling-obs/s")
		b.ReportMetric(median(ratios), "%-of-ceiling")
		b.ReportMetric(median(diskObs), "disk-B/obs")
		b.ReportMetric(median(diskMsg), "disk-B/msg")
		b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(messages), "messages")
	}
}

// catchUpRound is what one timed catch-up of a writer process left: its
// files, the tables' highest ids before it began, and the process's
// figures.
type catchUpRound struct {
	setup      *processSetup
	before     map[string]int64
	elapsed    time.Duration
	io         shared.ProcIO
	rss        int64 // peak, bytes
	cpuSeconds float64
}

// runCatchUpRound starts a writer process (config extra) on a copy of the
// pristine spool and the database base gives (startBenchDB), times it
// until the spool is drained, with the benchmark timer running only then,
// and stops it.
func runCatchUpRound(b *testing.B, dir, base, pristine string, extra map[string]any) catchUpRound {
	p := newProcessSetup(b, mkdir(b, dir), extra)
	startBenchDB(b, base, p.DB)
	copyDir(b, pristine, p.Spool)
	r := catchUpRound{setup: p, before: tableMaxIDs(b, p.DB)}
	// The executable is built on first use: not inside the timed part
	// (it made every first round seconds slower).
	meshingestBinary(b)

	b.StartTimer()
	start := time.Now()
	cmd := p.start(b)
	end := p.waitDrained(b, 30*time.Minute)
	b.StopTimer()
	r.elapsed = end.Sub(start)
	var ioErr, rssErr error
	r.io, ioErr = procIO(cmd.Process.Pid)
	r.rss, rssErr = peakRSS(cmd.Process.Pid)
	r.cpuSeconds = cpuSeconds(cmd.Process.Pid)
	stopProcess(b, cmd)
	if ioErr != nil || rssErr != nil {
		b.Fatalf("read writer process figures: %v %v", ioErr, rssErr)
	}
	return r
}

// benchBacklog generates the catch-up benchmarks' backlog once into a
// pristine spool under work, copied for each round, and returns its folder
// and how many messages it holds.
func benchBacklog(b *testing.B, work string) (string, int) {
	pristine := filepath.Join(work, "spool-pristine")
	g := newTrafficGen(b, benchSeed, benchObservers, benchFanout, benchFanout, benchStart)
	g.counter = 1 << 24 // no collision with the preloaded transmissions
	return pristine, appendGenerated(b, pristine, g, benchTransmissions)
}

// startBenchDB puts the database a catch-up round starts from at path: a
// copy of base, out of the page cache, or with base "" a new, empty one.
func startBenchDB(b *testing.B, base, path string) {
	if base != "" {
		copyFile(b, base, path)
		dropPageCache(path)
		return
	}
	d, err := openDatabase(context.Background(), path, true, dbfile.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := schema.Migrate(context.Background(), d.conn, zerolog.Nop()); err != nil {
		b.Fatal(err)
	}
	d.Close()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func mkdir(b testing.TB, dir string) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// copyDir copies the files of a spool folder (no subfolders needed).
func copyDir(b testing.TB, src, dst string) {
	b.Helper()
	mkdir(b, dst)
	entries, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".seg") {
			copyFile(b, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		}
	}
	os.Chmod(dst, 0o700)
}

// appendGenerated spools the messages of n transmissions and returns how
// many messages that was.
func appendGenerated(b testing.TB, dir string, g *trafficGen, transmissions int) int {
	b.Helper()
	var recs []Record
	for tx := 0; tx < transmissions; {
		r := g.next()
		recs = append(recs, r)
		if len(g.pending) == 0 {
			tx++
		}
		if len(recs) == 20000 || tx == transmissions {
			writertest.AppendToSpool(b, dir, recs, spool.Options{})
			recs = recs[:0]
		}
	}
	return g.n
}

// dropPageCache asks the kernel to write back and forget the file, so the
// run starts as a catch-up after maintenance would, not from a warm cache.
// (Without privileges it is a no-op; the figures are then optimistic.)
func dropPageCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	f.Sync()
	fadviseDontNeed(f)
}

func copyFile(b testing.TB, src, dst string) {
	b.Helper()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}

var ceilingTables = []string{"observers", "nodes", "transmissions", "observations", "observer_metrics", "dropped_packets"}

func tableMaxIDs(b testing.TB, path string) map[string]int64 {
	b.Helper()
	db := writertest.OpenRaw(b, path)
	defer db.Close()
	out := map[string]int64{}
	for _, t := range ceilingTables {
		out[t] = writertest.Count(b, db, "SELECT COALESCE(MAX(rowid), 0) FROM "+t)
	}
	return out
}

type tableRows struct {
	cols   []string
	values [][]any
}

// newRows reads the rows the writer added (rowid above before's).
func newRows(b testing.TB, path string, before map[string]int64) map[string]*tableRows {
	b.Helper()
	db := writertest.OpenRaw(b, path)
	defer db.Close()
	out := map[string]*tableRows{}
	for _, t := range ceilingTables {
		cols := columnsOf(b, db, t)
		rows, err := db.Query(fmt.Sprintf("SELECT %s FROM %s WHERE rowid > ? ORDER BY rowid", strings.Join(cols, ", "), t), before[t])
		if err != nil {
			b.Fatal(err)
		}
		tr := &tableRows{cols: cols}
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				b.Fatal(err)
			}
			tr.values = append(tr.values, vals)
		}
		rows.Close()
		out[t] = tr
	}
	return out
}

// insertCeiling inserts rows with one prepared INSERT per table in one
// transaction, with the writer's connection settings, and returns the time.
func insertCeiling(b testing.TB, path string, rows map[string]*tableRows) time.Duration {
	b.Helper()
	ctx := context.Background()
	d, err := openDatabase(ctx, path, false, dbfile.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	dropPageCache(path)
	start := time.Now()
	if _, err := d.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		b.Fatal(err)
	}
	for _, t := range ceilingTables {
		tr := rows[t]
		if len(tr.values) == 0 {
			continue
		}
		// observers may already hold the row (preloaded): the writer
		// updated it; the ceiling only inserts what is new.
		stmt, err := d.conn.PrepareContext(ctx, fmt.Sprintf("INSERT OR IGNORE INTO %s (%s) VALUES (%s)",
			t, strings.Join(tr.cols, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(tr.cols)), ", ")))
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range tr.values {
			if _, err := stmt.ExecContext(ctx, v...); err != nil {
				b.Fatalf("ceiling insert into %s: %v", t, err)
			}
		}
		stmt.Close()
	}
	if _, err := d.conn.ExecContext(ctx, "COMMIT"); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// preloadedDB returns the cached database with 1 M transmissions and 10 M
// observations, building it on first use.
func preloadedDB(b testing.TB) string {
	b.Helper()
	dir := os.Getenv("MESHINGEST_BENCH_CACHE")
	if dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			b.Fatal(err)
		}
		dir = filepath.Join(c, "meshingest-bench")
	}
	path := filepath.Join(dir, "preloaded-1M-10M-v1.db")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Logf("building %s (once; several minutes)", path)
	started := time.Now()
	tmp := path + ".building"
	for _, f := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		os.Remove(f)
	}
	buildPreloaded(b, tmp, 1_000_000, 10)
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %s in %v", path, time.Since(started).Round(time.Second))
	return path
}

// buildPreloaded fills a new database with txCount transmissions of fanout
// observations each, from the benchmark's observers, received in the 30
// days before benchStart. Secondary indexes are built after the rows.
func buildPreloaded(b testing.TB, path string, txCount, fanout int) {
	b.Helper()
	ctx := context.Background()
	d, err := openDatabase(ctx, path, true, dbfile.Options{CacheKiB: 256 << 10})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if _, err := schema.Migrate(ctx, d.conn, zerolog.Nop()); err != nil {
		b.Fatal(err)
	}
	conn := d.conn
	exec := func(q string, args ...any) {
		if _, err := conn.ExecContext(ctx, q, args...); err != nil {
			b.Fatalf("%s: %v", firstLine(q), err)
		}
	}
	exec("PRAGMA synchronous = OFF")
	for _, ddl := range schema.IndexDDL {
		if strings.Contains(ddl, " ON observations(") || strings.Contains(ddl, " ON transmissions(") {
			name := strings.Fields(strings.SplitN(ddl, " ON ", 2)[0])
			exec("DROP INDEX IF EXISTS " + name[len(name)-1])
		}
	}
	g := newTrafficGen(b, benchSeed, benchObservers, fanout, fanout, benchStart)
	type tmpl struct {
		f       decoder.Frame
		decoded string
		channel sql.NullString
	}
	var templates []tmpl
	for _, f := range g.frames {
		p := decoder.DecodePacket(f, decoder.Options{})
		templates = append(templates, tmpl{f: f, decoded: string(p.DecodedJSON()), channel: p.ChannelHash()})
	}
	first := benchStart.Add(-30 * 24 * time.Hour)
	for i, id := range g.observers {
		exec(`INSERT INTO observers (id, name, iata, first_seen, last_seen, packet_count, last_packet_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, id, fmt.Sprintf("Observer %d", i), g.regions[i%len(g.regions)],
			FormatSeconds(first.Unix()), FormatSeconds(benchStart.Add(-time.Hour).Unix()), txCount*fanout/benchObservers, FormatSeconds(benchStart.Add(-time.Hour).Unix()))
	}
	insTx, err := conn.PrepareContext(ctx, `INSERT INTO transmissions (id, raw_hex, hash, first_seen, last_seen, route_type,
		payload_type, payload_version, decoded_json, channel_hash) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	insObs, err := conn.PrepareContext(ctx, `INSERT INTO observations (transmission_id, observer_idx, direction, snr, rssi,
		score, path_json, timestamp, raw_hex) VALUES (?, ?, 'rx', ?, ?, 1000, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	span := int64(30 * 24 * 3600)
	for i := 1; i <= txCount; i++ {
		if i%50000 == 1 {
			exec("BEGIN")
		}
		t := &templates[g.rng.IntN(len(templates))]
		body := append([]byte(nil), t.f.Bytes...)
		binary.BigEndian.PutUint32(body[len(body)-4:], uint32(i))
		f, err := decoder.DecodeFrameBytes(body)
		if err != nil {
			b.Fatal(err)
		}
		at := first.Unix() + int64(i)*span/int64(txCount)
		raw := strings.ToUpper(hex.EncodeToString(body))
		ch := t.channel
		if ch.Valid {
			ch.String = "enc_" + strings.ToUpper(hex.EncodeToString(f.Payload[:1]))
		}
		if _, err := insTx.ExecContext(ctx, i, raw, f.Hash.String(), FormatSeconds(at), at+int64(fanout),
			int(f.Route), int(f.Type), t.decoded, ch); err != nil {
			b.Fatal(err)
		}
		for j, oi := range g.rng.Perm(benchObservers)[:fanout] {
			obsRaw := g.withPath(&f)
			of, _ := decoder.DecodeFrameBytes(obsRaw)
			if _, err := insObs.ExecContext(ctx, i, oi+1, float64(g.rng.IntN(80)-40)/4, -60-g.rng.IntN(60),
				of.PathJSON(), at+int64(j), strings.ToUpper(hex.EncodeToString(obsRaw))); err != nil {
				b.Fatal(err)
			}
		}
		if i%50000 == 0 || i == txCount {
			exec("COMMIT")
		}
	}
	insTx.Close()
	insObs.Close()
	if _, err := schema.Migrate(ctx, conn, zerolog.Nop()); err != nil { // rebuilds the dropped indexes
		b.Fatal(err)
	}
	exec("PRAGMA wal_checkpoint(TRUNCATE)")
}

// BenchmarkSteady250 feeds a real writer process 250 messages a second
// through a spool appender (what the receiver does, with its default
// one-second group window and segment age) and counts, over a 30 s window
// after a warm-up, the fsync/fdatasync calls the writer makes (strace), the
// bytes it writes to disk, and its peak RSS.
func BenchmarkSteady250(b *testing.B) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		b.Skip("strace is needed to count the writer's fsyncs")
	}
	const rate, warmup, window = 250, 5 * time.Second, 30 * time.Second
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p := newProcessSetup(b, b.TempDir(), nil)
		app, err := spool.OpenAppender(p.Spool, spool.Options{})
		if err != nil {
			b.Fatal(err)
		}
		g := newTrafficGen(b, benchSeed, benchObservers, 1, 27, time.Now())
		stop := make(chan struct{})
		fed := make(chan int)
		go func() {
			n := 0
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					fed <- n
					return
				case <-tick.C:
					for j := 0; j < rate/10; j++ {
						r := g.next()
						r.ReceivedAt = time.Now()
						if err := app.Append(r, func(error) {}); err != nil {
							b.Error(err)
						}
						n++
					}
				}
			}
		}()
		cmd := p.start(b)
		p.waitReady(b, 1)
		time.Sleep(warmup)

		out := filepath.Join(p.Dir, "strace.txt")
		tracer := exec.Command(strace, "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range,msync", "-o", out, "-p", fmt.Sprint(cmd.Process.Pid))
		if err := tracer.Start(); err != nil {
			b.Fatal(err)
		}
		io0, _ := procIO(cmd.Process.Pid)
		time.Sleep(window)
		io1, _ := procIO(cmd.Process.Pid)
		tracer.Process.Signal(syscall.SIGINT)
		tracer.Wait()
		close(stop)
		msgs := <-fed
		app.Close()
		rss, _ := peakRSS(cmd.Process.Pid)
		stopProcess(b, cmd)

		syncs := straceCalls(b, out)
		b.ReportMetric(float64(syncs)/window.Seconds(), "fsyncs/s")
		b.ReportMetric(float64(io1.WriteBytes-io0.WriteBytes)/(rate*window.Seconds()), "disk-B/msg")
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(msgs), "messages")
	}
}

// straceCalls sums the calls column of an strace -c summary.
func straceCalls(b testing.TB, path string) int {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[len(f)-1] == "total" {
			continue
		}
		switch f[len(f)-1] {
		case "fsync", "fdatasync", "sync_file_range", "msync":
			n, _ := strconv.Atoi(f[3])
			total += n
		}
	}
	return total
}
