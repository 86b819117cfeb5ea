package harness

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/tests/loadgen"
)

// TestReadProc_Self_CountsCPUAndDiskWrites reads this test process's own
// /proc files around real work: CPU time and write_bytes must grow.
func TestReadProc_Self_CountsCPUAndDiskWrites(t *testing.T) {
	pid := os.Getpid()
	before, err := ReadProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Busy until the kernel's own account (getrusage) shows 0.3 s of CPU:
	// a wall-clock loop got 0.08 s of CPU on a machine loaded 15 times
	// over, and the check below failed for the machine, not ReadProc.
	start := cpuSeconds(t)
	x := 0
	for deadline := time.Now().Add(2 * time.Minute); cpuSeconds(t)-start < 0.3 && time.Now().Before(deadline); {
		for i := 0; i < 1_000_000; i++ {
			x++
		}
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 4<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	after, err := ReadProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	if cpu := after.CPUSeconds - before.CPUSeconds; cpu < 0.1 {
		t.Errorf("CPU grew by %.2f s over a busy loop that getrusage counts as 0.3 s", cpu)
	}
	if wb := after.IO.WriteBytes - before.IO.WriteBytes; wb < 4<<20 {
		t.Errorf("write_bytes grew by %d after writing and syncing 4 MiB", wb)
	}
	if after.RSSBytes <= 0 || after.HWMBytes < after.RSSBytes {
		t.Errorf("RSS %d, HWM %d", after.RSSBytes, after.HWMBytes)
	}
	_ = x
}

// TestPublishLag_OldestWaiting: the lag at a sample is the age of the
// oldest observation published by then and not yet arrived.
func TestPublishLag_OldestWaiting(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	arrivals := []Arrival{
		{Published: at(1), Arrived: at(1.5)},
		{Published: at(2), Arrived: at(10)}, // held up, e.g. by a lock
		{Published: at(3), Arrived: at(10)},
		{Published: at(11), Arrived: at(11.2)},
	}
	samples := []Sample{{At: at(0.5)}, {At: at(1.2)}, {At: at(5)}, {At: at(10.5)}}
	got := PublishLag(samples, arrivals)
	want := []float64{0, 0.2, 3, 0}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("lag at %v = %v, want %v (all: %v)", samples[i].At.Sub(t0), got[i], want[i], got)
		}
	}
	p50, p99, maxLat, n := LatencyPercentiles(arrivals, at(0), at(5))
	if n != 3 || p50 != 7*time.Second || p99 != 8*time.Second || maxLat != 8*time.Second {
		t.Fatalf("percentiles p50 %s p99 %s max %s n %d", p50, p99, maxLat, n)
	}
}

// correctState is the database a correct writer holds for the messages
// g has handed out (the columns the reconciliation reads).
func correctState(g *loadgen.Generator) *DBState {
	a := g.Accounting()
	st := &DBState{Observations: map[observation]string{}, Nodes: map[string]string{}, PacketCount: a.PacketCount, AdvertCount: a.AdvertCount}
	for _, k := range g.Expected() {
		st.Observations[observation{k.Hash, k.ObserverID, k.PathJSON}] = "row"
	}
	st.ObservationRows = len(st.Observations)
	st.TransmissionRows = a.Transmissions
	for k := range a.AdvertCount {
		st.Nodes[k] = "node"
	}
	for reason, n := range a.Dropped {
		if row, _ := writerReason(reason); row {
			st.DroppedRows += n
		}
	}
	return st
}

// TestReconcile_FindsLossAndDoubling: a correct database reconciles to
// zero; one missing observation and one doubled packet_count are found.
func TestReconcile_FindsLossAndDoubling(t *testing.T) {
	g := loadgen.New(loadgen.Options{Seed: 5})
	for range 3000 {
		g.Next()
	}
	a := g.Accounting()
	drops := map[string]int64{}
	for reason, n := range a.Dropped {
		_, counted := writerReason(reason)
		drops[counted] += int64(n)
	}
	st := correctState(g)
	if r := Reconcile(st, a, g.Expected(), drops, true); r.Lost() != 0 || r.Doubled() != 0 {
		t.Fatalf("a correct database: lost %d, doubled %d: %+v", r.Lost(), r.Doubled(), r)
	}
	k := g.Expected()[100]
	delete(st.Observations, observation{k.Hash, k.ObserverID, k.PathJSON})
	st.ObservationRows--
	st.PacketCount = map[string]int{}
	for id, n := range a.PacketCount {
		st.PacketCount[id] = n
	}
	st.PacketCount[k.ObserverID] -= 1 // its message is gone
	other := g.Expected()[200].ObserverID
	st.PacketCount[other] += 1 // another counted twice
	r := Reconcile(st, a, g.Expected(), drops, true)
	if r.LostObservations != 1 || r.PacketCountLost != 1 || r.PacketCountDoubled != 1 || r.MessagesLost() != 1 || r.Doubled() != 1 {
		t.Fatalf("lost observations %d, packet_count lost %d doubled %d: %+v", r.LostObservations, r.PacketCountLost, r.PacketCountDoubled, r)
	}
	if len(r.LostExamples) != 1 {
		t.Fatalf("lost examples %v", r.LostExamples)
	}
	delete(drops, "no_raw")
	if r := Reconcile(correctState(g), a, g.Expected(), drops, true); a.Dropped["no_raw"] > 0 && r.NoRowDropsLost != a.Dropped["no_raw"] {
		t.Fatalf("uncounted no_raw drops: %d, want %d", r.NoRowDropsLost, a.Dropped["no_raw"])
	}
}

// TestCompareStates_NamesTheDifference: tables are compared on natural
// keys; a changed counter, a missing and an extra row are each reported.
func TestCompareStates_NamesTheDifference(t *testing.T) {
	mk := func() *DBState {
		return &DBState{
			Transmissions: map[string]string{"aa": "raw_hex=01"},
			Observations:  map[observation]string{{"aa", "OBS", "[]"}: "snr=1"},
			Observers:     map[string]string{"OBS": "packet_count=3"},
			Nodes:         map[string]string{}, Dropped: map[string]int{}, NeighborEdges: map[string]string{},
			ObservationRows: 1,
		}
	}
	want, got := mk(), mk()
	if diffs := CompareStates(got, want); !allEqual(diffs) {
		t.Fatalf("equal states differ: %+v", diffs)
	}
	got.Observers["OBS"] = "packet_count=4"
	got.Transmissions["bb"] = "raw_hex=02"
	delete(got.Observations, observation{"aa", "OBS", "[]"})
	got.ObservationRows = 0
	diffs := CompareStates(got, want)
	byTable := map[string]TableDiff{}
	for _, d := range diffs {
		byTable[d.Table] = d
	}
	if d := byTable["observers"]; d.Different != 1 || len(d.Examples) != 1 {
		t.Errorf("observers: %+v", d)
	}
	if d := byTable["transmissions"]; d.Extra != 1 {
		t.Errorf("transmissions: %+v", d)
	}
	if d := byTable["observations"]; d.Missing != 1 {
		t.Errorf("observations: %+v", d)
	}
}

func allEqual(ds []TableDiff) bool {
	for _, d := range ds {
		if !d.Equal() {
			return false
		}
	}
	return true
}

// cpuSeconds is this process's user + system CPU time from getrusage, an
// account independent of /proc/PID/stat.
func cpuSeconds(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// TestMemoryPeak_Self_PSSBelowRSS: the steady scenario's memory figure
// counts pages shared between processes once; for this process alone the
// PSS is positive and at most its RSS, and a process that is gone spoils
// no sample.
func TestMemoryPeak_Self_PSSBelowRSS(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	self := os.Getpid()
	pss, rss := memoryPeak(func() []int { return []int{self} }, time.Millisecond, stop)
	if pss <= 0 || rss <= 0 || pss > rss {
		t.Errorf("PSS %d, RSS %d: want 0 < PSS ≤ RSS", pss, rss)
	}
	if pss, rss := memoryPeak(func() []int { return []int{self, 1 << 30} }, time.Millisecond, stop); pss != 0 || rss != 0 {
		t.Errorf("with a process gone: PSS %d, RSS %d, want no sample (0, 0)", pss, rss)
	}
}
