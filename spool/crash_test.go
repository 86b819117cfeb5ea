package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var crashKills = flag.Int("spool.crashkills", 50, "SIGKILLs in TestAppender_Crash_SIGKILL (raise for a soak)")

const crashChildEnv = "SPOOL_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if dir := os.Getenv(drainChildEnv); dir != "" {
		drainChild(dir)
		return
	}
	os.Exit(m.Run())
}

// crashPayload is the payload of record k of child run r: its identity and
// bytes the parent can recompute.
func crashPayload(run, k uint64, n int) []byte {
	p := make([]byte, 16+n)
	binary.LittleEndian.PutUint64(p, run)
	binary.LittleEndian.PutUint64(p[8:], k)
	x := run*0x9E3779B97F4A7C15 ^ k
	for i := 16; i < len(p); i++ {
		x = x*6364136223846793005 + 1442695040888963407
		p[i] = byte(x >> 56)
	}
	return p
}

// crashChild appends under load until killed, printing "D k" whenever
// records up to k are reported durable.
func crashChild(dir string) {
	run, _ := strconv.ParseUint(os.Getenv("SPOOL_CRASH_RUN"), 10, 64)
	rng := rand.New(rand.NewPCG(run, 7))
	opts := Options{
		GroupWindow:     time.Duration(5+rng.IntN(45)) * time.Millisecond,
		AckWindow:       time.Duration(1+rng.IntN(5)) * time.Millisecond,
		SegmentMaxAge:   time.Duration(10+rng.IntN(90)) * time.Millisecond,
		SegmentMaxBytes: int64(64<<10 + rng.IntN(1<<20)),
		GroupMaxRecords: 50 + rng.IntN(2000),
		QueueMaxBytes:   4 << 20,
	}
	if rng.IntN(2) == 0 {
		opts.Profile = ProfileLowWear
	} else {
		opts.MinGroupInterval = time.Duration(1+rng.IntN(30)) * time.Millisecond
	}
	a, err := OpenAppender(dir, opts)
	if err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	fmt.Printf("R %d\n", a.Stats().RecoveredSegments)
	var durable atomic.Uint64 // highest k reported durable, plus one
	var failed atomic.Value
	go func() {
		last := uint64(0)
		for {
			time.Sleep(2 * time.Millisecond)
			if f := failed.Load(); f != nil {
				fmt.Println("E", f)
				os.Exit(1)
			}
			if d := durable.Load(); d != last {
				fmt.Printf("D %d\n", d-1)
				last = d
			}
		}
	}()
	for k := uint64(0); ; k++ {
		rec := Record{Source: "crash", Topic: fmt.Sprintf("run/%d/%d", run, k), QoS: byte(k % 3 / 2),
			Payload: crashPayload(run, k, rng.IntN(2000))}
		done := func(err error) {
			if err != nil {
				failed.Store(err.Error())
				return
			}
			durable.Store(k + 1)
		}
		for {
			err := a.Append(rec, done)
			if errors.Is(err, ErrQueueFull) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				fmt.Println("E", err)
				os.Exit(1)
			}
			break
		}
		if k%500 == 499 {
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond) // vary the rate
		}
	}
}

// TestAppender_Crash_SIGKILL kills a child appender at random moments and
// checks that every record it reported durable is in the spool exactly
// once, in order, intact, and that every segment opens.
func TestAppender_Crash_SIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills 50 child processes; run without -short")
	}
	dir := newSpoolDir(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	durable := map[uint64]int64{} // run → highest durable k, -1 none
	recoveries := 0
	for run := uint64(0); run < uint64(*crashKills); run++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("SPOOL_CRASH_RUN=%d", run))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		time.Sleep(time.Duration(10+rng.IntN(290)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		durable[run] = -1
		for l := range lines {
			switch {
			case strings.HasPrefix(l, "D "):
				k, _ := strconv.ParseInt(l[2:], 10, 64)
				durable[run] = k
			case strings.HasPrefix(l, "R "):
				n, _ := strconv.Atoi(l[2:])
				recoveries += n
			case strings.HasPrefix(l, "E "):
				t.Fatalf("child %d: %s", run, l)
			}
		}
		cmd.Wait()
	}
	// One more appender recovers what the last child left, then closes.
	a, err := OpenAppender(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	recoveries += a.Stats().RecoveredSegments
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	recs, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	seen := map[[2]uint64]bool{}
	lastK := map[uint64]int64{}
	lastRun := uint64(0)
	for _, r := range recs {
		run, k := binary.LittleEndian.Uint64(r.Payload), binary.LittleEndian.Uint64(r.Payload[8:])
		id := [2]uint64{run, k}
		if seen[id] {
			t.Fatalf("record run %d k %d present twice", run, k)
		}
		seen[id] = true
		if string(crashPayload(run, k, len(r.Payload)-16)) != string(r.Payload) || r.Topic != fmt.Sprintf("run/%d/%d", run, k) {
			t.Fatalf("record run %d k %d has wrong content", run, k)
		}
		if run < lastRun {
			t.Fatalf("run %d after run %d", run, lastRun)
		}
		if prev, ok := lastK[run]; ok && int64(k) <= prev {
			t.Fatalf("run %d: k %d after %d", run, k, prev)
		}
		lastRun, lastK[run] = run, int64(k)
	}
	total := 0
	for run, hi := range durable {
		for k := int64(0); k <= hi; k++ {
			if !seen[[2]uint64{run, uint64(k)}] {
				t.Fatalf("run %d: record %d was reported durable and is missing", run, k)
			}
			total++
		}
	}
	q, _ := ListQuarantine(dir)
	t.Logf("%d kills: %d records reported durable, %d in the spool, %d unsealed segments recovered, %d quarantine items",
		len(durable), total, len(recs), recoveries, len(q))
	if total == 0 {
		t.Fatal("no child ever reported a durable record: the test proves nothing")
	}
	if recoveries == 0 {
		t.Fatal("no kill ever left an unsealed segment: recovery was not exercised")
	}
}
