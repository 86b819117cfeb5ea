// Package supervise runs meshingest's two stages as supervised child
// processes of one command: `meshingest run` is the production shape (two
// services) in miniature. A child that exits while it should be running is
// logged and restarted with an exponential back-off; stopping the
// supervisor stops every child with SIGTERM, and SIGKILL after a timeout.
//
// Supervisor knows nothing of meshingest; Stack (stack.go) adds the
// embedded broker and the configuration the children run with.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Process describes one child.
type Process struct {
	// Name identifies the child in logs and Status ("receiver", "writer").
	Name string
	Path string
	Args []string
	// Env is the child's whole environment; nil inherits this process's.
	Env []string
	// Stdout and Stderr receive the child's output; nil discards it.
	Stdout, Stderr io.Writer
}

// Options tune the supervisor. Zero values mean the defaults below.
type Options struct {
	// MinBackoff is the wait before the first restart (default 1 s); each
	// further crash doubles it up to MaxBackoff (default 30 s), so a child
	// that cannot start (a missing database folder) does not spin.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter resets the back-off once a child has run this long
	// (default 30 s): a crash a day is restarted at once.
	StableAfter time.Duration
	// StopTimeout is how long a child has, after SIGTERM, to commit and exit
	// before it is killed (default 30 s; the writer may be finishing a
	// batch).
	StopTimeout time.Duration
	Log         zerolog.Logger
}

// ChildStatus is a snapshot of one child.
type ChildStatus struct {
	Name     string
	PID      int // 0 while not running
	Running  bool
	Starts   int       // times started, the first included
	Started  time.Time // of the current or last run
	LastExit string    // how the last run ended, "" before any
}

// Supervisor keeps a set of processes running.
type Supervisor struct {
	procs []Process
	opts  Options

	mu     sync.Mutex
	status map[string]*ChildStatus
	cmds   map[string]*exec.Cmd
}

// New returns a supervisor for procs; Run starts them.
func New(procs []Process, opts Options) *Supervisor {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = 30 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 30 * time.Second
	}
	s := &Supervisor{procs: procs, opts: opts, status: map[string]*ChildStatus{}, cmds: map[string]*exec.Cmd{}}
	for _, p := range procs {
		s.status[p.Name] = &ChildStatus{Name: p.Name}
	}
	return s
}

// Run starts every process and keeps each running until ctx ends; then it
// stops them all and returns once every child has exited.
func (s *Supervisor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range s.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.keep(ctx, p)
		}()
	}
	wg.Wait()
}

// Status returns a snapshot of every child, in the order given to New.
func (s *Supervisor) Status() []ChildStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ChildStatus, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, *s.status[p.Name])
	}
	return out
}

// Signal sends sig to every running child (SIGHUP: reload).
func (s *Supervisor) Signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, cmd := range s.cmds {
		if err := cmd.Process.Signal(sig); err != nil {
			s.opts.Log.Warn().Err(err).Str("child", name).Stringer("signal", sig).Msg("could not signal child")
		}
	}
}

// keep runs one process until ctx ends, restarting it when it exits.
func (s *Supervisor) keep(ctx context.Context, p Process) {
	// Pdeathsig is delivered when the thread that started the child exits,
	// not the process; pin this goroutine to its thread for the children's
	// whole life so that only our own death signals them.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	log := s.opts.Log.With().Str("child", p.Name).Logger()
	backoff := s.opts.MinBackoff
	for ctx.Err() == nil {
		cmd := command(p)
		started := time.Now()
		if err := cmd.Start(); err != nil {
			log.Error().Err(err).Str("path", p.Path).Stringer("retryIn", backoff).Msg("could not start child; retrying")
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, s.opts.MaxBackoff)
			continue
		}
		s.started(p.Name, cmd, started)
		log.Info().Int("pid", cmd.Process.Pid).Msg("child started")

		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			how := describeExit(cmd, err)
			s.stopped(p.Name, how)
			ran := time.Since(started)
			if ran >= s.opts.StableAfter {
				backoff = s.opts.MinBackoff
			}
			log.Error().Int("pid", cmd.Process.Pid).Str("exit", how).Stringer("ran", ran.Round(time.Millisecond)).
				Stringer("restartIn", backoff).Msg("child exited unexpectedly; restarting it")
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, s.opts.MaxBackoff)
		case <-ctx.Done():
			s.stop(log, p.Name, cmd, exited)
			return
		}
	}
}

// stop asks the child to exit (SIGTERM: commit and close cleanly) and kills
// it if it has not after StopTimeout.
func (s *Supervisor) stop(log zerolog.Logger, name string, cmd *exec.Cmd, exited <-chan error) {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		log.Warn().Err(err).Msg("could not send SIGTERM to child")
	}
	select {
	case err := <-exited:
		how := describeExit(cmd, err)
		s.stopped(name, how)
		log.Info().Str("exit", how).Msg("child stopped")
	case <-time.After(s.opts.StopTimeout):
		cmd.Process.Kill()
		err := <-exited
		how := describeExit(cmd, err)
		s.stopped(name, how)
		log.Error().Stringer("after", s.opts.StopTimeout).Str("exit", how).Msg("child did not stop after SIGTERM; killed it")
	}
}

func (s *Supervisor) started(name string, cmd *exec.Cmd, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status[name]
	st.PID, st.Running, st.Started = cmd.Process.Pid, true, at
	st.Starts++
	s.cmds[name] = cmd
}

func (s *Supervisor) stopped(name, how string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status[name]
	st.PID, st.Running, st.LastExit = 0, false, how
	delete(s.cmds, name)
}

func command(p Process) *exec.Cmd {
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C on the terminal reaches only the
		// supervisor, which then stops the children in order, instead of
		// racing them.
		Setpgid: true,
		// If the supervisor dies (SIGKILL), the children are told to stop
		// rather than left running unsupervised.
		Pdeathsig: syscall.SIGTERM,
	}
	return cmd
}

// describeExit says how a child ended: "exit status 1", "signal: killed".
func describeExit(cmd *exec.Cmd, err error) string {
	if cmd.ProcessState != nil {
		return cmd.ProcessState.String()
	}
	if err != nil {
		return err.Error()
	}
	return "exited"
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Environ returns env without the variables named in drop (compared up to
// the '='), e.g. NOTIFY_SOCKET, which belongs to the supervisor: a child
// using it would speak to systemd in the supervisor's name.
func Environ(env []string, drop ...string) []string {
	out := make([]string, 0, len(env))
outer:
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		for _, d := range drop {
			if name == d {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// String is a one-line view of the children, for a status line.
func (s *Supervisor) String() string {
	var parts []string
	for _, st := range s.Status() {
		state := "down"
		if st.Running {
			state = fmt.Sprintf("pid %d", st.PID)
		}
		if st.Starts > 1 {
			state += fmt.Sprintf(", %d restarts", st.Starts-1)
		}
		parts = append(parts, st.Name+" "+state)
	}
	return strings.Join(parts, "; ")
}
