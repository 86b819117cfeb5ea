package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// BenchmarkAppender_Append400 is durable append throughput: b.N records of
// 400 bytes appended from 4 goroutines with the default options, timed
// until the last one is reported durable.
//
//	go test ./spool -run '^$' -bench Append400 -benchtime 1000000x
func BenchmarkAppender_Append400(b *testing.B) {
	dir := b.TempDir()
	opts := Options{}
	if v := os.Getenv("SPOOL_BENCH_GROUP"); v != "" {
		opts.GroupMaxRecords, _ = strconv.Atoi(v)
		opts.GroupMaxBytes = opts.GroupMaxRecords * 1024
	}
	a, err := OpenAppender(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	rec := testRecord(1, 400)
	start := a.Stats()
	io0, _ := shared.ReadProcIO(0)
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	const writers = 4
	for w := 0; w < writers; w++ {
		n := b.N / writers
		if w == 0 {
			n += b.N % writers
		}
		wg.Add(n)
		go func(n int) {
			done := func(err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			}
			for i := 0; i < n; i++ {
				for {
					err := a.Append(rec, done)
					if errors.Is(err, ErrQueueFull) {
						time.Sleep(100 * time.Microsecond)
						continue
					}
					if err != nil {
						b.Error(err)
						wg.Done()
					}
					break
				}
			}
		}(n)
	}
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()
	st := a.Stats()
	io1, _ := shared.ReadProcIO(0)
	a.Close()
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
	b.ReportMetric(float64(io1.WriteBytes-io0.WriteBytes)/float64(b.N), "disk-B/record")
	b.ReportMetric(float64(st.Fsyncs-start.Fsyncs)/el.Seconds(), "fsyncs/s")
	b.ReportMetric(float64(st.Groups-start.Groups)/el.Seconds(), "groups/s")
	b.ReportMetric(float64(st.CommitP99.Microseconds())/1000, "commit-p99-ms")
	b.ReportMetric(float64(st.FsyncP50.Microseconds())/1000, "fsync-p50-ms")
	b.ReportMetric(float64(st.FsyncP99.Microseconds())/1000, "fsync-p99-ms")
}

// buildBacklog appends n 400-byte records with large groups and returns the
// segment bytes.
func buildBacklog(tb testing.TB, dir string, n int) int64 {
	opts := Options{GroupMaxRecords: 16384, GroupMaxBytes: 8 << 20, QueueMaxBytes: 256 << 20}
	if v := os.Getenv("SPOOL_BENCH_SEGMENT_MIB"); v != "" { // to compare segment sizes
		mib, _ := strconv.Atoi(v)
		opts.SegmentMaxBytes = int64(mib) << 20
	}
	a, err := OpenAppender(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	rec := testRecord(1, 400)
	var wg sync.WaitGroup
	wg.Add(n)
	done := func(err error) {
		if err != nil {
			tb.Error(err)
		}
		wg.Done()
	}
	for i := 0; i < n; i++ {
		for {
			err := a.Append(rec, done)
			if errors.Is(err, ErrQueueFull) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				tb.Fatal(err)
			}
			break
		}
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		tb.Fatal(err)
	}
	segs, _ := scanSealed(dir, nil)
	var bytes int64
	for _, s := range segs {
		bytes += s.Bytes
	}
	return bytes
}

// drain reads every record and releases each segment once read past, as
// the writer does.
func drain(tb testing.TB, dir string) (records int) {
	r, err := OpenReader(dir, ReaderOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := r.Cursor(Position{})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	var last Position
	for {
		_, pos, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if pos.Segment != last.Segment && !last.IsZero() {
			if err := r.Release(last); err != nil {
				tb.Fatal(err)
			}
		}
		last = pos
		records++
	}
	if err := r.Release(last); err != nil {
		tb.Fatal(err)
	}
	if segs, _ := listSegments(dir, sealedExt); len(segs) != 0 {
		tb.Fatalf("%d segments left after draining", len(segs))
	}
	return records
}

// BenchmarkReader_Drain reads and deletes a 200,000-record backlog.
//
//	go test ./spool -run '^$' -bench 'Reader_Drain$' -benchtime 3x
func BenchmarkReader_Drain(b *testing.B) {
	const n = 200_000
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(b.TempDir(), strconv.Itoa(i))
		buildBacklog(b, dir, n)
		b.StartTimer()
		t0 := time.Now()
		if got := drain(b, dir); got != n {
			b.Fatalf("drained %d, want %d", got, n)
		}
		total += time.Since(t0)
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "records/s")
}

// BenchmarkReader_Drain2GB measures the peak RSS of draining a 2 GB
// backlog: the backlog is built in a temp folder, then a fresh child
// process (this test binary re-executed) drains it, as the writer would, and
// reports its VmHWM, so the build's memory does not count.
//
//	go test ./spool -run '^$' -bench Drain2GB -benchtime 1x
func BenchmarkReader_Drain2GB(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	dir := b.TempDir()
	n := (2 << 30) / 530 // a 400-byte record takes about 530 bytes of segment
	t0 := time.Now()
	bytes := buildBacklog(b, dir, n)
	b.Logf("built %d records, %d MiB of segments in %v", n, bytes>>20, time.Since(t0))
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), drainChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	b.StopTimer()
	if err != nil {
		b.Fatalf("drain child: %v", err)
	}
	var got int
	var secs float64
	var hwm, rss int64
	if _, err := fmt.Sscanf(string(out), "%d %f %d %d", &got, &secs, &hwm, &rss); err != nil || got != n {
		b.Fatalf("drain child said %q (want %d records)", out, n)
	}
	b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(got)/secs, "records/s")
	b.ReportMetric(float64(bytes)/(1<<20)/secs, "MiB/s")
}

const drainChildEnv = "SPOOL_DRAIN_CHILD"

// drainChild drains the spool in dir and prints records, seconds, VmHWM
// and VmRSS (KiB).
func drainChild(dir string) {
	t0 := time.Now()
	n := drain(fatalTB{}, dir)
	el := time.Since(t0)
	fmt.Printf("%d %f %d %d\n", n, el.Seconds(), procStatusKiB(fatalTB{}, "VmHWM"), procStatusKiB(fatalTB{}, "VmRSS"))
}

// fatalTB is the testing.TB of a child process: failures exit.
type fatalTB struct{ testing.TB }

func (fatalTB) Helper() {}
func (fatalTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(1)
}
func (fatalTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
func (fatalTB) Error(args ...any) { fatalTB{}.Fatal(args...) }

func procStatusKiB(tb testing.TB, field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}
