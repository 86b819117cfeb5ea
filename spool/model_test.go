package spool

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/tests/powercut"
)

// The model-based test: random sequences of appends, waits for group
// commits, seals, reads, consumes, releases, process crashes, power cuts
// and reopens, checked after every step against a model of what the spool
// promises:
//
//   - a record whose done(nil) came is durable: it is read (once its
//     segment is sealed) until the consumer has consumed it, whatever
//     crashed or lost power in between;
//   - done is called once per accepted record, in append order, and never
//     with an error here (no disk faults are injected);
//   - records are read in append order (Seq order) and each at most once
//     from a position: nothing at or before the consumer's position comes
//     back, released or not;
//   - a record keeps its Seq, and Seqs grow with append order across
//     crashes, cuts and restarts;
//   - every record read is intact.
//
// The appender runs in a child process (this test binary again), so that a
// crash is a real SIGKILL; a power cut is a SIGKILL followed by
// powercut.FS.Cut, which leaves only what was synced (and, with its
// options, a random prefix of the rest with a torn last write). Without
// FUSE the test runs with process crashes only.
//
// A failure prints the sequence's seed and the steps up to it. The seed
// fixes the operations, not the timing of group commits and kills, so a
// rerun with MESHINGEST_MODEL_SEED may take a few tries.

const (
	modelChildEnv = "SPOOL_MODEL_CHILD"   // spool folder: run as the model's appender process
	modelOptsEnv  = "SPOOL_MODEL_OPTIONS" // its Options, JSON
	modelKillEnv  = "SPOOL_MODEL_KILL_AT" // n: it kills itself before its n-th sync, recovery's included
	// MESHINGEST_MODEL_SEQUENCES sets how many sequences run (default 2, 1
	// with -short, 8 with MESHINGEST_LONG_TESTS; about 1 s each, 8 s under
	// -race, on the 2-core VM);
	// MESHINGEST_MODEL_SEED the first sequence's seed.
	// MESHINGEST_MODEL_DEBUG=1 logs the spool folder after every step.
	modelSequencesEnv = "MESHINGEST_MODEL_SEQUENCES"
	modelSeedEnv      = "MESHINGEST_MODEL_SEED"
	modelDebugEnv     = "MESHINGEST_MODEL_DEBUG"
	modelSteps        = 40
	modelDeadline     = time.Minute // for anything the appender must do
)

func init() {
	// Before TestMain: the model's child needs nothing from it.
	if dir := os.Getenv(modelChildEnv); dir != "" {
		os.Exit(modelChild(dir))
	}
}

// modelOptions are the child appender's Options, small enough that
// groups, seals and segment ages happen within a step.
type modelOptions struct {
	GroupWindowMs, AckWindowMs, SegmentMaxAgeMs int
	SegmentMaxBytes                             int64
	GroupMaxRecords                             int
	// LowWear selects the low-wear profile (groups into an active
	// segment); else low-latency (a sealed segment per group, at most one
	// group per MinGroupIntervalMs).
	LowWear            bool
	MinGroupIntervalMs int
}

func (o modelOptions) options() Options {
	profile := ProfileLowLatency
	if o.LowWear {
		profile = ProfileLowWear
	}
	return Options{
		Profile:          profile,
		MinGroupInterval: time.Duration(o.MinGroupIntervalMs) * time.Millisecond,
		GroupWindow:      time.Duration(o.GroupWindowMs) * time.Millisecond,
		AckWindow:        time.Duration(o.AckWindowMs) * time.Millisecond,
		SegmentMaxAge:    time.Duration(o.SegmentMaxAgeMs) * time.Millisecond,
		SegmentMaxBytes:  o.SegmentMaxBytes,
		GroupMaxRecords:  o.GroupMaxRecords,
		QueueMaxBytes:    8 << 20,
		MaxBytes:         -1,
		MinFreeBytes:     -1,
	}
}

// modelRecord is record id: its content is a function of id, so a reader
// can check it knowing only the id.
func modelRecord(id uint64, qos byte) Record {
	n := int(id*2654435761%1500) + 8
	p := make([]byte, n)
	binary.LittleEndian.PutUint64(p, id)
	x := id ^ 0x5DEECE66D
	for i := 8; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		p[i] = byte(x >> 56)
	}
	return Record{
		ReceivedAt: time.Unix(0, int64(id)*int64(time.Millisecond)).UTC(),
		Source:     "model",
		Topic:      "model/" + strconv.FormatUint(id, 10),
		QoS:        qos,
		MessageID:  uint16(id),
		Payload:    p,
	}
}

// modelChild is the appender process. It reads "A id qos" (append), "K n"
// (kill yourself before the n-th sync from now: a failpoint before an
// fsync, where a power cut loses the most) and "C" (close) lines, and
// writes "O" once open, "D id" or "F id error" when a record's done is
// called, "R id error" when Append refuses it, "K n" as it kills itself
// before its n-th sync, and "C error?" once closed.
func modelChild(dir string) int {
	var mo modelOptions
	if err := json.Unmarshal([]byte(os.Getenv(modelOptsEnv)), &mo); err != nil {
		fmt.Println("E", err)
		return 1
	}
	var syncs, killAt atomic.Int64
	if n, err := strconv.ParseInt(os.Getenv(modelKillEnv), 10, 64); err == nil {
		killAt.Store(n)
	}
	opts := mo.options()
	opts.BeforeSync = func() {
		if n := syncs.Add(1); n == killAt.Load() {
			fmt.Println("K", n)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	a, err := OpenAppender(dir, opts)
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	killAt.Store(0) // the failpoint of the environment is for recovery
	fmt.Println("O")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "A":
			id, _ := strconv.ParseUint(f[1], 10, 64)
			qos, _ := strconv.Atoi(f[2])
			err := a.Append(modelRecord(id, byte(qos)), func(err error) {
				if err != nil {
					fmt.Println("F", id, err)
				} else {
					fmt.Println("D", id)
				}
			})
			if err != nil {
				fmt.Println("R", id, err)
			}
		case len(f) == 2 && f[0] == "K":
			n, _ := strconv.ParseInt(f[1], 10, 64)
			killAt.Store(syncs.Load() + n)
		case len(f) == 1 && f[0] == "C":
			if err := a.Close(); err != nil {
				fmt.Println("C", err)
			} else {
				fmt.Println("C")
			}
			return 0
		}
	}
	return 0 // stdin closed: the test is gone
}

type recState uint8

const (
	recSent    recState = iota // appended, done not called yet
	recAcked                   // done(nil): must be durable
	recUnknown                 // its appender died before done: may or may not be there
	recRefused                 // Append refused it: must never be read
)

// modelRun is one sequence: the spool folder, the model, the appender
// process and the steps taken.
type modelRun struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	dir   string
	pfs   *powercut.FS // nil: process crashes only
	opts  modelOptions
	steps []string

	child   *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	session int
	dying   bool // told to kill itself at a sync

	nextID  uint64
	state   map[uint64]recState
	lastDue uint64            // highest id whose done came in this session
	seqOf   map[uint64]uint64 // Seq each id was read with
	pos     Position          // the consumer's durable position
	posID   uint64            // id of the record at pos
	cuts    int
	crashes int
}

func TestSpool_Model_RandomSequences(t *testing.T) {
	sequences := 2
	switch {
	case testing.Short():
		sequences = 1
	case testkit.Long():
		sequences = 8
	}
	if s := os.Getenv(modelSequencesEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive count", modelSequencesEnv, s)
		}
		sequences = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(modelSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a number", modelSeedEnv, s)
		}
		seed = v
	}
	t.Logf("first sequence's seed %d", seed)
	var pfs *powercut.FS
	root := t.TempDir()
	if err := powercut.Available(); err != nil {
		t.Logf("process crashes only: %v", err)
	} else {
		pfs = powercut.Mount(t, root)
		root = pfs.Dir()
	}
	totals := map[string]int{}
	for i := 0; i < sequences; i++ {
		m := newModelRun(t, seed+uint64(i), root, pfs, i)
		m.run()
		totals["records"] += int(m.nextID)
		totals["cuts"] += m.cuts
		totals["crashes"] += m.crashes
	}
	t.Logf("%d sequences from seed %d: %d records, %d process crashes, %d power cuts", sequences, seed,
		totals["records"], totals["crashes"], totals["cuts"])
	if pfs != nil {
		s := pfs.Stats()
		t.Logf("power-cut fs: %d file syncs, %d folder syncs, %d unsynced bytes discarded, %d kept, %d torn writes, %d entries undone, %d cuts forced",
			s.FileSyncs, s.DirSyncs, s.DiscardedBytes, s.KeptBytes, s.TornWrites, s.DiscardedChanges, s.ForcedCuts)
		if s.ForcedCuts > 0 {
			t.Errorf("%d cuts found files still open: the test left a file open, or a killed appender's files were not released", s.ForcedCuts)
		}
	}
}

func newModelRun(t *testing.T, seed uint64, root string, pfs *powercut.FS, i int) *modelRun {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f64656c))
	m := &modelRun{t: t, seed: seed, rng: rng, pfs: pfs,
		dir:   filepath.Join(root, fmt.Sprintf("spool-%d", i)),
		state: map[uint64]recState{}, seqOf: map[uint64]uint64{}, nextID: 1,
		opts: modelOptions{
			GroupWindowMs:   2 + rng.IntN(30),
			AckWindowMs:     1 + rng.IntN(5),
			SegmentMaxAgeMs: 5 + rng.IntN(60),
			SegmentMaxBytes: int64(16<<10 + rng.IntN(256<<10)),
			GroupMaxRecords: 5 + rng.IntN(200),
		},
	}
	if rng.IntN(2) == 0 {
		// The defaults' shape: a group gathered as long as a segment may
		// age is written whole as a sealed segment.
		m.opts.SegmentMaxAgeMs = m.opts.GroupWindowMs
	}
	m.opts.LowWear = rng.IntN(2) == 0
	m.opts.MinGroupIntervalMs = 1 + rng.IntN(30)
	if !m.opts.LowWear && rng.IntN(2) == 0 {
		m.opts.GroupWindowMs = 0 // the low-latency default: no gathering
	}
	// The folder exists and is durable before the receiver first runs, as
	// the installer (or systemd's StateDirectory) leaves it, or not.
	if rng.IntN(2) == 0 {
		return m // the appender creates it, as on a first run
	}
	if err := os.Mkdir(m.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syncDir(root); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *modelRun) step(format string, args ...any) {
	m.steps = append(m.steps, fmt.Sprintf(format, args...))
	if os.Getenv(modelDebugEnv) != "" {
		var names []string
		es, _ := os.ReadDir(m.dir)
		for _, e := range es {
			fi, _ := e.Info()
			if fi != nil {
				names = append(names, fmt.Sprintf("%s(%d)", e.Name(), fi.Size()))
			}
		}
		qs, _ := os.ReadDir(filepath.Join(m.dir, quarantineDir))
		for _, e := range qs {
			names = append(names, "q/"+e.Name())
		}
		m.t.Logf("%s\n    %v", m.steps[len(m.steps)-1], names)
	}
}

// fail reports a broken promise with what it takes to look into it.
func (m *modelRun) fail(format string, args ...any) {
	m.t.Helper()
	m.stop()
	steps := m.steps
	if len(steps) > 60 {
		steps = append([]string{fmt.Sprintf("... %d steps before", len(steps)-60)}, steps[len(steps)-60:]...)
	}
	m.t.Fatalf("%s\nsequence seed %d (rerun: %s=%d %s=1), appender options %+v, steps:\n  %s", fmt.Sprintf(format, args...),
		m.seed, modelSeedEnv, m.seed, modelSequencesEnv, m.opts, strings.Join(steps, "\n  "))
}

func (m *modelRun) run() {
	defer m.stop()
	m.open()
	for s := 0; s < modelSteps; s++ {
		if m.child == nil {
			m.open()
		}
		switch r := m.rng.IntN(100); {
		case r < 30:
			m.appendSome(1+m.rng.IntN(40), m.rng.IntN(3) == 0)
		case r < 42:
			m.waitDone()
		case r < 50:
			m.waitSeal()
		case r < 68:
			m.read(m.rng.IntN(3) > 0)
		case r < 78:
			m.release()
		case r < 86:
			m.crash(m.pfs != nil && m.rng.IntN(2) == 0, m.rng.IntN(2) == 0)
		default:
			m.close()
		}
	}
	m.close()
	m.read(true)
	checkSpool(m.t, m.dir)
}

// open starts an appender process and, once it has recovered the spool,
// checks that everything durable is there. Now and then the appender is
// killed before one of its recovery's syncs, with or without a power cut,
// a few times over: a crash loop.
func (m *modelRun) open() {
	for tries := 0; tries < 3 && m.rng.IntN(4) == 0; tries++ {
		at := 1 + m.rng.IntN(4)
		if m.start(at) {
			m.step("open (session %d): killing it before its sync %d did not come to pass in recovery", m.session, at)
			m.checkComplete("after open")
			return
		}
		m.crashes++
		m.step("open (session %d): killed before its sync %d, in recovery", m.session, at)
		m.cutMaybe()
	}
	if !m.start(0) {
		m.fail("the appender died while opening")
	}
	m.step("open (session %d)", m.session)
	m.checkComplete("after open")
}

// start starts an appender process, which kills itself before its
// killAt-th sync (0: never), and reports whether it opened.
func (m *modelRun) start(killAt int) bool {
	exe, err := os.Executable()
	if err != nil {
		m.t.Fatal(err)
	}
	opts, _ := json.Marshal(m.opts)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), modelChildEnv+"="+m.dir, modelOptsEnv+"="+string(opts), modelKillEnv+"="+strconv.Itoa(killAt))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	lines := make(chan string, 4096)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	m.child, m.stdin, m.lines = cmd, stdin, lines
	m.session++
	m.lastDue = 0
	for {
		select {
		case l, ok := <-lines:
			switch {
			case l == "O":
				return true
			case strings.HasPrefix(l, "K "):
				continue
			case !ok:
				cmd.Wait()
				stdin.Close()
				m.child = nil
				if killAt > 0 {
					return false
				}
				m.fail("the appender did not open")
			default:
				m.fail("the appender did not open: %q", l)
			}
		case <-time.After(modelDeadline):
			m.fail("the appender did not open within %v", modelDeadline)
		}
	}
}

// handle applies one line from the appender to the model.
func (m *modelRun) handle(l string) {
	f := strings.SplitN(l, " ", 3)
	var id uint64
	if len(f) >= 2 {
		id, _ = strconv.ParseUint(f[1], 10, 64)
	}
	switch f[0] {
	case "D", "F":
		if st, ok := m.state[id]; !ok || st != recSent {
			m.fail("done for record %d, whose state is %d (sent 0, acked 1, unknown 2, refused 3)", id, st)
		}
		if id <= m.lastDue {
			m.fail("done for record %d after done for record %d: not in append order", id, m.lastDue)
		}
		m.lastDue = id
		if f[0] == "F" {
			m.fail("done(error) for record %d with no disk fault injected: %s", id, strings.Join(f[2:], " "))
		}
		m.state[id] = recAcked
	case "K":
		m.step("the appender kills itself before its sync %s", f[1])
	case "R":
		m.state[id] = recRefused
		m.fail("Append refused record %d: %s", id, strings.Join(f[2:], " "))
	case "E":
		m.fail("appender: %s", l)
	default:
		m.fail("unexpected line from the appender: %q", l)
	}
}

// pump handles the appender's lines until until() holds, the appender's
// output ends, or the deadline passes (a failure, unless until is nil).
func (m *modelRun) pump(until func() bool) (ended bool) {
	deadline := time.After(modelDeadline)
	for until == nil || !until() {
		var l string
		var ok bool
		if until == nil {
			select {
			case l, ok = <-m.lines:
			default:
				return false
			}
		} else {
			select {
			case l, ok = <-m.lines:
			case <-deadline:
				m.fail("the appender did not answer within %v", modelDeadline)
			}
		}
		if !ok {
			return true
		}
		if l == "C" || strings.HasPrefix(l, "C ") {
			if l != "C" {
				m.fail("Close: %s", l[2:])
			}
			continue
		}
		m.handle(l)
	}
	return false
}

func (m *modelRun) outstanding() []uint64 {
	var ids []uint64
	for id, st := range m.state {
		if st == recSent {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (m *modelRun) appendSome(n int, qos1 bool) {
	var b strings.Builder
	first := m.nextID
	for range n {
		qos := 0
		if qos1 || m.rng.IntN(4) == 0 {
			qos = 1
		}
		fmt.Fprintf(&b, "A %d %d\n", m.nextID, qos)
		m.state[m.nextID] = recSent
		m.nextID++
	}
	m.step("append %d-%d (qos1 %v)", first, m.nextID-1, qos1)
	if _, err := io.WriteString(m.stdin, b.String()); err != nil && !m.dying {
		m.fail("write to the appender: %v", err)
	}
	m.pump(nil)
}

// waitDone waits for every appended record's done: a group commit.
func (m *modelRun) waitDone() {
	m.step("wait for done")
	m.pump(func() bool { return len(m.outstanding()) == 0 })
}

// waitSeal waits out the segment age, so the active segment seals.
func (m *modelRun) waitSeal() {
	m.waitDone()
	m.step("wait for the seal")
	time.Sleep(time.Duration(2*m.opts.SegmentMaxAgeMs+5) * time.Millisecond)
	m.pump(nil)
}

// readAll reads every record after the consumer's position and checks
// each against the model; it returns them with their positions.
func (m *modelRun) readAll(what string) ([]uint64, []Position) {
	r, err := OpenReader(m.dir, ReaderOptions{})
	if err != nil {
		m.fail("%s: OpenReader: %v", what, err)
	}
	c, err := r.Cursor(m.pos)
	if err != nil {
		m.fail("%s: Cursor: %v", what, err)
	}
	defer c.Close()
	var ids []uint64
	var poss []Position
	last := m.posID
	for {
		rec, pos, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			m.fail("%s: Next after %+v: %v", what, m.pos, err)
		}
		if len(rec.Payload) < 8 {
			m.fail("%s: record Seq %d has a %d-byte payload", what, rec.Seq, len(rec.Payload))
		}
		id := binary.LittleEndian.Uint64(rec.Payload)
		want := modelRecord(id, rec.QoS)
		want.Seq = rec.Seq
		switch {
		case !sameContent(rec, want):
			m.fail("%s: record %d (Seq %d) is not intact", what, id, rec.Seq)
		case id >= m.nextID || id == 0:
			m.fail("%s: record %d was never appended", what, id)
		case id <= m.posID:
			m.fail("%s: record %d (Seq %d) read again after the consumer's position (record %d, %+v)", what, id, rec.Seq, m.posID, m.pos)
		case id <= last:
			m.fail("%s: record %d (Seq %d) after record %d: not in append order, or twice", what, id, rec.Seq, last)
		case m.state[id] == recRefused:
			m.fail("%s: record %d was refused by Append and is in the spool", what, id)
		case rec.Seq <= m.pos.Seq || pos.Seq != rec.Seq || pos.Segment > rec.Seq:
			m.fail("%s: record %d: Seq %d at %+v, consumer at %+v", what, id, rec.Seq, pos, m.pos)
		}
		if s, ok := m.seqOf[id]; ok && s != rec.Seq {
			m.fail("%s: record %d read with Seq %d, earlier with Seq %d", what, id, rec.Seq, s)
		}
		m.seqOf[id] = rec.Seq
		last = id
		ids = append(ids, id)
		poss = append(poss, pos)
	}
	m.checkSeqOrder(what)
	// Segments are sealed in Seq order, so every durable record before the
	// last one read is in a sealed segment and must have been read.
	m.checkAcked(what, ids, last)
	return ids, poss
}

// checkAcked fails if a record acked with an id in (posID, upTo] is not in
// ids (sorted).
func (m *modelRun) checkAcked(what string, ids []uint64, upTo uint64) {
	read := map[uint64]bool{}
	for _, id := range ids {
		read[id] = true
	}
	var lost []uint64
	for id, st := range m.state {
		if st == recAcked && id > m.posID && id <= upTo && !read[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		sort.Slice(lost, func(i, j int) bool { return lost[i] < lost[j] })
		m.fail("%s: %d records reported durable are missing: %v (read %d records after record %d)", what, len(lost), clipIDs(lost), len(ids), m.posID)
	}
}

// checkSeqOrder fails unless Seqs grow with ids (append order) over every
// record ever read, across sessions.
func (m *modelRun) checkSeqOrder(what string) {
	ids := make([]uint64, 0, len(m.seqOf))
	for id := range m.seqOf {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i := 1; i < len(ids); i++ {
		if m.seqOf[ids[i]] <= m.seqOf[ids[i-1]] {
			m.fail("%s: record %d has Seq %d, record %d before it has Seq %d", what, ids[i], m.seqOf[ids[i]], ids[i-1], m.seqOf[ids[i-1]])
		}
	}
}

// checkComplete reads everything after the consumer's position when no
// segment is left unsealed (the appender just recovered or closed): every
// record reported durable must be there.
func (m *modelRun) checkComplete(what string) {
	ids, _ := m.readAll(what)
	m.checkAcked(what, ids, m.nextID)
	rep, err := Verify(m.dir)
	if err != nil {
		m.fail("%s: Verify: %v", what, err)
	}
	if rep.Damaged() {
		m.fail("%s: Verify finds damage: %+v", what, rep.Segments)
	}
}

// read reads what is sealed and, when consume, moves the consumer's
// durable position to a random record of it, as the writer commits its
// position with its rows.
func (m *modelRun) read(consume bool) {
	m.pump(nil)
	ids, poss := m.readAll(fmt.Sprintf("read (step %d)", len(m.steps)+1))
	if !consume || len(ids) == 0 {
		m.step("read %d records", len(ids))
		return
	}
	k := m.rng.IntN(len(ids))
	m.pos, m.posID = poss[k], ids[k]
	m.step("read %d records, consume through record %d %+v", len(ids), m.posID, m.pos)
}

func (m *modelRun) release() {
	r, err := OpenReader(m.dir, ReaderOptions{})
	if err != nil {
		m.fail("release: OpenReader: %v", err)
	}
	if err := r.Release(m.pos); err != nil {
		m.fail("release %+v: %v", m.pos, err)
	}
	m.step("release through %+v (%d segments deleted)", m.pos, r.Stats().SegmentsReleased)
}

// crash kills the appender: at a random moment, often in the middle of a
// burst of appends so that groups are being written and synced, or (atSync)
// right before one of its next syncs; with cut, the power goes too.
func (m *modelRun) crash(cut, atSync bool) {
	switch {
	case atSync:
		n := 1 + m.rng.IntN(6)
		m.step("kill the appender before its sync %d from now", n)
		if _, err := fmt.Fprintf(m.stdin, "K %d\n", n); err != nil {
			m.fail("write to the appender: %v", err)
		}
		m.dying = true
		for range 20 {
			m.appendSome(1+m.rng.IntN(100), m.rng.IntN(2) == 0)
			if m.pump(func() bool { return len(m.outstanding()) == 0 }) {
				break // it died
			}
		}
	case m.rng.IntN(3) > 0:
		m.appendSome(1+m.rng.IntN(200), m.rng.IntN(2) == 0)
		wait := time.Duration(m.rng.IntN(2*m.opts.GroupWindowMs+1)) * time.Millisecond
		m.step("sleep %v", wait)
		time.Sleep(wait)
	}
	m.pump(nil)
	m.child.Process.Signal(syscall.SIGKILL)
	m.pump(func() bool { return false }) // the lines it wrote before it died
	m.child.Wait()
	m.stdin.Close()
	m.child, m.dying = nil, false
	for _, id := range m.outstanding() {
		m.state[id] = recUnknown
	}
	m.crashes++
	m.step("SIGKILL the appender")
	if cut {
		m.cut()
	}
}

// cutMaybe cuts the power half the time, when there is a power-cut file
// system.
func (m *modelRun) cutMaybe() {
	if m.pfs != nil && m.rng.IntN(2) == 0 {
		m.cut()
	}
}

func (m *modelRun) cut() {
	opts := powercut.CutOptions{KeepPrefix: m.rng.IntN(2) == 0, TearLastPage: m.rng.IntN(2) == 0, Seed: m.rng.Uint64()}
	m.step("cut the power %+v", opts)
	if err := m.pfs.Cut(opts); err != nil {
		m.fail("cut: %v", err)
	}
	m.cuts++
	if os.Getenv(modelDebugEnv) != "" {
		m.step("power back")
	}
}

// close closes the appender cleanly: every record gets its done, and the
// spool is complete.
func (m *modelRun) close() {
	if m.child == nil {
		return
	}
	m.step("close")
	if _, err := io.WriteString(m.stdin, "C\n"); err != nil {
		m.fail("write to the appender: %v", err)
	}
	m.pump(func() bool { return false })
	if err := m.child.Wait(); err != nil {
		m.fail("the appender exited: %v", err)
	}
	m.stdin.Close()
	m.child = nil
	if ids := m.outstanding(); len(ids) > 0 {
		m.fail("Close returned with %d records whose done never came: %v", len(ids), clipIDs(ids))
	}
	m.checkComplete("after close")
}

// stop kills an appender still running (the test failed).
func (m *modelRun) stop() {
	if m.child != nil {
		m.child.Process.Kill()
		m.child.Wait()
		m.stdin.Close()
		m.child = nil
	}
}

func clipIDs(ids []uint64) []uint64 {
	if len(ids) > 20 {
		return ids[:20]
	}
	return ids
}

// TestAppender_Open_NewFolderSurvivesPowerCut: the spool folder, and the
// folders above it, that OpenAppender creates are durable before any record
// in them is reported durable. (They were not: the model test lost a whole
// spool after a power cut.)
func TestAppender_Open_NewFolderSurvivesPowerCut(t *testing.T) {
	pfs := powercut.Mount(t, t.TempDir())
	dir := filepath.Join(pfs.Dir(), "var", "lib", "spool")
	a, err := OpenAppender(dir, Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendThenCut(t, pfs, dir, a, func() {})
}

// appendThenCut appends ten records through a, closes it, runs beforeCut,
// cuts the power and checks that the folder and all ten records are there.
func appendThenCut(t *testing.T, pfs *powercut.FS, dir string, a *Appender, beforeCut func()) {
	t.Helper()
	recs := make([]Record, 10)
	for i := range recs {
		recs[i] = testRecord(i, 100)
	}
	appendAll(t, a, recs)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	beforeCut()
	if err := pfs.Cut(powercut.CutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("after a power cut: %v", err)
	}
	got, _ := readAll(t, dir, ReaderOptions{Inspect: true})
	if len(got) != len(recs) {
		t.Fatalf("after a power cut: %d records, want the %d reported durable", len(got), len(recs))
	}
	checkSpool(t, dir)
}

// The writer may start before the receiver and make the spool folder
// itself (LockConsumer); the appender then finds it made and syncs
// nothing. Found by the system power-cut test (tests/powercutsys): the
// folder's name was not durable, a cut took the spool with every record
// the receiver had acknowledged, and the next receiver made a new spool.
func TestLockConsumer_NewFolder_SurvivesPowerCut(t *testing.T) {
	pfs := powercut.Mount(t, t.TempDir())
	dir := filepath.Join(pfs.Dir(), "var", "lib", "spool")
	lock, err := LockConsumer(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := OpenAppender(dir, Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendThenCut(t, pfs, dir, a, func() { lock.Close() })
}

// What recovery sets aside must outlive a power cut: the damaged records
// and the reasons are written into quarantine/ and the folder synced, so
// their content must be synced first or a cut leaves the names with
// nothing in them. Found while reading the code for the system power-cut
// test.
func TestOpenAppender_QuarantinedRecords_SurvivePowerCut(t *testing.T) {
	pfs := powercut.Mount(t, t.TempDir())
	src := filepath.Join(pfs.Dir(), "spool")
	buildSpool(t, src, 1000)
	// As TestOpenAppender_RecoversDamagedUnsealedSegment: the newest
	// large segment made to look like a dead appender's, damaged inside.
	segs, _ := listSegments(src, sealedExt)
	var last segmentFile
	var fi os.FileInfo
	for i := len(segs) - 1; i >= 0; i-- {
		last = segs[i]
		fi, _ = os.Stat(filepath.Join(src, last.Name))
		if fi.Size() >= 4096*4+trailerSize+3000 {
			for _, newer := range segs[i+1:] {
				os.Remove(filepath.Join(src, newer.Name))
			}
			break
		}
	}
	path := filepath.Join(src, last.Name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(fi.Size() - trailerSize - 3000)
	f.WriteAt([]byte{0xff, 0xfe}, 4096*3+600)
	f.Sync() // the damage itself is durable: only recovery's work is on trial
	f.Close()
	if err := os.Rename(path, filepath.Join(src, segmentName(last.ID, activeExt))); err != nil {
		t.Fatal(err)
	}
	if err := syncDir(src); err != nil {
		t.Fatal(err)
	}
	a, err := OpenAppender(src, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	quarantined := a.Stats().QuarantinedRecords
	a.Close()
	if quarantined == 0 {
		t.Fatal("recovery quarantined no record: the damage missed them")
	}
	if err := pfs.Cut(powercut.CutOptions{}); err != nil {
		t.Fatal(err)
	}
	items, err := ListQuarantine(src)
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	for _, it := range items {
		if it.Reason == "(no .reason file)" || it.Reason == "" {
			t.Errorf("after a power cut: quarantine item %s has no readable reason", it.Name)
		}
		if it.Kind == "record" {
			records++
			if it.Bytes == 0 {
				t.Errorf("after a power cut: quarantined record %s is empty", it.Name)
			}
		}
	}
	if records != quarantined {
		t.Errorf("after a power cut: %d quarantined records, recovery reported %d", records, quarantined)
	}
}
