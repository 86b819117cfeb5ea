// Package receiver subscribes to the configured MQTT brokers and hands every
// message, with its metadata, to the spool — the step where a message
// becomes safe. It is `meshingest receive`.
//
// The rules it is built around (docs/reference/measured.md):
//
//   - paho's message handler never waits on disk or on the network: it
//     calls spool.Appender.Append, which never blocks, and returns;
//   - a QoS 1 message is acknowledged only once the spool reports the group
//     holding it fsynced, from a per-connection goroutine, in receive order;
//   - when the spool refuses a message, QoS 0 is dropped and counted, QoS 1
//     is left unacknowledged with the broker, and the source reconnects
//     later so the broker redelivers it;
//   - each source has its own connection loop, so an unreachable broker
//     never delays the others.
package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// Spool is the durable queue messages are handed to; *spool.Appender
// implements it. Append must never block on disk.
type Spool interface {
	Append(rec spool.Record, done func(error)) error
	Stats() spool.AppenderStats
	Close() error
}

// Options configure a Receiver.
type Options struct {
	// Sources are the brokers to subscribe to (shared.Config.MQTTSources).
	Sources []shared.Source
	// Spool receives every message. The receiver closes it on shutdown,
	// between stopping intake and disconnecting, so QoS 1 acknowledgements
	// for the last group still reach the broker.
	Spool Spool
	// MaxPayloadBytes is the spool's payload limit (spool.maxPayloadBytes;
	// zero means spool.DefaultMaxPayloadBytes). The receiver enforces it on
	// each broker connection, before paho reads a message into memory: a
	// larger message is discarded as it streams in and counted as an
	// "oversized" drop.
	MaxPayloadBytes int
	// StatsFile is rewritten every second (shared.Config.Receiver.StatsFile).
	StatsFile string
	// Instance is the name of this receiver among several on one
	// configuration (receive --instance): it becomes part of every MQTT
	// client id, so the instances do not take each other's sessions. ""
	// for a single receiver (ids as before).
	Instance string
	Log      zerolog.Logger
	// Notifier sends sd_notify READY, WATCHDOG and STATUS; nil sends nothing.
	Notifier *shared.Notifier
	// Registry, when set, gets the receiver's Prometheus metrics.
	Registry *prometheus.Registry
	// CloseTimeout bounds the spool's final commit on shutdown (default
	// 3 s), so a stalled disk cannot keep the process from exiting.
	CloseTimeout time.Duration
	// StuckAfter is how long the spool may settle nothing while records
	// wait before the systemd watchdog is no longer petted (default 5 s:
	// several group windows; an fsync that long is a sick disk).
	StuckAfter time.Duration
}

// progress counts records handed to the spool and records it has settled
// (written or failed). Appends pending with nothing settled for a while
// mean the spool is stuck: that is what the watchdog vouches for.
type progress struct {
	appended atomic.Int64
	settled  atomic.Int64
	// failing is set when the last record the spool settled did not reach
	// disk, and cleared by the next that does; failure is why.
	failing atomic.Bool
	failure atomic.Pointer[string]
}

func (p *progress) settle(err error) {
	p.settled.Add(1)
	if err == nil {
		if p.failing.Load() {
			p.failing.Store(false)
		}
		return
	}
	msg := err.Error()
	p.failure.Store(&msg)
	p.failing.Store(true)
}

// stall tells a spool that settles nothing while records wait: that is
// what the watchdog and /-/healthy vouch for.
type stall struct {
	mu           sync.Mutex
	lastSettled  int64
	lastProgress time.Time
}

// check returns how many records wait and for how long nothing was
// settled; records legitimately wait up to a group window, so only a
// wait past StuckAfter is a stall.
func (st *stall) check(p *progress, now time.Time) (pending int64, still time.Duration) {
	settled := p.settled.Load()
	pending = p.appended.Load() - settled
	st.mu.Lock()
	defer st.mu.Unlock()
	if pending <= 0 || settled != st.lastSettled || st.lastProgress.IsZero() {
		st.lastProgress = now
	}
	st.lastSettled = settled
	return pending, now.Sub(st.lastProgress)
}

// Receiver runs the sources of one process.
type Receiver struct {
	opts     Options
	log      zerolog.Logger
	notifier *shared.Notifier
	progress progress
	stall    stall
	started  time.Time
	// loopTick is when the stats loop last ran (Unix ns; 0 before Run).
	loopTick atomic.Int64

	mu       sync.Mutex
	closing  bool
	sources  map[string]*source
	statuses map[string]*sourceStatus // by name; outlive reloads that change a source

	statsErr *shared.Throttle
	ready    readiness
	// statsKey is the last stats file written, without its sample time,
	// and statsAt when; only writeStats touches them, and its calls never
	// overlap (before the stats loop starts, in it, after it ended).
	statsKey []byte
	statsAt  time.Time
}

// statsHeartbeat is the longest the stats file goes unwritten while no
// figure changes: well inside the 5 s after which the writer counts the
// receiver as gone (shared.ReadReceiverSnapshot's maxAge).
const statsHeartbeat = 2 * time.Second

// readiness is whether the receiver can do its job: every source has tried
// to connect once, and the spool can take a record. systemd gets READY=1
// the first time both hold; after that, a spool that can take nothing (its
// byte cap or free-disk floor reached) shows as NOT READY in the status
// line, the stats file and the metrics, with an error logged once a minute.
type readiness struct {
	mu       sync.Mutex
	tried    bool      // every source has made its first attempt
	notified bool      // READY=1 was sent
	blocked  string    // why the spool takes nothing; "" when it can
	loggedAt time.Time // last "cannot append" error
	remade   uint64    // the spool's folders_remade last logged
}

// New checks every source and prepares the receiver; nothing connects
// before Run.
func New(opts Options) (*Receiver, error) {
	if opts.Spool == nil {
		return nil, errors.New("receiver: no spool")
	}
	if opts.StatsFile == "" {
		return nil, errors.New("receiver: no stats file path")
	}
	if opts.Notifier == nil {
		opts.Notifier = &shared.Notifier{}
	}
	if opts.MaxPayloadBytes <= 0 {
		opts.MaxPayloadBytes = spool.DefaultMaxPayloadBytes
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 3 * time.Second
	}
	if opts.StuckAfter <= 0 {
		opts.StuckAfter = 5 * time.Second
	}
	sources, err := checkSources(opts.Sources)
	if err != nil {
		return nil, err
	}
	opts.Sources = sources
	r := &Receiver{
		opts:     opts,
		log:      opts.Log,
		notifier: opts.Notifier,
		sources:  map[string]*source{},
		statuses: map[string]*sourceStatus{},
		statsErr: shared.NewThrottle(time.Minute),
		started:  time.Now(),
	}
	if opts.Registry != nil {
		if err := opts.Registry.Register(newCollector(r)); err != nil {
			return nil, fmt.Errorf("receiver metrics: %w", err)
		}
	}
	return r, nil
}

// checkSources validates sources and fills the defaults shared.LoadConfig
// would (a source built in code may lack them), in a copy.
func checkSources(sources []shared.Source) ([]shared.Source, error) {
	if len(sources) == 0 {
		return nil, errors.New("no MQTT source configured: set mqttSources (or mqtt.broker, or MQTT_BROKER)")
	}
	out := make([]shared.Source, len(sources))
	names := map[string]bool{}
	for i, src := range sources {
		if src.Name == "" {
			src.Name = fmt.Sprintf("source%d", i+1)
		}
		if names[src.Name] {
			return nil, fmt.Errorf("mqttSources[%d]: the name %q is used twice", i, src.Name)
		}
		names[src.Name] = true
		if len(src.Topics) == 0 {
			src.Topics = []string{shared.DefaultTopic}
		}
		if src.QoS != 0 && src.QoS != 1 {
			return nil, fmt.Errorf("mqttSources[%d].qos: %d is not supported; use 0 or 1", i, src.QoS)
		}
		if _, err := parseBroker(src); err != nil {
			return nil, fmt.Errorf("mqttSources[%d].broker: %w", i, err)
		}
		out[i] = src
	}
	return out, nil
}

// Run connects every source and runs until ctx ends, then shuts down: it
// stops intake, closes the spool (its last group is committed and the
// active segment sealed), lets the acknowledgements of that group go out,
// and disconnects. It returns nil after a clean shutdown.
func (r *Receiver) Run(ctx context.Context) error {
	r.mu.Lock()
	var firsts []chan struct{}
	for _, cfg := range r.opts.Sources {
		s := r.startSourceLocked(cfg)
		firsts = append(firsts, s.firstAttempt)
	}
	r.mu.Unlock()

	r.writeStats(time.Now())
	quit := make(chan struct{})
	var loops sync.WaitGroup
	loops.Add(1)
	go func() { defer loops.Done(); r.statsLoop(quit) }()
	if iv := shared.WatchdogInterval(); iv > 0 {
		loops.Add(1)
		go func() { defer loops.Done(); r.watchdogLoop(quit, iv) }()
	}

	// READY once every source has tried once, connected or not.
	for _, f := range firsts {
		select {
		case <-f:
		case <-ctx.Done():
		}
	}
	if ctx.Err() == nil {
		r.ready.mu.Lock()
		r.ready.tried = true
		r.ready.mu.Unlock()
		r.updateReadiness(time.Now())
	}
	<-ctx.Done()

	err := r.shutdown()
	close(quit)
	loops.Wait()
	r.writeStats(time.Now()) // the final counters
	return err
}

func (r *Receiver) startSourceLocked(cfg shared.Source) *source {
	st := r.statuses[cfg.Name]
	if st == nil {
		st = newSourceStatus(cfg.Name)
		r.statuses[cfg.Name] = st
	}
	s, err := newSource(cfg, r.opts.Instance, st, r.opts.Spool, r.opts.MaxPayloadBytes, &r.progress, r.log)
	if err != nil { // checked by checkSources already
		panic(err)
	}
	r.sources[cfg.Name] = s
	s.start()
	return s
}

func (r *Receiver) shutdown() error {
	start := time.Now()
	r.notifier.Stopping()
	r.mu.Lock()
	r.closing = true
	sources := make([]*source, 0, len(r.sources))
	for _, s := range r.sources {
		sources = append(sources, s)
	}
	r.mu.Unlock()
	r.log.Info().Msg("stopping: intake closed, committing the spool")

	for _, s := range sources {
		s.stopIntake()
	}
	closed := make(chan error, 1)
	go func() { closed <- r.opts.Spool.Close() }()
	var closeErr error
	select {
	case closeErr = <-closed:
	case <-time.After(r.opts.CloseTimeout):
		closeErr = fmt.Errorf("spool close did not finish within %s (disk stalled?); records not yet committed are lost (QoS 1 ones will be redelivered)", r.opts.CloseTimeout)
	}
	// Once the spool is closed every record is settled and the last acks
	// are queued; if it did not close, they never will be: do not wait.
	drain := drainTimeout
	if closeErr != nil {
		drain = 0
	}
	var wg sync.WaitGroup
	for _, s := range sources {
		wg.Add(1)
		go func() { defer wg.Done(); s.close(drain) }()
	}
	wg.Wait()
	if closeErr != nil {
		r.log.Error().Err(closeErr).Msg("spool close failed")
		return closeErr
	}
	r.log.Info().Int64("took_ms", time.Since(start).Milliseconds()).Msg("stopped cleanly")
	return nil
}

// Reload applies a new list of sources: a removed source is stopped, a new
// one started, a changed one restarted (its counters kept), and the others
// are left untouched and connected. The whole list is checked first; an
// invalid one changes nothing.
func (r *Receiver) Reload(sources []shared.Source) error {
	sources, err := checkSources(sources)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return errors.New("receiver is shutting down")
	}
	want := map[string]shared.Source{}
	for _, s := range sources {
		want[s.Name] = s
	}
	var stop []*source
	var added, changed, removed []string
	for name, s := range r.sources {
		cfg, keep := want[name]
		switch {
		case !keep:
			removed = append(removed, name)
		case !reflect.DeepEqual(cfg, s.cfg):
			changed = append(changed, name)
		default:
			continue
		}
		stop = append(stop, s)
		delete(r.sources, name)
	}
	for _, s := range stop {
		s.stopIntake()
	}
	r.mu.Unlock()

	// Close outside the lock: a closing connection waits for its last
	// acknowledgements.
	var wg sync.WaitGroup
	for _, s := range stop {
		wg.Add(1)
		go func() { defer wg.Done(); s.close(drainTimeout) }()
	}
	wg.Wait()

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return errors.New("receiver is shutting down")
	}
	for _, name := range removed {
		delete(r.statuses, name)
	}
	for _, cfg := range sources {
		if _, running := r.sources[cfg.Name]; running {
			continue
		}
		if !contains(changed, cfg.Name) {
			added = append(added, cfg.Name)
		}
		r.startSourceLocked(cfg)
	}
	sort.Strings(added)
	sort.Strings(changed)
	sort.Strings(removed)
	r.log.Info().Strs("added", added).Strs("changed", changed).Strs("removed", removed).Int("sources", len(r.sources)).Msg("sources reloaded")
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (r *Receiver) statsLoop(quit <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastStatus := ""
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			r.loopTick.Store(now.UnixNano())
			r.stall.check(&r.progress, now)
			r.updateReadiness(now)
			r.writeStats(now)
			if line := r.statusLine(); line != lastStatus {
				r.notifier.Status(line)
				lastStatus = line
			}
		}
	}
}

// watchdogLoop pets the systemd watchdog only while the spool makes
// progress (stall.check); a spool stuck longer than StuckAfter lets systemd
// restart us.
func (r *Receiver) watchdogLoop(quit <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	stuck := false
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			pending, still := r.stall.check(&r.progress, now)
			if still <= r.opts.StuckAfter {
				r.notifier.Watchdog()
				stuck = false
				continue
			}
			if !stuck {
				r.log.Error().Int64("pending", pending).Int64("no_progress_ms", still.Milliseconds()).
					Msg("the spool settles nothing while records wait; no longer petting the systemd watchdog")
				stuck = true
			}
		}
	}
}

// loopStale is how long the stats loop, which runs every second, may be
// silent before the receiver reports itself unhealthy.
const loopStale = 10 * time.Second

// Health is the receiver's /-/healthy and /-/ready: healthy while its loop
// runs and the spool settles what it is given; ready as Snapshot says.
func (r *Receiver) Health() shared.Health {
	return shared.Health{
		Healthy: func() string { return r.unhealthy(time.Now()) },
		Ready:   func() string { return r.notReady(time.Now()) },
	}
}

// unhealthy is why the receiver is not healthy, "" when it is.
func (r *Receiver) unhealthy(now time.Time) string {
	if t := r.loopTick.Load(); t != 0 && now.Sub(time.Unix(0, t)) > loopStale {
		return fmt.Sprintf("the receiver's loop last ran %s ago", now.Sub(time.Unix(0, t)).Round(time.Second))
	}
	if pending, still := r.stall.check(&r.progress, now); still > r.opts.StuckAfter {
		return fmt.Sprintf("the spool settled nothing for %s while %d records wait (a stalled disk?)", still.Round(time.Second), pending)
	}
	return ""
}

// updateReadiness asks the spool whether it can take a record, sends
// READY=1 the first time the receiver is ready (notReady), and logs an
// error (once a minute) while the spool can take nothing: QoS 0 messages
// are then dropped and QoS 1 left with the broker until the writer or the
// operator frees space.
func (r *Receiver) updateReadiness(now time.Time) {
	st := r.opts.Spool.Stats()
	rd := &r.ready
	rd.mu.Lock()
	rd.blocked = st.Blocked
	rd.mu.Unlock()
	reason := r.notReady(now)
	rd.mu.Lock()
	notify := rd.tried && !rd.notified && reason == ""
	rd.notified = rd.notified || notify
	logIt := rd.tried && st.Blocked != "" && now.Sub(rd.loggedAt) >= warnEvery
	if logIt {
		rd.loggedAt = now
	}
	wasReady := rd.notified
	remade := st.FoldersRemade > rd.remade
	rd.remade = st.FoldersRemade
	rd.mu.Unlock()
	if remade {
		r.log.Warn().Uint64("folders_remade", st.FoldersRemade).Uint64("records_lost_with_folder", st.RecordsLostWithFolder).
			Msg("the spool folder was deleted under the receiver: the spool made it again as a new spool and goes on appending there. " +
				"Its active segment and the group being written went into the new folder; the sealed records the writer had not drained went with the old one (records_lost_with_folder, an upper bound, since the start)")
	}
	if notify {
		r.notifier.Ready(r.statusLine())
		r.log.Info().Int("sources", len(r.opts.Sources)).Msg("receiver ready")
	}
	if logIt {
		r.log.Error().Str("reason", st.Blocked).Int64("disk_free_bytes", st.DiskFree).
			Int64("min_free_bytes", st.MinFreeBytes).Int64("spool_bytes", st.SpoolBytes).Bool("reported_ready_before", wasReady).
			Msg("NOT READY: the spool can take no message; QoS 0 messages are dropped (counted) and QoS 1 left with the broker until the writer drains the spool or disk space is freed (spool.maxBytes, spool.minFreeBytes)")
	}
}

// notReady is why the receiver is not ready, "" when it is: it is ready
// once every source has tried to connect, while the spool can take a
// record and the last group it wrote reached disk, and while every source
// is connected or retrying within its back-off.
func (r *Receiver) notReady(now time.Time) string {
	r.ready.mu.Lock()
	blocked, tried := r.ready.blocked, r.ready.tried
	r.ready.mu.Unlock()
	switch {
	case blocked != "":
		return "the spool can take no message: " + blocked
	case !tried:
		return "starting: not every source has tried to connect"
	case r.progress.failing.Load():
		return "spool writes fail: " + *r.progress.failure.Load()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.sources))
	for name := range r.sources {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if late := r.sources[name].overdue(now); late > overdueAfter {
			return fmt.Sprintf("source %s: its connection loop is %s overdue (stuck connecting?)", name, late.Round(time.Second))
		}
	}
	return ""
}

// statusLine is the one line systemctl status shows.
func (r *Receiver) statusLine() string {
	snap := r.Snapshot(time.Now())
	up := 0
	for _, s := range snap.SourceStatuses {
		if s.Connected {
			up++
		}
	}
	var dropped int64
	for _, c := range snap.Sources {
		for _, n := range c.Dropped {
			dropped += n
		}
	}
	line := fmt.Sprintf("%d/%d sources connected; %d messages spooled, %d dropped", up, len(snap.SourceStatuses), snap.Durable, dropped)
	r.ready.mu.Lock()
	tried := r.ready.tried
	r.ready.mu.Unlock()
	if !snap.Ready && (tried || snap.Spool.Blocked != "") {
		line = "NOT READY (" + snap.NotReady + "); " + line
	}
	if !snap.Healthy {
		line = "UNHEALTHY (" + snap.Unhealthy + "); " + line
	}
	return line
}

// writeStats rewrites the stats file when a figure changed since the last
// write, or statsHeartbeat after it: an idle receiver does not rewrite
// (and, on ext4, flush) the same file every second.
func (r *Receiver) writeStats(now time.Time) {
	snap := r.Snapshot(now)
	key := snap
	key.SampledAt = ""
	key.Spool.DiskFree >>= 20 // other programs move it all the time
	b, err := json.Marshal(key)
	if err == nil && bytes.Equal(b, r.statsKey) && now.Sub(r.statsAt) < statsHeartbeat {
		return
	}
	r.statsKey, r.statsAt = b, now
	if err := shared.WriteJSONAtomic(r.opts.StatsFile, snap); err != nil {
		if ok, n := r.statsErr.Allow("stats", now); ok {
			r.log.Error().Err(err).Int("suppressed", n).Msg("cannot write the receiver stats file")
		}
	}
}

// Snapshot is the receiver's stats file: the fields the writer merges into
// CoreScope's stats file (shared.ReceiverSnapshot), then the receiver's own.
type Snapshot struct {
	shared.ReceiverSnapshot
	StartedAt string `json:"startedAt"`
	// Sources are per-source counters beyond CoreScope's status.
	Sources []SourceCounters `json:"sources"`
	// Appended counts records the spool accepted; Durable those it
	// reported on disk. Pending is the difference not yet settled.
	Appended int64 `json:"appended"`
	Durable  int64 `json:"durable"`
	Pending  int64 `json:"pending"`
	// Spool is the appender's own view: bytes, groups, fsync latency,
	// depth.
	Spool spool.AppenderStats `json:"spool"`
	// HealthState is what /-/healthy and /-/ready answer (Health):
	// Ready is false while starting, while the spool can take no message
	// or its writes fail, and NotReady says why.
	shared.HealthState
}

// Snapshot collects the current counters.
func (r *Receiver) Snapshot(now time.Time) Snapshot {
	r.mu.Lock()
	names := make([]string, 0, len(r.statuses))
	for name := range r.statuses {
		names = append(names, name)
	}
	sort.Strings(names)
	statuses := make([]*sourceStatus, len(names))
	for i, name := range names {
		statuses[i] = r.statuses[name]
	}
	r.mu.Unlock()

	snap := Snapshot{
		ReceiverSnapshot: shared.ReceiverSnapshot{
			SampledAt:      now.UTC().Format(time.RFC3339Nano),
			PID:            os.Getpid(),
			SourceStatuses: make([]shared.SourceStatus, 0, len(statuses)),
			SourceLiveness: make(map[string]shared.SourceLiveness, len(statuses)),
		},
		StartedAt: r.started.UTC().Format(time.RFC3339),
		Sources:   make([]SourceCounters, 0, len(statuses)),
		Spool:     r.opts.Spool.Stats(),
	}
	for _, st := range statuses {
		status, live, counters := st.snapshot(now)
		snap.SourceStatuses = append(snap.SourceStatuses, status)
		snap.SourceLiveness[status.Name] = live
		snap.Sources = append(snap.Sources, counters)
		snap.Appended += counters.Appended
		snap.Durable += counters.Durable
	}
	snap.Pending = r.progress.appended.Load() - r.progress.settled.Load()
	snap.HealthState = r.Health().State()
	return snap
}
