package harness

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config sizes a harness run. FullConfig is the issue's; ShortConfig is the
// version that runs inside `go test` in about two minutes.
type Config struct {
	// Binary is the meshingest executable under test.
	Binary string
	// WorkDir holds one folder per scenario run; it is left for inspection.
	WorkDir string
	Seed    uint64
	// Rate is the steady load, messages per second [250].
	Rate float64
	// Steady is how long the steady load runs before the burst [10 min].
	Steady time.Duration
	// Burst is how many messages are published as fast as possible after
	// the steady phase [50,000].
	Burst int
	// ReceiverKills, QoS0Kills, WriterKills are SIGKILLs per scenario;
	// KillGap is the mean time between two (uniform in [0.5, 1.5]×).
	ReceiverKills, QoS0Kills, WriterKills int
	KillGap                               time.Duration
	// Lock is how long a second process holds BEGIN EXCLUSIVE [10 min];
	// the load runs LockLead before it and LockTail after it.
	Lock, LockLead, LockTail time.Duration
	// FaultLoad is how long the load runs around a one-off fault (broker
	// restart, spool cap, damaged segments, database swap) [60 s].
	FaultLoad time.Duration
	// ActiveActive is how long the active-active kill scenario kills one
	// receiver or the other [5 min]; ReceiverOutage how long its outage
	// scenario keeps one frozen [10 min]; CostMessages how many
	// publications its cost scenario catches up on [30,000].
	ActiveActive, ReceiverOutage time.Duration
	CostMessages                 int
	// Strace counts the fsyncs of both processes with strace during the
	// steady phase (an independent check of the stats files).
	Strace bool
	// HugePublishes are the huge-publish scenario's oversized publishes,
	// streamed in this order: the sizes take about 800 MB through
	// mosquitto, the short run's 200 MB.
	HugePublishes []HugePublish
	// Profile is the spool.profile the processes run with ("" is the
	// product's default, low-latency); the steady scenario judges its
	// figures by the profile's limits.
	Profile string
	// Poll is how often the latency poller reads the database: the
	// latency figures' resolution [100 ms].
	Poll time.Duration
	// Only, when set, runs just these scenarios (by name).
	Only []string
	// Progress gets one line per step; nil means none.
	Progress io.Writer
}

// FullConfig is the run the "done when" is judged on.
func FullConfig() Config {
	return Config{
		Seed: 1, Rate: 250, Steady: 10 * time.Minute, Burst: 50_000,
		ReceiverKills: 100, QoS0Kills: 100, WriterKills: 100, KillGap: 2 * time.Second,
		Lock: 10 * time.Minute, LockLead: 15 * time.Second, LockTail: 45 * time.Second,
		FaultLoad: 60 * time.Second, Strace: true,
		HugePublishes: []HugePublish{{0, 100e6}, {1, 100e6}, {0, 100e6}, {1, 260e6}, {0, 260e6}},
		ActiveActive:  5 * time.Minute, ReceiverOutage: 10 * time.Minute, CostMessages: 30_000,
	}
}

// ShortConfig is the fault runs in small: fewer kills, a 30 s lock.
func ShortConfig() Config {
	return Config{
		Seed: 1, Rate: 250, Steady: 15 * time.Second, Burst: 5_000,
		ReceiverKills: 5, QoS0Kills: 3, WriterKills: 5, KillGap: time.Second,
		Lock: 30 * time.Second, LockLead: 5 * time.Second, LockTail: 10 * time.Second,
		FaultLoad:     10 * time.Second,
		HugePublishes: []HugePublish{{0, 100e6}, {1, 100e6}},
		ActiveActive:  20 * time.Second, ReceiverOutage: 20 * time.Second, CostMessages: 5_000,
	}
}

// Scenario is one named run.
type Scenario struct {
	Name        string
	Description string
	run         func(ctx context.Context, s *Suite, r *Result) error
}

// Scenarios lists every scenario in the order a suite runs them.
func Scenarios() []Scenario {
	return append([]Scenario{
		{"steady", "steady load, then a burst, nothing disturbed: latency, fsyncs, disk bytes, CPU, RSS", runSteady},
		{"receiver-kill-qos1", "SIGKILL the receiver at random moments under load, QoS 1: nothing may be lost", runReceiverKillsQoS1},
		{"receiver-kill-qos0", "the same at QoS 0: loss per kill against the group window", runReceiverKillsQoS0},
		{"writer-kill", "SIGKILL the writer at random moments under load", runWriterKills},
		{"db-lock", "a second process holds BEGIN EXCLUSIVE on the database under load", runDBLock},
		{"broker-restart", "mosquitto restarted under load (QoS 1, persistent session)", runBrokerRestart},
		{"spool-cap", "the spool byte cap reached while the writer is stopped (QoS 0): drops counted", runSpoolCap},
		{"segment-damage", "a sealed segment truncated and another bit-flipped before the writer reads them", runSegmentDamage},
		{"vacuum-swap", "the database swapped for a VACUUM INTO copy while the writer is stopped", runVacuumSwap},
		{"active-active-kill", "two receivers at QoS 0, one or the other SIGKILLed every few seconds: nothing lost or doubled", runActiveActiveKills},
		{"active-active-writer-kill", "two receivers at QoS 0, the writer SIGKILLed at random moments: nothing lost or doubled", runActiveActiveWriterKills},
		{"active-active-outage", "two receivers at QoS 0, one frozen for the outage then restarted: its late records apply nothing again", runActiveActiveOutage},
		{"active-active-cost", "writer catch-up on two receivers' copies against one: CPU per publication", runActiveActiveCost},
	}, boundaryScenarios()...)
}

// Suite runs scenarios and keeps the undisturbed reference databases.
type Suite struct {
	Config     Config
	references map[int]*DBState // by number of messages: content does not depend on QoS or rate
	runs       int
}

// NewSuite checks the configuration.
func NewSuite(cfg Config) (*Suite, error) {
	if cfg.Binary == "" {
		return nil, fmt.Errorf("harness: no meshingest binary given")
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("harness: meshingest binary: %w", err)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 250
	}
	if cfg.KillGap <= 0 {
		cfg.KillGap = 2 * time.Second
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, err
	}
	return &Suite{Config: cfg, references: map[int]*DBState{}}, nil
}

// Run runs the selected scenarios one after the other.
func (s *Suite) Run(ctx context.Context) []*Result {
	var out []*Result
	for _, sc := range Scenarios() {
		if len(s.Config.Only) > 0 && !slices.Contains(s.Config.Only, sc.Name) {
			continue
		}
		r := &Result{Name: sc.Name, Description: sc.Description}
		s.progress("== %s: %s", sc.Name, sc.Description)
		start := time.Now()
		if err := sc.run(ctx, s, r); err != nil {
			r.Err = err.Error()
			s.progress("   %s: error: %v", sc.Name, err)
		}
		r.Duration = time.Since(start)
		r.settle()
		s.progress("   %s: %s in %s", sc.Name, r.Verdict(), r.Duration.Round(time.Second))
		out = append(out, r)
		if ctx.Err() != nil {
			break
		}
	}
	return out
}

func (s *Suite) progress(format string, args ...any) {
	if s.Config.Progress != nil {
		fmt.Fprintf(s.Config.Progress, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}

// newEnv starts a fresh environment in its own folder.
func (s *Suite) newEnv(name string, o EnvOptions) (*Env, error) {
	s.runs++
	o.Binary = s.Config.Binary
	o.Dir = filepath.Join(s.Config.WorkDir, fmt.Sprintf("%02d-%s", s.runs, name))
	o.Seed = s.Config.Seed
	if o.PollInterval == 0 {
		o.PollInterval = s.Config.Poll
	}
	if s.Config.Profile != "" {
		sp := map[string]any{"profile": s.Config.Profile}
		for k, v := range o.Spool {
			sp[k] = v
		}
		o.Spool = sp
	}
	os.RemoveAll(o.Dir)
	return NewEnv(o)
}

// reference is the database of an undisturbed run of the first n messages
// of the same stream, published fast (content does not depend on rate).
func (s *Suite) reference(ctx context.Context, n int) (*DBState, error) {
	if st, ok := s.references[n]; ok {
		return st, nil
	}
	s.progress("   reference: an undisturbed run of the same %d messages", n)
	e, err := s.newEnv("reference", EnvOptions{QoS: 1})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	if err := e.Pub.Run(ctx, n, 4000); err != nil {
		return nil, err
	}
	if _, err := e.WaitDrained(ctx, 10*time.Minute, time.Second); err != nil {
		return nil, err
	}
	if err := e.StopWriter(); err != nil {
		return nil, err
	}
	st, err := ReadDBState(e.DBPath)
	if err != nil {
		return nil, err
	}
	rec := Reconcile(st, e.Gen.Accounting(), e.Gen.Expected(), e.WriterDrops(), true)
	if rec.Lost() != 0 || rec.Doubled() != 0 {
		return nil, fmt.Errorf("the undisturbed reference run itself lost %d and doubled %d (see %s)", rec.Lost(), rec.Doubled(), e.Dir)
	}
	s.references[n] = st
	return st, nil
}

// finish drains, stops the writer cleanly, and checks the database against
// the generator's accounting and, when compare is set, against an
// undisturbed run of the same messages.
func (s *Suite) finish(ctx context.Context, e *Env, r *Result, compare, exactDrops bool) error {
	d, err := e.WaitDrained(ctx, 15*time.Minute, 2*time.Second)
	r.figure("drain after the load stopped", d.Round(100*time.Millisecond).String())
	if err != nil {
		r.note("%v", err)
	}
	if err := e.StopWriter(); err != nil {
		r.note("writer stop: %v", err)
	}
	st, err := ReadDBState(e.DBPath)
	if err != nil {
		return err
	}
	r.Rec = Reconcile(st, e.Gen.Accounting(), e.Gen.Expected(), e.WriterDrops(), exactDrops)
	r.Messages = e.Gen.Accounting().Messages
	r.Timeline, r.Started = e.Samples(), e.Started
	_, arrivals := e.Poller.Arrivals()
	r.PublishLag = PublishLag(r.Timeline, arrivals)
	if err := writeTimeline(filepath.Join(e.Dir, "timeline.csv"), r); err != nil {
		r.note("timeline.csv: %v", err)
	}
	r.ReceiverCost, r.WriterCost = e.Receiver.Totals(), e.Writer.Totals()
	r.ReceiverDrops = e.ReceiverDrops()
	r.ReceiverDups = e.ReceiverDuplicates()
	if r.ReceiverDups > 0 {
		r.figure("redelivered (DUP) messages the receiver spooled", fmt.Sprint(r.ReceiverDups))
	}
	r.Dir = e.Dir
	if compare {
		ref, err := s.reference(ctx, r.Messages)
		if err != nil {
			return fmt.Errorf("reference run: %w", err)
		}
		r.Diff = CompareStates(st, ref)
		r.Compared = true
	}
	return nil
}

// killLoop calls kill n times, gap apart on average (uniform in
// [0.5, 1.5]×gap), and records each one's downtime.
func (s *Suite) killLoop(ctx context.Context, n int, seed uint64, kill func() error) (downs []time.Duration, at []time.Time, err error) {
	rng := rand.New(rand.NewPCG(seed, 99))
	gap := s.Config.KillGap
	for i := 0; i < n; i++ {
		wait := time.Duration(float64(gap) * (0.5 + rng.Float64()))
		select {
		case <-ctx.Done():
			return downs, at, ctx.Err()
		case <-time.After(wait):
		}
		t := time.Now()
		if err := kill(); err != nil {
			return downs, at, fmt.Errorf("kill %d: %w", i+1, err)
		}
		at = append(at, t)
		downs = append(downs, time.Since(t))
	}
	return downs, at, nil
}

// writeTimeline saves the per-second samples beside the run's files, for
// looking into a figure after the fact (RSS growth, lag, depth).
func writeTimeline(path string, r *Result) error {
	var b strings.Builder
	b.WriteString("seconds,published,db_observations,publish_lag_s,writer_lag_s,receiver_depth,writer_depth,receiver_fsyncs,writer_commits,receiver_rss,writer_rss,writer_db_state\n")
	for i, s := range r.Timeline {
		lag := 0.0
		if i < len(r.PublishLag) {
			lag = r.PublishLag[i]
		}
		fmt.Fprintf(&b, "%.1f,%d,%d,%.2f,%.2f,%.0f,%.0f,%.0f,%.0f,%d,%d,%s\n", s.At.Sub(r.Started).Seconds(), s.Published, s.DBObservations,
			lag, s.LagSeconds, s.ReceiverDepth, s.WriterDepth, s.ReceiverFsyncs, s.WriterCommits, s.ReceiverRSS, s.WriterRSS, s.WriterDBState)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}
