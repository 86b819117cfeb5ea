package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/tests/loadgen"
)

// EnvOptions configure one environment: a broker, a receiver and a writer
// on fresh files, and the load that feeds them.
type EnvOptions struct {
	// Binary is the meshingest executable run as `receive` and `write`.
	Binary string
	// Dir holds everything: broker state, spool, database, logs.
	Dir string
	// QoS of the publisher and of the receiver's subscription.
	QoS int
	// Seed of the load generator.
	Seed uint64
	// Spool overrides the config's spool section (the spool-cap scenario).
	Spool map[string]any
	// PollInterval is the latency resolution [100 ms].
	PollInterval time.Duration
	// NoWriter leaves the writer stopped at start.
	NoWriter bool
	// Instances, when set, runs one receiver per name (receive
	// --instance) instead of the single one (activeactive.go).
	Instances []string
}

// Env is one running system under test with its load and instruments.
type Env struct {
	Dir, ConfigPath, DBPath, SpoolDir, ReceiverStats, WriterStats string

	Broker *Mosquitto
	// Receiver is the single receiver, or the first instance.
	Receiver *Process
	// Instances are the receiver instances (EnvOptions.Instances).
	Instances []*Instance
	Writer    *Process
	Gen       *loadgen.Generator
	Pub       *Publisher
	Poller    *Poller
	Started   time.Time

	sampler     *sampler
	cancel      context.CancelFunc
	done        chan struct{}
	writerDrops map[string]int64 // summed over finished incarnations
	rxDrops     map[string]int64
	rxDups      int64
}

// NewEnv starts mosquitto, writes the configuration, starts the receiver
// (and the writer unless NoWriter), waits until the receiver is subscribed,
// and connects the publisher.
func NewEnv(o EnvOptions) (*Env, error) {
	if o.PollInterval == 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	e := &Env{
		Dir: o.Dir, ConfigPath: filepath.Join(o.Dir, "config.json"), DBPath: filepath.Join(o.Dir, "meshcore.db"),
		SpoolDir: filepath.Join(o.Dir, "spool"), ReceiverStats: filepath.Join(o.Dir, "receiver-stats.json"),
		WriterStats: filepath.Join(o.Dir, "writer-stats.json"), done: make(chan struct{}),
		writerDrops: map[string]int64{}, rxDrops: map[string]int64{},
	}
	e.Gen = loadgen.New(loadgen.Options{Seed: o.Seed})
	brokerDir := filepath.Join(o.Dir, "broker")
	if err := os.MkdirAll(brokerDir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if e.Broker, err = StartMosquitto(brokerDir); err != nil {
		return nil, err
	}
	if err := e.writeConfig(o); err != nil {
		e.Broker.Stop()
		return nil, err
	}
	e.Receiver = NewProcess("receiver", o.Binary, filepath.Join(o.Dir, "receiver.log"), "receive", "--config", e.ConfigPath)
	e.Writer = NewProcess("writer", o.Binary, filepath.Join(o.Dir, "writer.log"), "write", "--config", e.ConfigPath)
	if len(o.Instances) > 0 {
		if err := e.startInstances(o); err != nil {
			e.Close()
			return nil, err
		}
	} else if err := e.StartReceiver(); err != nil {
		e.Broker.Stop()
		return nil, err
	}
	if !o.NoWriter {
		if err := e.Writer.Start(); err != nil {
			e.Close()
			return nil, err
		}
	}
	if e.Pub, err = NewPublisher(e.Broker.PahoURL(), byte(o.QoS), e.Gen); err != nil {
		e.Close()
		return nil, err
	}
	e.Poller = newPoller(e.DBPath, e.Pub, o.PollInterval)
	e.sampler = &sampler{env: e}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.Started = time.Now()
	go func() {
		defer close(e.done)
		go e.Poller.Run(ctx)
		e.sampler.Run(ctx)
	}()
	return e, nil
}

func (e *Env) writeConfig(o EnvOptions) error {
	keys := e.Gen.Keys()
	cfg := map[string]any{
		"dbPath":   e.DBPath,
		"spoolDir": e.SpoolDir,
		"logLevel": "info",
		"mqttSources": []map[string]any{{
			"name": "load", "broker": e.Broker.URL(), "qos": o.QoS, "clientId": "harness-receiver",
		}},
		"channelKeys":  keys.ChannelKeys,
		"hashChannels": keys.HashChannels,
		"hashRegions":  keys.HashRegions,
		"receiver":     map[string]any{"statsFile": e.ReceiverStats},
		"writer":       map[string]any{"statsFile": e.WriterStats},
	}
	if o.Spool != nil {
		cfg["spool"] = o.Spool
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(e.ConfigPath, b, 0o600)
}

// StartReceiver starts a receiver incarnation and waits until its stats
// file says its source is connected (at most 10 s).
func (e *Env) StartReceiver() error {
	before := readStats(e.ReceiverStats).str("sampledAt")
	if err := e.Receiver.Start(); err != nil {
		return err
	}
	pid := e.Receiver.PID()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s := readStats(e.ReceiverStats)
		if s != nil && s.str("sampledAt") != before && int(s.num("pid")) == pid && receiverConnected(s) {
			return nil
		}
		if exited, how := e.Receiver.Exited(); exited {
			return fmt.Errorf("receiver exited at start (%s); see %s", how, e.Receiver.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.Receiver.Kill() // a receiver that never connected is not left behind
	log, _ := os.ReadFile(e.Receiver.log)
	return fmt.Errorf("receiver (pid %d) not connected within 10 s; the end of %s:\n%s", pid, e.Receiver.log, tail(log, 1500))
}

// ReceiverConnected reports whether the receiver stats file at path was
// written by the process pid and says one of its sources is connected.
func ReceiverConnected(path string, pid int) bool {
	s := readStats(path)
	return s != nil && int(s.num("pid")) == pid && receiverConnected(s)
}

// ReceiverNextSeq is the spool's next Seq in the receiver stats file at
// path, and when the file was written (zero when it cannot be read).
func ReceiverNextSeq(path string) (next uint64, sampledAt time.Time) {
	s := readStats(path)
	at, _ := time.Parse(time.RFC3339Nano, s.str("sampledAt"))
	return uint64(s.num("spool", "next_seq")), at
}

func receiverConnected(s stats) bool {
	list, _ := s["source_statuses"].([]any)
	for _, v := range list {
		if m, ok := v.(map[string]any); ok && m["connected"] == true {
			return true
		}
	}
	return false
}

// KillReceiver SIGKILLs the receiver and starts a new one.
func (e *Env) KillReceiver() error {
	e.bankReceiver()
	if err := e.Receiver.Kill(); err != nil {
		return err
	}
	return e.StartReceiver()
}

// KillWriter SIGKILLs the writer and starts a new one.
func (e *Env) KillWriter() error {
	if err := e.Writer.Kill(); err != nil {
		return err
	}
	e.bankWriter()
	return e.Writer.Start()
}

// StopWriter stops the writer with SIGTERM (it finishes its batch).
func (e *Env) StopWriter() error {
	err := e.Writer.Stop(10 * time.Second)
	e.bankWriter()
	return err
}

// bankWriter adds the last stats file of a finished writer incarnation to
// the drop totals. A SIGKILLed writer's file is up to a second old, so
// drops it committed in its last second are missing from the totals: the
// report treats these counts as a lower bound after writer kills.
func (e *Env) bankWriter() {
	s := readStats(e.WriterStats)
	for k, v := range s.obj("meshingest", "drops") {
		f, _ := v.(float64)
		e.writerDrops[k] += int64(f)
	}
	os.Remove(e.WriterStats) // the next incarnation starts its counters at 0
}

func (e *Env) bankReceiver() {
	s := readStats(e.ReceiverStats)
	for k, v := range receiverDrops(s) {
		e.rxDrops[k] += v
	}
	e.rxDups += receiverDuplicates(s)
}

// receiverDuplicates sums the messages the broker delivered with the DUP
// flag (QoS 1 redeliveries), as the receiver counts them.
func receiverDuplicates(s stats) int64 {
	var n int64
	list, _ := s["sources"].([]any)
	for _, v := range list {
		m, _ := v.(map[string]any)
		f, _ := m["duplicates"].(float64)
		n += int64(f)
	}
	return n
}

// ReceiverDuplicates are the redelivered (DUP) messages the receiver
// spooled, summed over its incarnations (a killed one's last second is
// missing).
func (e *Env) ReceiverDuplicates() int64 {
	return e.rxDups + receiverDuplicates(readStats(e.ReceiverStats))
}

func receiverDrops(s stats) map[string]int64 {
	out := map[string]int64{}
	list, _ := s["sources"].([]any)
	for _, v := range list {
		m, _ := v.(map[string]any)
		d, _ := m["dropped"].(map[string]any)
		for k, n := range d {
			f, _ := n.(float64)
			out[k] += int64(f)
		}
	}
	return out
}

// WriterDrops are the writer's drop counters summed over its incarnations.
func (e *Env) WriterDrops() map[string]int64 {
	out := map[string]int64{}
	for k, v := range e.writerDrops {
		out[k] = v
	}
	if e.Writer.PID() != 0 {
		for k, v := range readStats(e.WriterStats).obj("meshingest", "drops") {
			f, _ := v.(float64)
			out[k] += int64(f)
		}
	}
	return out
}

// ReceiverDrops are the receiver's drop counters summed over incarnations.
func (e *Env) ReceiverDrops() map[string]int64 {
	out := map[string]int64{}
	for k, v := range e.rxDrops {
		out[k] = v
	}
	if len(e.Instances) > 0 {
		for _, in := range e.Instances {
			for k, v := range receiverDrops(readStats(in.StatsFile)) {
				out[k] += v
			}
		}
		return out
	}
	for k, v := range receiverDrops(readStats(e.ReceiverStats)) {
		out[k] += v
	}
	return out
}

// WaitDrained waits, once the publisher is done, until the writer has
// consumed every record the receiver spooled (its position reaches the
// receiver's last Seq, nothing queued in the receiver's memory) and then
// until the writer's stats file has been rewritten after that, so its
// counters cover everything, and the jobs have derived again what the
// nodes they learned change (neighbor_edges and resolved_path are final).
// Records still arriving (QoS 1 redeliveries) move the target, so the
// condition must hold twice, quiet apart.
func (e *Env) WaitDrained(ctx context.Context, timeout, quiet time.Duration) (time.Duration, error) {
	if len(e.Instances) > 0 {
		return e.waitInstancesDrained(ctx, timeout, quiet)
	}
	start := time.Now()
	var settledAt time.Time
	var settledSeq float64
	for {
		rx := readStats(e.ReceiverStats)
		rxAt, _ := time.Parse(time.RFC3339Nano, rx.str("sampledAt"))
		next := rx.num("spool", "next_seq")
		pos, err := spool.ReadWriterPosition(e.SpoolDir)
		caughtUp := err == nil && rxAt.After(start.Add(e.settleDelay())) && rx.num("spool", "queued_records") == 0 &&
			float64(pos.Seq)+1 >= next && e.Writer.PID() != 0
		switch {
		case !caughtUp:
			settledAt = time.Time{}
		case settledAt.IsZero() || next != settledSeq:
			settledAt, settledSeq = time.Now(), next
		case time.Since(settledAt) >= quiet:
			wx := readStats(e.WriterStats)
			if wxAt, _ := time.Parse(time.RFC3339Nano, wx.str("sampledAt")); wxAt.After(settledAt) && jobsSettled(ctx, e.DBPath) {
				return time.Since(start), nil
			}
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("not drained after %s: writer at Seq %d, receiver's next Seq %.0f; %d of %d observations in the database",
				timeout, pos.Seq, next, e.Poller.Observations(), e.Gen.Accounting().Observations)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// settleDelay is how long after the last publish the receiver's stats file
// can be trusted to show every record: a group window to commit, a
// segment age to seal, a second for the stats file.
func (e *Env) settleDelay() time.Duration { return 2500 * time.Millisecond }

// Samples returns the timeline so far.
func (e *Env) Samples() []Sample { return e.sampler.Samples() }

// Close stops the instruments, the processes and the broker.
func (e *Env) Close() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
	if e.Pub != nil {
		e.Pub.Close()
	}
	e.Writer.Stop(10 * time.Second)
	e.Receiver.Stop(10 * time.Second)
	for _, in := range e.Instances {
		in.Proc.signal(syscall.SIGCONT) // a stopped one must be able to exit
		in.Proc.Stop(10 * time.Second)
	}
	e.Broker.Stop()
}
