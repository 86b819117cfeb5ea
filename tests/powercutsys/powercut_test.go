// Package powercutsys cuts the power under the real system (issue 13): the
// meshingest receiver and writer run as processes with the spool and the
// database on a power-cut file system (tests/powercut), a real mosquitto
// carries generated and captured traffic at QoS 1 with a QoS 0 share, and at
// random moments both processes are SIGKILLed and the power is cut (every
// write not synced is lost, or a random prefix of it kept and the last page
// torn). After every cut the system restarts and the database is checked
// against what the publishers handed the broker.
package powercutsys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	_ "modernc.org/sqlite"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/tests/harness"
	"github.com/meshingest/meshingest/tests/loadgen"
	"github.com/meshingest/meshingest/tests/powercut"
)

// CutsEnv is the number of power cuts; the default keeps the normal suite
// short on a loaded machine.
const CutsEnv = "MESHINGEST_POWERCUTS"

// KeepEnv names a folder where a failed run leaves its logs, broker,
// spool and database.
const KeepEnv = "MESHINGEST_POWERCUT_KEEP"

// AimsEnv, a comma-separated list of aims (see aims), limits the cuts to
// those: to chase one kind of failure.
const AimsEnv = "MESHINGEST_POWERCUT_AIMS"

const (
	defaultCuts = 3
	// rate1 and rate0 are the QoS 1 and QoS 0 streams, messages per
	// second: enough for several groups, seals and commits between two
	// cuts, little enough that the database stays small over 500 cuts.
	rate1, rate0 = 120, 25
	// segmentMaxBytes makes a seal (and, behind the writer, a segment
	// delete) several times a second; checkpointPages a checkpoint every
	// few commits. Both put cuts in the middle of them.
	segmentMaxBytes = 24 << 10
	checkpointPages = 100
	// qos0Slack is how long a QoS 0 message may spend between the
	// publisher and the receiver's queue on a loaded machine, on top of
	// the group window the receiver may lose.
	qos0Slack = 1500 * time.Millisecond
	// corpusObservations are the real capture's documented observation
	// rows (docs/reference/corpus.md).
	corpusObservations = 498
)

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.CleanupBinary()
	os.Exit(code)
}

// cutRecord is one power cut: when the processes died and when the new
// receiver was subscribed again (the QoS 0 messages published in between,
// and in the group window before, may be lost).
type cutRecord struct {
	n               int
	at, readyAt     time.Time
	rxDownAt        time.Time // the receiver's death: before at when an import ran
	opts            powercut.CutOptions
	aim             string
	profile         spool.Profile // the spool profile the processes ran that the cut killed
	hit             bool          // the aimed-at event was seen just before the cut
	importCompleted bool
}

// system is the deployment under test and what the test knows of it.
type system struct {
	t                                                 *testing.T
	bin                                               string
	pfs                                               *powercut.FS
	work, cfgPath, spoolDir, dbPath, rxStats, wxStats string
	broker                                            *harness.Mosquitto
	rx, wx                                            *harness.Process

	// gen1 feeds the QoS 1 stream, gen0 the QoS 0 share, genI the
	// captures given to `spool import`: independent meshes with their own
	// observers, so each stream is reconciled on its own.
	gen1, gen0, genI                 *loadgen.Generator
	pub1, pub0                       *harness.Publisher
	obs1, obs0, obsI, corpusObserver map[string]bool
	corpusCount                      map[string]int // corpus observer → its messages
	corpus                           []capture.Message
	corpusDone                       bool

	// profile is the spool profile in the configuration now: each restart
	// after a cut picks one (profiles).
	profile spool.Profile

	cuts []cutRecord
	// importsCut are the observation keys of imports the power cut short:
	// each may be in the database once, or not at all.
	importsCut                map[loadgen.ObservationKey]bool
	imports                   int
	importTook                time.Duration // the last finished import's run time
	importedKeys              int           // genI's observation keys handed to imports so far
	verifyDamage, quarantined int
	qos0Lost                  int
	qos0WorstAge              time.Duration

	// ledger and the streams' ledgers let the check after a cut read only
	// what was written since the previous check (dbcheck_test.go).
	ledger                    *dbLedger
	ledger1, ledger0, ledgerI *streamLedger
}

func cutCount(t *testing.T) int {
	n := defaultCuts
	if v := os.Getenv(CutsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of cuts", CutsEnv, v)
		}
	}
	return n
}

// TestPowerCut_System_AckedMessagesSurviveOnce runs the system through
// MESHINGEST_POWERCUTS power cuts and checks after each: every QoS 1
// message the broker acknowledged to the publisher (and so delivers until
// the receiver acknowledges it) is in the database exactly once, QoS 0
// losses lie within the group window before a cut or the outage after it,
// the database passes integrity_check and foreign_key_check, spool verify
// finds no damage in a sealed segment, and no packet or advert is counted
// twice.
func TestPowerCut_System_AckedMessagesSurviveOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a FUSE file system, mosquitto and the real processes")
	}
	cuts := cutCount(t)
	started := time.Now()
	s := newSystem(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (cut options and timings)", seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	for i := 1; i <= cuts; i++ {
		s.cycle(i, rng)
		if t.Failed() {
			break
		}
	}
	acked, lost, doubled := s.final()
	fs := s.pfs.Stats()
	t.Logf("file system: %d file syncs, %d folder syncs, %d cuts (%d forced), unsynced bytes discarded %d, kept %d, torn writes %d, changes discarded %d",
		fs.FileSyncs, fs.DirSyncs, fs.Cuts, fs.ForcedCuts, fs.DiscardedBytes, fs.KeptBytes, fs.TornWrites, fs.DiscardedChanges)
	t.Logf("QoS 0: %d published, %d lost, the oldest lost published %s before the receiver died; imports %d (%d cut short); spool verify damage %d, quarantined items %d; wall time %s",
		s.pub0.Published(), s.qos0Lost, s.qos0WorstAge.Round(time.Millisecond), s.imports, countCutImports(s.cuts),
		s.verifyDamage, s.quarantined, time.Since(started).Round(time.Second))
	t.Logf("cuts by aim (event seen/cuts): %s", aimSummary(s.cuts))
	t.Logf("cuts by spool profile (group commits seen/cuts): %s", profileSummary(s.cuts))
	fmt.Printf("powercut: cuts=%d acked=%d lost=%d doubled=%d\n", len(s.cuts), acked, lost, doubled)
	if fs.ForcedCuts > 0 {
		t.Errorf("%d cuts found files still open on the mount", fs.ForcedCuts)
	}
}

func aimSummary(cuts []cutRecord) string {
	var parts []string
	for _, aim := range aims {
		hit, n := 0, 0
		for _, c := range cuts {
			if c.aim == aim {
				n++
				if c.hit {
					hit++
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", aim, hit, n))
	}
	return strings.Join(parts, ", ")
}

func profileSummary(cuts []cutRecord) string {
	var parts []string
	for _, p := range profiles {
		n, gc, gcHit := 0, 0, 0
		for _, c := range cuts {
			if c.profile != p {
				continue
			}
			n++
			if c.aim == "group commit" {
				gc++
				if c.hit {
					gcHit++
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d (%d/%d)", p, n, gcHit, gc))
	}
	return strings.Join(parts, ", ")
}

func countCutImports(cuts []cutRecord) int {
	n := 0
	for _, c := range cuts {
		if c.aim == "spool import" && !c.importCompleted {
			n++
		}
	}
	return n
}

func newSystem(t *testing.T) *system {
	s := &system{t: t, bin: testkit.BinaryPath(t), work: t.TempDir(), importsCut: map[loadgen.ObservationKey]bool{},
		profile: spool.ProfileLowLatency, importTook: 1200 * time.Millisecond}
	s.pfs = powercut.Mount(t, t.TempDir())
	s.spoolDir = filepath.Join(s.pfs.Dir(), "spool")
	// The database's folder is the operator's, made and synced before the
	// start; the spool folder is left to the processes to make. Apart,
	// SQLite's syncs of the database folder make nothing of the spool's
	// durable.
	dbDir := filepath.Join(s.pfs.Dir(), "db")
	if err := os.Mkdir(dbDir, 0o700); err != nil {
		t.Fatal(err)
	}
	syncDir(t, s.pfs.Dir())
	s.dbPath = filepath.Join(dbDir, "meshcore.db")
	s.cfgPath = filepath.Join(s.work, "config.json")
	s.rxStats = filepath.Join(s.work, "receiver-stats.json")
	s.wxStats = filepath.Join(s.work, "writer-stats.json")
	brokerDir := filepath.Join(s.work, "broker")
	if err := os.Mkdir(brokerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.broker, err = harness.StartMosquitto(brokerDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.broker.Stop)

	s.gen1 = loadgen.New(loadgen.Options{Seed: 1301, Stream: "qos1"})
	s.gen0 = loadgen.New(loadgen.Options{Seed: 1302, Observers: 10, Fanout: 5, Stream: "qos0"})
	s.genI = loadgen.New(loadgen.Options{Seed: 1303, Observers: 10, Fanout: 5, Stream: "import"})
	s.obs1, s.obs0, s.obsI = observerSet(s.gen1), observerSet(s.gen0), observerSet(s.genI)
	s.ledger = newDBLedger()
	s.ledger1, s.ledger0, s.ledgerI = newStreamLedger(s.gen1, s.obs1), newStreamLedger(s.gen0, s.obs0), newStreamLedger(s.genI, s.obsI)
	s.loadCorpus()
	s.writeConfig()

	s.rx = harness.NewProcess("receiver", s.bin, filepath.Join(s.work, "receiver.log"), "receive", "--config", s.cfgPath)
	s.wx = harness.NewProcess("writer", s.bin, filepath.Join(s.work, "writer.log"), "write", "--config", s.cfgPath)
	t.Cleanup(func() {
		// Before the file system's own cleanup unmounts it.
		s.wx.Kill()
		s.rx.Kill()
		if t.Failed() {
			for _, name := range []string{"receiver.log", "writer.log"} {
				b, _ := os.ReadFile(filepath.Join(s.work, name))
				t.Logf("the end of %s:\n%s", name, tailText(b, 3000))
			}
			// The files outlive the test for a look (MESHINGEST_POWERCUT_KEEP
			// names where).
			if keep := os.Getenv(KeepEnv); keep != "" {
				dst := filepath.Join(keep, time.Now().Format("150405"))
				out, err := exec.Command("cp", "-a", s.work, dst+"-work").CombinedOutput()
				out2, err2 := exec.Command("cp", "-a", s.pfs.Lower(), dst+"-lower").CombinedOutput()
				t.Logf("kept the files in %s-work and %s-lower (%v %s %v %s)", dst, dst, err, out, err2, out2)
			}
		}
	})
	s.startWriter()
	s.startReceiver()
	if s.pub1, err = harness.NewPublisher(s.broker.PahoURL(), 1, s.gen1); err != nil {
		t.Fatal(err)
	}
	if s.pub0, err = harness.NewPublisher(s.broker.PahoURL(), 0, s.gen0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.pub1.Close(); s.pub0.Close() })
	return s
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func observerSet(g *loadgen.Generator) map[string]bool {
	m := map[string]bool{}
	for _, o := range g.Observers() {
		m[o.ID] = true
	}
	return m
}

// loadCorpus reads the real capture (31 status and 500 packet messages of
// live observers, embedded in internal/capture) and counts each observer's messages:
// each adds one to its observer's packet_count (its repeated observation
// included), but the frame the firmware rejects (line 465, version 3;
// docs/reference/corpus.md), which is dropped without a count.
func (s *system) loadCorpus() {
	s.corpusCount, s.corpusObserver = map[string]int{}, map[string]bool{}
	rd := capture.Demo()
	for {
		m, err := rd.Next()
		if err != nil {
			break
		}
		s.corpus = append(s.corpus, m)
		id := strings.Split(m.Topic, "/")[2]
		s.corpusObserver[id] = true
		if strings.HasSuffix(m.Topic, "/packets") {
			pm, err := decoder.ParsePacketMessage(m.Payload)
			if err != nil {
				s.t.Fatalf("the real capture: %v", err)
			}
			if _, err := decoder.DecodeFrame(pm.Raw); err != nil {
				continue
			}
		}
		s.corpusCount[id]++
	}
	if len(s.corpus) != 531 {
		s.t.Fatalf("the real capture: %d messages, want 531", len(s.corpus))
	}
}

func (s *system) writeConfig() {
	channels := map[string]string{"Public": "8b3387e9c5cdea6ac9e5edbaa115cd72"}
	hashChannels := map[string]bool{"#test": true, "#wardriving": true, "#bot": true, "#chat": true}
	regions := map[string]bool{}
	for _, g := range []*loadgen.Generator{s.gen1, s.gen0, s.genI} {
		k := g.Keys()
		for name, key := range k.ChannelKeys {
			if old, ok := channels[name]; ok && old != key {
				s.t.Fatalf("channel %s has two keys in the streams", name)
			}
			channels[name] = key
		}
		for _, c := range k.HashChannels {
			hashChannels[c] = true
		}
		for _, r := range k.HashRegions {
			regions[r] = true
		}
	}
	cfg := map[string]any{
		"dbPath": s.dbPath, "spoolDir": s.spoolDir, "logLevel": "info",
		"mqttSources": []map[string]any{{
			"name": "load", "broker": s.broker.URL(), "qos": 1, "clientId": "powercut-receiver",
		}},
		"channelKeys": channels, "hashChannels": sortedKeys(hashChannels), "hashRegions": sortedKeys(regions),
		"spool":    map[string]any{"segmentMaxBytes": segmentMaxBytes, "profile": string(s.profile)},
		"receiver": map[string]any{"statsFile": s.rxStats},
		"writer":   map[string]any{"statsFile": s.wxStats, "walAutoCheckpointPages": checkpointPages},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(s.cfgPath, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *system) startWriter() {
	s.t.Helper()
	if err := s.wx.Start(); err != nil {
		s.t.Fatal(err)
	}
}

// startReceiver starts a receiver and waits until it is subscribed; it
// returns when that was seen (the stats file lags the connection by up
// to its one-second interval, so the time is late, never early).
func (s *system) startReceiver() time.Time {
	s.t.Helper()
	if err := s.rx.Start(); err != nil {
		s.t.Fatal(err)
	}
	pid := s.rx.PID()
	testkit.WaitFor(s.t, 60*time.Second, "the receiver to connect", func() bool {
		if exited, how := s.rx.Exited(); exited {
			s.t.Fatalf("the receiver exited at start (%s)", how)
		}
		return harness.ReceiverConnected(s.rxStats, pid)
	})
	return time.Now()
}

// profiles are the spool profiles the restarts choose from.
var profiles = []spool.Profile{spool.ProfileLowLatency, spool.ProfileLowWear}

// aims are the moments a cut is aimed at. A cut aimed at an event waits,
// after a random stretch of load, until the event shows in the lower
// folder (which the test may read: the mount writes through to it as
// calls come), then kills at once or a few milliseconds later, while the
// process is between the write and the sync that makes it durable:
//
//   - group commit: a group's segment was written, its fdatasync under
//     way: the low-latency profile's .tmp segment (one per group, renamed
//     to .seg after the sync) appeared or grew, or the low-wear profile's
//     .active segment (a bbolt transaction) was made or written;
//   - seal: a sealed segment appeared (renamed; the folder's fsync next);
//   - segment delete: a sealed segment is gone (the writer's Release);
//   - sqlite commit: the WAL changed (frames written, their fsync next);
//   - checkpoint: the database file changed (pages copied back from the
//     WAL; checkpoints come every few commits, walAutoCheckpointPages);
//   - spool import: during `meshingest spool import` of a capture;
//   - random: any instant of the load.
var aims = []string{"random", "group commit", "seal", "segment delete", "sqlite commit", "checkpoint", "spool import"}

// fileState is what the aims watch in the lower folder.
type fileState struct {
	segs map[string]bool
	// groups are the segments a group commit writes: the low-wear
	// profile's .active segment, the low-latency profile's .tmp (each
	// group a segment of its own, renamed to .seg once synced).
	groups        map[string]fileMark
	wal, db       int64
	walMod, dbMod time.Time
}

type fileMark struct {
	size int64
	mod  time.Time
}

func (s *system) fileState() fileState { return readFileState(s.pfs.Lower()) }

func readFileState(lower string) fileState {
	st := fileState{segs: map[string]bool{}, groups: map[string]fileMark{}}
	if ents, err := os.ReadDir(filepath.Join(lower, "spool")); err == nil {
		for _, e := range ents {
			name := e.Name()
			switch filepath.Ext(name) {
			case ".seg":
				st.segs[name] = true
			case ".active", ".tmp":
				if fi, err := e.Info(); err == nil {
					st.groups[name] = fileMark{fi.Size(), fi.ModTime()}
				}
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(lower, "db", "meshcore.db-wal")); err == nil {
		st.wal, st.walMod = fi.Size(), fi.ModTime()
	}
	if fi, err := os.Stat(filepath.Join(lower, "db", "meshcore.db")); err == nil {
		st.db, st.dbMod = fi.Size(), fi.ModTime()
	}
	return st
}

// happened reports whether the aim's event lies between a and b.
func happened(aim string, a, b fileState) bool {
	switch aim {
	case "group commit":
		for name, m := range b.groups {
			if old, ok := a.groups[name]; !ok || m.size != old.size || !m.mod.Equal(old.mod) {
				return true
			}
		}
	case "seal":
		for name := range b.segs {
			if !a.segs[name] {
				return true
			}
		}
	case "segment delete":
		for name := range a.segs {
			if !b.segs[name] {
				return true
			}
		}
	case "sqlite commit":
		return b.wal != a.wal || !b.walMod.Equal(a.walMod)
	case "checkpoint":
		return b.db != a.db || !b.dbMod.Equal(a.dbMod)
	}
	return false
}

// aimAt polls the lower folder until the aim's event shows, for at most
// a few seconds, and reports whether it did.
func (s *system) aimAt(aim string, rng *rand.Rand) bool {
	prev := s.fileState()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Microsecond)
		cur := s.fileState()
		if happened(aim, prev, cur) {
			if rng.IntN(2) == 0 {
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			}
			return true
		}
		prev = cur
	}
	return false
}

// cycle runs the load for a random while, cuts the power, restarts the
// system and checks it.
func (s *system) cycle(n int, rng *rand.Rand) {
	t := s.t
	began := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range []struct {
		pub  *harness.Publisher
		rate float64
	}{{s.pub1, rate1}, {s.pub0, rate0}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.pub.Run(ctx, 1<<30, p.rate); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("publisher: %v", err)
			}
		}()
	}
	corpusErr := make(chan error, 1)
	if n == 1 {
		go func() { corpusErr <- s.publishCorpus() }()
	}
	choice := aims
	if v := os.Getenv(AimsEnv); v != "" {
		choice = strings.Split(v, ",")
	}
	c := cutRecord{n: n, aim: choice[rng.IntN(len(choice))], profile: s.profile}
	if n == 1 && c.aim == "spool import" {
		c.aim = "random" // the first import comes after the corpus is in
	}
	sleepRand(rng, 300*time.Millisecond, 2500*time.Millisecond)
	var imp *exec.Cmd
	var impDone chan importResult
	switch c.aim {
	case "random":
		c.hit = true
	case "spool import":
		// An import needs the receiver stopped; it dies first, the
		// power goes during the import (or just after it).
		c.rxDownAt = time.Now()
		s.rx.Kill()
		imp, impDone = s.startImport(rng)
		// Two in three are cut short; the others are cut just after
		// they exit, and must then be whole. One cut short is cut within
		// the time the last finished import took: a fixed bound (it was
		// 1.2 s) let 65 of 72 imports of a 500-cut run finish first on a
		// machine where they took less.
		if rng.IntN(3) == 0 {
			select {
			case r := <-impDone:
				impDone <- r // for the wait below
			case <-time.After(time.Minute):
				t.Errorf("cut %d: spool import still running after a minute", n)
			}
			sleepRand(rng, 0, 300*time.Millisecond)
		} else {
			sleepRand(rng, 0, s.importTook*9/10)
		}
		c.hit = true
	default:
		c.hit = s.aimAt(c.aim, rng)
	}
	c.at = time.Now()
	if c.rxDownAt.IsZero() {
		c.rxDownAt = c.at
	}
	s.killAll(imp)
	if imp != nil {
		r := <-impDone
		c.importCompleted = r.err == nil
		if c.importCompleted {
			s.importTook = r.took
		}
	}
	c.opts = powercut.CutOptions{KeepPrefix: rng.IntN(2) == 0, TearLastPage: rng.IntN(2) == 0, Seed: rng.Uint64()}
	cutBegan := time.Now()
	if err := s.pfs.Cut(c.opts); err != nil {
		t.Fatalf("cut %d: %v", n, err)
	}
	cutTook := time.Since(cutBegan)
	s.verifySpool(n)
	// The next processes run either profile, on the spool whichever ran
	// before left: an operator may switch, and each profile has its own
	// moments to cut in (the low-wear profile's .active segment, written
	// in place; the low-latency profile's segment per group).
	s.profile = profiles[rng.IntN(len(profiles))]
	s.writeConfig()
	restartBegan := time.Now()
	s.startWriter()
	c.readyAt = s.startReceiver()
	restartTook := time.Since(restartBegan)
	s.cuts = append(s.cuts, c)
	if imp != nil {
		s.importEnded(c.importCompleted)
	}

	// The load goes on a moment after the restart, then stops so the
	// database can be compared with everything handed to the broker.
	sleepRand(rng, 200*time.Millisecond, 800*time.Millisecond)
	cancel()
	wg.Wait()
	if err := errors.Join(s.pub1.Drain(), s.pub0.Drain()); err != nil {
		t.Fatalf("cut %d: publishers: %v", n, err)
	}
	if n == 1 {
		if err := <-corpusErr; err != nil {
			t.Fatalf("corpus: %v", err)
		}
		s.corpusDone = true
	}
	// A last few QoS 1 messages, after the QoS 0 publisher is quiet: the
	// writer consumes in Seq order, so once these are in the database
	// everything the receiver spooled before them is too.
	time.Sleep(100 * time.Millisecond)
	if err := s.pub1.Run(context.Background(), 10, 0); err != nil {
		t.Fatalf("cut %d: publisher: %v", n, err)
	}
	waitBegan := time.Now()
	s.waitQoS1(n)
	checkBegan := time.Now()
	s.checkIncremental(n)
	// The seconds a cut takes, and the part of them the Cut and the checks
	// take, show whether the run slows as the database grows.
	var dbBytes int64
	if fi, err := os.Stat(s.dbPath); err == nil {
		dbBytes = fi.Size()
	}
	t.Logf("cut %d (%s%s, %s, %+v): %d QoS 1 messages acknowledged so far; cycle_s=%.1f cut_s=%.2f restart_s=%.1f wait_s=%.1f check_s=%.2f db_bytes=%d",
		n, c.aim, importNote(c), c.profile, c.opts, s.pub1.Published(),
		time.Since(began).Seconds(), cutTook.Seconds(), restartTook.Seconds(), checkBegan.Sub(waitBegan).Seconds(),
		time.Since(checkBegan).Seconds(), dbBytes)
}

func importNote(c cutRecord) string {
	switch {
	case !c.hit:
		return ", its event not seen: cut late"
	case c.aim != "spool import":
		return ""
	case c.importCompleted:
		return ", the import had finished"
	default:
		return ", mid import"
	}
}

func sleepRand(rng *rand.Rand, lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)+1)))
}

// killAll SIGKILLs the receiver, the writer and the import at once, as a
// power cut stops them, and waits until they are gone.
func (s *system) killAll(imp *exec.Cmd) {
	var wg sync.WaitGroup
	for _, p := range []*harness.Process{s.rx, s.wx} {
		wg.Add(1)
		go func() { defer wg.Done(); p.Kill() }()
	}
	if imp != nil {
		imp.Process.Signal(syscall.SIGKILL)
	}
	wg.Wait()
}

// importBatch is the messages of one capture given to spool import, in
// the order of the file.
var importBatch = 600

// importResult is how an import ended, and when: took is from its start
// to its exit.
type importResult struct {
	err  error
	took time.Duration
}

// startImport writes a capture of new messages from genI and starts
// `meshingest spool import` on it.
func (s *system) startImport(rng *rand.Rand) (*exec.Cmd, chan importResult) {
	s.imports++
	path := filepath.Join(s.work, fmt.Sprintf("import-%d.jsonl", s.imports))
	var b []byte
	n := importBatch/2 + rng.IntN(importBatch)
	for i := 0; i < n; i++ {
		m := s.genI.Next()
		b = capture.AppendLine(b, capture.Message{Topic: m.Topic, Payload: m.Payload, ReceivedAt: time.Now().UTC()})
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
	log, err := os.Create(path + ".log")
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "spool", "import", "--config", s.cfgPath, path)
	cmd.Stdout, cmd.Stderr = log, log
	started := time.Now()
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan importResult, 1)
	go func() {
		err := cmd.Wait()
		done <- importResult{err, time.Since(started)}
		log.Close()
	}()
	return cmd, done
}

// importEnded records the observations an import brought: when the power
// cut it short, each may be in the database once or not at all.
func (s *system) importEnded(completed bool) {
	keys := s.genI.Expected()
	if !completed {
		for _, k := range keys[s.importedKeys:] {
			s.importsCut[k] = true
		}
	}
	s.importedKeys = len(keys)
}

func (s *system) publishCorpus() error {
	opts := paho.NewClientOptions().AddBroker(s.broker.PahoURL()).SetClientID("powercut-corpus").
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(250)
	for i, m := range s.corpus {
		tok := c.Publish(m.Topic, 1, false, m.Payload)
		if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
			return fmt.Errorf("corpus message %d not acknowledged: %v", i, tok.Error())
		}
		time.Sleep(2 * time.Millisecond) // spread over the first cycle
	}
	return nil
}

// verifySpool runs `meshingest spool verify` on the spool as the cut left
// it: a sealed segment was synced before its rename, so damage there is a
// missing sync; an unsealed one may have lost its unsynced tail, which the
// next appender salvages and quarantines.
func (s *system) verifySpool(n int) {
	out, err := exec.Command(s.bin, "spool", "verify", "--json", "--dir", s.spoolDir).Output()
	var rep struct {
		Segments []struct {
			Name, State, Damage string
			OK                  bool
			Damaged             int `json:"damaged_records"`
		}
		Quarantined int
	}
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		if _, serr := os.Stat(s.spoolDir); errors.Is(serr, os.ErrNotExist) && n == 1 {
			return
		}
		s.t.Fatalf("cut %d: spool verify: %v %v:\n%s", n, err, jerr, out)
	}
	s.quarantined = rep.Quarantined
	for _, seg := range rep.Segments {
		if seg.State == spool.StateUnsealed {
			s.verifyDamage += seg.Damaged
			continue
		}
		if !seg.OK {
			s.t.Errorf("cut %d: spool verify: %s segment %s damaged: %s", n, seg.State, seg.Name, seg.Damage)
		}
	}
}

// waitQoS1 waits until every QoS 1 message acknowledged so far has its
// effect in the database (observations and packet counts of the QoS 1
// observers, and the corpus's), or a generous deadline passes; check then
// says what is missing.
func (s *system) waitQoS1(n int) {
	acct := s.gen1.Accounting()
	wantPackets := 0
	for _, v := range acct.PacketCount {
		wantPackets += v
	}
	if s.corpusDone {
		for _, v := range s.corpusCount {
			wantPackets += v
		}
	}
	obs := sortedKeys(s.obs1)
	if s.corpusDone {
		obs = append(obs, sortedKeys(s.corpusObserver)...)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if got, err := s.packetSum(obs); err == nil && got >= wantPackets {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Errorf("cut %d: the QoS 1 messages did not all reach the database within 2 minutes", n)
}

func (s *system) openDB() (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+s.dbPath+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// packetSum is the sum of packet_count over the observers.
func (s *system) packetSum(ids []string) (int, error) {
	db, err := s.openDB()
	if err != nil {
		return 0, err
	}
	defer db.Close()
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := "SELECT coalesce(sum(packet_count), 0) FROM observers WHERE id IN (?" + strings.Repeat(",?", len(ids)-1) + ")"
	var n int
	err = db.QueryRow(q, args...).Scan(&n)
	return n, err
}

// integrityCheck runs PRAGMA integrity_check and foreign_key_check when
// full, PRAGMA quick_check alone otherwise (fullCheckEvery says why).
func (s *system) integrityCheck(full bool) (string, int, error) {
	db, err := s.openDB()
	if err != nil {
		return "", 0, err
	}
	defer db.Close()
	var ic string
	rows, err := db.Query("PRAGMA " + checkPragma(full))
	if err != nil {
		return "", 0, err
	}
	var lines []string
	for rows.Next() {
		if err := rows.Scan(&ic); err != nil {
			rows.Close()
			return "", 0, err
		}
		lines = append(lines, ic)
	}
	rows.Close()
	var fk int
	if !full {
		return strings.Join(lines, "; "), 0, nil
	}
	if err := db.QueryRow("SELECT count(*) FROM pragma_foreign_key_check").Scan(&fk); err != nil {
		return "", 0, err
	}
	return strings.Join(lines, "; "), fk, nil
}

// tally is what one check found.
type tally struct {
	acked, lost, doubled int
}

// check compares the whole database with every stream's accounting, as
// after the run: reading every row, it checks the incremental checks too.
func (s *system) check(n int) tally {
	t := s.t
	ic, fk, err := s.integrityCheck(true)
	if err != nil {
		t.Fatalf("cut %d: open the database: %v", n, err)
	}
	if ic != "ok" {
		t.Errorf("cut %d: integrity_check: %s", n, tailText([]byte(ic), 600))
	}
	if fk != 0 {
		t.Errorf("cut %d: foreign_key_check: %d rows", n, fk)
	}
	st, err := harness.ReadDBState(s.dbPath)
	if err != nil {
		t.Fatalf("cut %d: %v", n, err)
	}
	var out tally

	// QoS 1: exactly once.
	r1 := harness.Reconcile(st.Only(s.obs1), s.gen1.Accounting(), s.gen1.Expected(), nil, false)
	out.acked = int(s.pub1.Published())
	if s.corpusDone {
		out.acked += len(s.corpus)
	}
	out.lost = r1.MessagesLost()
	out.doubled = r1.Doubled()
	if r1.Lost() > 0 || r1.Doubled() > 0 {
		t.Errorf("cut %d: QoS 1 stream: %d messages lost (%d observations, %d adverts), %d doubled; e.g. %v",
			n, r1.MessagesLost(), r1.LostObservations, r1.AdvertCountLost, r1.Doubled(), r1.LostExamples)
	}

	// The real capture: its observations once each, every message
	// counted once in its observer's packet_count.
	if s.corpusDone {
		cs := st.Only(s.corpusObserver)
		if cs.ObservationRows != corpusObservations {
			t.Errorf("cut %d: corpus: %d observation rows, want %d", n, cs.ObservationRows, corpusObservations)
		}
		for id, want := range s.corpusCount {
			got := cs.PacketCount[id]
			out.lost += max(want-got, 0)
			out.doubled += max(got-want, 0)
			if got != want {
				t.Errorf("cut %d: corpus observer %s: packet_count %d, want %d", n, id, got, want)
			}
		}
	}

	// Imports: a finished import exactly once; one the power cut short at
	// most once.
	rI := harness.Reconcile(st.Only(s.obsI), s.genI.Accounting(), s.genI.Expected(), nil, false)
	if rI.Doubled() > 0 {
		t.Errorf("cut %d: imports: %d doubled", n, rI.Doubled())
	}
	out.doubled += rI.Doubled()
	missing := 0
	for _, k := range s.genI.Expected() {
		if !st.HasObservation(k) && !s.importsCut[k] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("cut %d: %d observations of finished imports missing", n, missing)
		out.lost += missing
	}

	// QoS 0: never doubled; lost only in a cut's window.
	r0 := harness.Reconcile(st.Only(s.obs0), s.gen0.Accounting(), s.gen0.Expected(), nil, false)
	if r0.Doubled() > 0 {
		t.Errorf("cut %d: QoS 0 stream: %d doubled", n, r0.Doubled())
	}
	out.doubled += r0.Doubled()
	s.qos0Lost = 0
	for _, k := range s.gen0.Expected() {
		if st.HasObservation(k) {
			continue
		}
		s.qos0Lost++
		at, ok := s.pub0.ObservationPublished(k.Hash, k.ObserverID, k.PathJSON)
		if !ok {
			continue // taken from the generator, never published
		}
		if c, ok := s.windowOf(at); ok {
			s.qos0WorstAge = max(s.qos0WorstAge, c.rxDownAt.Sub(at))
		} else {
			t.Errorf("cut %d: QoS 0 message %d (published %s) lost outside every cut's window", n, k.FirstSeq, at.Format(time.RFC3339Nano))
		}
	}
	return out
}

// windowOf finds the cut whose window holds a QoS 0 message published at
// at: from the group window (and the slack of the way to the receiver)
// before the receiver died to the new receiver's subscription. The group
// window is the low-wear profile's (DefaultGroupWindow, 1 s), which also
// covers the low-latency profile's shorter one (MinGroupInterval).
func (s *system) windowOf(at time.Time) (cutRecord, bool) {
	for _, c := range s.cuts {
		if !at.Before(c.rxDownAt.Add(-spool.DefaultGroupWindow-qos0Slack)) && !at.After(c.readyAt) {
			return c, true
		}
	}
	return cutRecord{}, false
}

// final checks once more after the last cut, the whole database this
// time, and returns the summary; the incremental check must agree.
func (s *system) final() (acked, lost, doubled int) {
	began := time.Now()
	inc := s.checkIncremental(len(s.cuts))
	mid := time.Now()
	tl := s.check(len(s.cuts))
	// The two durations on the same database are what the incremental
	// check saves a cut.
	s.t.Logf("after the run: the incremental check took check_s=%.2f, the whole-database check whole_check_s=%.2f",
		mid.Sub(began).Seconds(), time.Since(mid).Seconds())
	if inc != tl {
		s.t.Errorf("the incremental check found %+v, the whole database %+v", inc, tl)
	}
	return tl.acked, tl.lost, tl.doubled
}

func tailText(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
