package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
)

// Active-active receivers (issue 16): two `receive --instance` processes,
// each with a full QoS 0 subscription and its own spool, one writer that
// drains both and applies every publication once. The scenarios kill or
// freeze one receiver while the other keeps spooling, and check that
// nothing is lost, nothing counted twice, and every table equals an
// undisturbed single-receiver run's.

// Instance is one receiver instance of an Env.
type Instance struct {
	Name      string
	Proc      *Process
	StatsFile string // its receiver stats file (receiver.statsFile with -NAME)
	SpoolDir  string // <spoolDir>/NAME
}

// startInstances starts one receiver per name and waits until each is
// subscribed. The first one stands in for Env.Receiver (costs, samples).
func (e *Env) startInstances(o EnvOptions) error {
	base := e.ReceiverStats
	for _, name := range o.Instances {
		in := &Instance{
			Name:      name,
			Proc:      NewProcess("receiver-"+name, o.Binary, filepath.Join(o.Dir, "receiver-"+name+".log"), "receive", "--config", e.ConfigPath, "--instance", name),
			StatsFile: shared.InstanceStatsFile(base, name),
			SpoolDir:  shared.InstanceSpoolDir(e.SpoolDir, name),
		}
		e.Instances = append(e.Instances, in)
		if err := e.StartInstance(in); err != nil {
			return err
		}
	}
	e.Receiver, e.ReceiverStats = e.Instances[0].Proc, e.Instances[0].StatsFile
	return nil
}

// StartInstance starts an incarnation of in and waits until its stats file
// says its source is connected (at most 10 s).
func (e *Env) StartInstance(in *Instance) error {
	before := readStats(in.StatsFile).str("sampledAt")
	if err := in.Proc.Start(); err != nil {
		return err
	}
	pid := in.Proc.PID()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s := readStats(in.StatsFile)
		if s != nil && s.str("sampledAt") != before && int(s.num("pid")) == pid && receiverConnected(s) {
			return nil
		}
		if exited, how := in.Proc.Exited(); exited {
			return fmt.Errorf("receiver %s exited at start (%s); see %s", in.Name, how, in.Proc.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	in.Proc.Kill()
	log, _ := os.ReadFile(in.Proc.log)
	return fmt.Errorf("receiver %s (pid %d) not connected within 10 s; the end of %s:\n%s", in.Name, pid, in.Proc.log, tail(log, 1500))
}

// KillInstance SIGKILLs in, waits down, and starts it again.
func (e *Env) KillInstance(ctx context.Context, in *Instance, down time.Duration) error {
	for k, v := range receiverDrops(readStats(in.StatsFile)) {
		e.rxDrops[k] += v
	}
	if err := in.Proc.Kill(); err != nil {
		return err
	}
	if err := sleep(ctx, down); err != nil {
		return err
	}
	return e.StartInstance(in)
}

// signal sends sig to the running incarnation, if any.
func (p *Process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.cmd.Process.Signal(sig)
	}
}

// waitInstancesDrained is WaitDrained for receiver instances: every
// instance's spool drained up to its receiver's last Seq, nothing queued,
// quiet apart twice, then a stats file of the writer written after that and
// the jobs settled.
func (e *Env) waitInstancesDrained(ctx context.Context, timeout, quiet time.Duration) (time.Duration, error) {
	start := time.Now()
	var settledAt time.Time
	var settledKey string
	for {
		caughtUp, key, behind := true, "", ""
		for _, in := range e.Instances {
			rx := readStats(in.StatsFile)
			rxAt, _ := time.Parse(time.RFC3339Nano, rx.str("sampledAt"))
			next := rx.num("spool", "next_seq")
			pos, err := spool.ReadWriterPosition(in.SpoolDir)
			ok := err == nil && rxAt.After(start.Add(e.settleDelay())) && rx.num("spool", "queued_records") == 0 && float64(pos.Seq)+1 >= next
			caughtUp = caughtUp && ok
			key += fmt.Sprintf("%s:%.0f ", in.Name, next)
			if !ok {
				behind += fmt.Sprintf("%s at Seq %d, its receiver's next Seq %.0f; ", in.Name, pos.Seq, next)
			}
		}
		caughtUp = caughtUp && e.Writer.PID() != 0
		switch {
		case !caughtUp:
			settledAt = time.Time{}
		case settledAt.IsZero() || key != settledKey:
			settledAt, settledKey = time.Now(), key
		case time.Since(settledAt) >= quiet:
			wx := readStats(e.WriterStats)
			if wxAt, _ := time.Parse(time.RFC3339Nano, wx.str("sampledAt")); wxAt.After(settledAt) && jobsSettled(ctx, e.DBPath) {
				return time.Since(start), nil
			}
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("not drained after %s: %s%d of %d observations in the database",
				timeout, behind, e.Poller.Observations(), e.Gen.Accounting().Observations)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// spoolFigures reports the writer's figures per spool and returns the
// copies it recognised and the late records it read, by spool folder name.
func spoolFigures(e *Env, r *Result) (copies int64, late map[string]int64) {
	wx := readStats(e.WriterStats)
	list, _ := wx.obj("meshingest")["spools"].([]any)
	late = map[string]int64{}
	for _, v := range list {
		m, _ := v.(map[string]any)
		dir, _ := m["dir"].(string)
		applied, _ := m["records_applied"].(float64)
		other, _ := m["other_receiver_copies"].(float64)
		n, _ := m["late_copies"].(float64)
		late[filepath.Base(dir)] = int64(n)
		r.figure("writer, spool "+filepath.Base(dir), fmt.Sprintf("%.0f records applied, %.0f recognised as the other receiver's copies, %.0f of them late, outside the window (since the writer's last start)", applied, other, n))
	}
	return e.WriterDrops()[writer.DropOtherReceiver], late
}

// runActiveActiveKills: two receivers at QoS 0 under load, one or the
// other SIGKILLed every few seconds and restarted 1-3 s later, never both
// down.
func runActiveActiveKills(ctx context.Context, s *Suite, r *Result) error {
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 0, Instances: []string{"a", "b"}})
	if err != nil {
		return err
	}
	defer e.Close()
	stop := loadInBackground(ctx, e, s.Config.Rate, 0)
	sleep(ctx, 3*time.Second)
	rng := rand.New(rand.NewPCG(s.Config.Seed, 16))
	end := time.Now().Add(s.Config.ActiveActive)
	var downs []time.Duration
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		// The one restarted last has been subscribed for at least 2 s:
		// longer than the group window its partner loses on the kill.
		if err := sleep(ctx, 2*time.Second+time.Duration(rng.Float64()*float64(2*time.Second))); err != nil {
			break
		}
		in := e.Instances[i%2]
		down := time.Second + time.Duration(rng.Float64()*float64(2*time.Second))
		t := time.Now()
		if err := e.KillInstance(ctx, in, down); err != nil {
			stop()
			return fmt.Errorf("kill %d of receiver %s: %w", i+1, in.Name, err)
		}
		downs = append(downs, time.Since(t))
	}
	sleep(ctx, 3*time.Second)
	if err := stop(); err != nil {
		return err
	}
	slices.Sort(downs)
	if len(downs) > 0 {
		var total time.Duration
		for _, d := range downs {
			total += d
		}
		r.figure("SIGKILLs", fmt.Sprintf("%d over %s at QoS 0, %.0f msg/s, alternating between receivers a and b; down (SIGKILL → subscribed again) mean %s, max %s",
			len(downs), s.Config.ActiveActive, s.Config.Rate, ms(total/time.Duration(len(downs))), ms(downs[len(downs)-1])))
	}
	r.check("receiver kills", fmt.Sprint(len(downs)), "≥ 1", len(downs) >= 1)
	// The writer's figures per spool, before finish stops it.
	e.WaitDrained(ctx, 15*time.Minute, 2*time.Second)
	copies, _ := spoolFigures(e, r)
	if err := s.finish(ctx, e, r, true, true); err != nil {
		return err
	}
	r.figure("copies recognised as the other receiver's", fmt.Sprint(copies))
	r.check("copies recognised", fmt.Sprint(copies), "> 0 (both receivers spooled)", copies > 0)
	rssChecks(r)
	return nil
}

// runActiveActiveWriterKills: two receivers at QoS 0 under load (with
// re-observations and publications sent twice on purpose), the writer
// SIGKILLed WriterKills times at random moments and restarted at once.
// Each restart reads the rounds of copies back from meshingest_copies: a
// kill between the two receivers' copies of a publication must not count
// it twice, nor a publication sent twice count once.
func runActiveActiveWriterKills(ctx context.Context, s *Suite, r *Result) error {
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 0, Instances: []string{"a", "b"}})
	if err != nil {
		return err
	}
	defer e.Close()
	stop := loadInBackground(ctx, e, s.Config.Rate, 0)
	sleep(ctx, 3*time.Second)
	downs, _, kerr := s.killLoop(ctx, s.Config.WriterKills, s.Config.Seed+16, e.KillWriter)
	sleep(ctx, 3*time.Second)
	if err := stop(); err != nil {
		return err
	}
	if kerr != nil {
		return kerr
	}
	r.figure("SIGKILLs of the writer", fmt.Sprintf("%d at random moments under %.0f msg/s at QoS 0, two receivers (a, b) spooling every publication", len(downs), s.Config.Rate))
	r.check("writer restarts", fmt.Sprint(e.Writer.Starts()-1), fmt.Sprint(s.Config.WriterKills), e.Writer.Starts()-1 == s.Config.WriterKills)
	e.WaitDrained(ctx, 15*time.Minute, 2*time.Second)
	spoolFigures(e, r)
	// A killed writer's drop counters lose up to its last second, so the
	// copies recognised are a lower bound here, and drops without a row
	// are not checked exactly.
	copies := e.WriterDrops()[writer.DropOtherReceiver]
	if err := s.finish(ctx, e, r, true, false); err != nil {
		return err
	}
	r.figure("copies recognised as the other receiver's", fmt.Sprintf("at least %d (the stats files of killed writers miss up to their last second)", copies))
	r.check("copies recognised", fmt.Sprint(copies), "> 0 (both receivers spooled)", copies > 0)
	rssChecks(r)
	return nil
}

// runActiveActiveOutage: receiver b frozen (SIGSTOP) for the outage while a
// keeps spooling, then resumed (SIGCONT) and restarted: what the broker
// and the kernel buffered for it reaches it when it resumes, stamped an
// outage late, and those late copies apply nothing again.
func runActiveActiveOutage(ctx context.Context, s *Suite, r *Result) error {
	e, err := s.newEnv(r.Name, EnvOptions{QoS: 0, Instances: []string{"a", "b"}})
	if err != nil {
		return err
	}
	defer e.Close()
	stop := loadInBackground(ctx, e, s.Config.Rate, 0)
	sleep(ctx, 5*time.Second)
	b := e.Instances[1]
	before := e.WriterDrops()[writer.DropOtherReceiver]
	b.Proc.signal(syscall.SIGSTOP)
	stopped := time.Now()
	sleep(ctx, s.Config.ReceiverOutage)
	lagDuring := readStats(e.WriterStats).num("meshingest", "lag_seconds")
	b.Proc.signal(syscall.SIGCONT)
	outage := time.Since(stopped)
	// It commits and seals what it held, then is restarted cleanly.
	sleep(ctx, 3*time.Second)
	if err := b.Proc.Stop(10 * time.Second); err != nil {
		r.note("receiver b stop after the outage: %v", err)
	}
	if err := e.StartInstance(b); err != nil {
		stop()
		return fmt.Errorf("restart receiver b: %w", err)
	}
	sleep(ctx, 10*time.Second)
	if err := stop(); err != nil {
		return err
	}
	r.figure("outage", fmt.Sprintf("receiver b frozen (SIGSTOP) for %s under %.0f msg/s at QoS 0, then resumed (SIGCONT) and restarted; a ran throughout", outage.Round(time.Second), s.Config.Rate))
	r.figure("writer lag at the end of the outage", fmt.Sprintf("%.1f s (a silent receiver holds the other back at most writer.dedupWindowMs)", lagDuring))
	r.check("writer lag during the outage", fmt.Sprintf("%.1f s", lagDuring), "≤ 10 s", lagDuring <= 10)
	e.WaitDrained(ctx, 15*time.Minute, 2*time.Second)
	copies, late := spoolFigures(e, r)
	if err := s.finish(ctx, e, r, true, true); err != nil {
		return err
	}
	r.figure("copies recognised as the other receiver's", fmt.Sprintf("%d (%d before the outage)", copies, before))
	// A broker keeps a frozen client's connection (and buffers for it)
	// only until its keepalive runs out, well under a minute: after a
	// longer outage nothing reaches b late, and the counts above are the
	// test.
	if s.Config.ReceiverOutage < time.Minute {
		r.check("b's late copies recognised (what the broker buffered for it, read when it resumed)", fmt.Sprint(late["b"]), "> 0, and none counted twice", late["b"] > 0)
	} else {
		r.figure("b's late copies recognised", fmt.Sprintf("%d (after an outage this long the broker has dropped b's connection: nothing is buffered for it)", late["b"]))
	}
	rssChecks(r)
	return nil
}

// runActiveActiveCost: the writer's CPU per publication catching up on two
// full copies of the stream against one. The machine is shared, so one
// receiver and two alternate for costRounds rounds and the median of the
// rounds' ratios is the figure.
func runActiveActiveCost(ctx context.Context, s *Suite, r *Result) error {
	n := s.Config.CostMessages
	var ratios []float64
	for round := 0; round < costRounds; round++ {
		var perPub [2]float64
		for i, instances := range [][]string{nil, {"a", "b"}} {
			e, err := s.newEnv(r.Name, EnvOptions{QoS: 1, NoWriter: true, Instances: instances})
			if err != nil {
				return err
			}
			if err := e.Pub.Run(ctx, n, 4000); err != nil {
				e.Close()
				return err
			}
			sleep(ctx, e.settleDelay())
			if err := e.Writer.Start(); err != nil {
				e.Close()
				return err
			}
			d, err := e.WaitDrained(ctx, 15*time.Minute, time.Second)
			cpu := e.Writer.Totals().CPUSeconds
			if err == nil {
				err = e.StopWriter()
			}
			hwm := e.Writer.Totals().HWMBytes
			e.Close()
			if err != nil {
				return err
			}
			perPub[i] = cpu / float64(n)
			r.figure(fmt.Sprintf("round %d, writer catch-up, %d receiver(s)", round+1, max(len(instances), 1)),
				fmt.Sprintf("%d publications (%d spool records) in %s: %.2f s CPU, %.0f µs per publication, peak RSS %s", n, n*max(len(instances), 1), d.Round(100*time.Millisecond), cpu, perPub[i]*1e6, mibs(hwm)))
		}
		ratios = append(ratios, perPub[1]/perPub[0])
	}
	slices.Sort(ratios)
	ratio := ratios[len(ratios)/2]
	r.check("writer CPU per publication, two copies / one (median of the rounds)", fmt.Sprintf("%.2f×", ratio), "≤ 1.3×", ratio <= 1.3)
	return nil
}

// costRounds is how many times active-active-cost measures one receiver
// and two, alternately.
const costRounds = 3
