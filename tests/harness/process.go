package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one meshingest subcommand (`receive` or `write`) run as a real
// child process, started, SIGKILLed and restarted by the harness. Its costs
// are summed over its incarnations: /proc is read just before each kill,
// since a dead process's counters are gone.
type Process struct {
	Name string // "receiver", "writer"
	bin  string
	args []string
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	past   ProcSample // summed final samples of earlier incarnations
	peak   int64      // highest VmHWM of any incarnation
	starts int
	kills  int
}

// NewProcess prepares a process (not started) that runs bin with args and
// appends its output to logPath.
func NewProcess(name, bin, logPath string, args ...string) *Process {
	return &Process{Name: name, bin: bin, args: args, log: logPath}
}

// Start runs a new incarnation; its stderr and stdout go to the log file.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s: open log %s: %w", p.Name, p.log, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: start %s: %w", p.Name, p.bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	p.starts++
	return nil
}

// overridingEnv are variables that would override the harness's config
// file, or make a child talk to a service manager.
var overridingEnv = map[string]bool{
	"DB_PATH": true, "MQTT_BROKER": true, "MQTT_TOPIC": true, "MESHINGEST_SPOOL_DIR": true,
	"CORESCOPE_INGESTOR_STATS": true, "NOTIFY_SOCKET": true, "WATCHDOG_USEC": true, "WATCHDOG_PID": true,
}

func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !overridingEnv[k] {
			env = append(env, kv)
		}
	}
	return env
}

// PID is the running incarnation's pid, 0 when none runs.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() error { return p.end(syscall.SIGKILL, 5*time.Second, true) }

// Stop sends SIGTERM and waits up to grace for a clean exit; it reports an
// error when the process had to be killed or exited non-zero.
func (p *Process) Stop(grace time.Duration) error { return p.end(syscall.SIGTERM, grace, false) }

func (p *Process) end(sig syscall.Signal, grace time.Duration, kill bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	if s, err := ReadProc(p.cmd.Process.Pid); err == nil {
		p.bank(s)
	}
	p.cmd.Process.Signal(sig)
	var err error
	select {
	case <-p.done:
		if !kill && p.cmd.ProcessState != nil && p.cmd.ProcessState.ExitCode() != 0 {
			err = fmt.Errorf("%s: exited %d after SIGTERM", p.Name, p.cmd.ProcessState.ExitCode())
		}
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("%s: did not exit within %s of %s; killed", p.Name, grace, sig)
	}
	if kill {
		p.kills++
	}
	p.cmd = nil
	return err
}

func (p *Process) bank(s ProcSample) {
	p.past.IO.WriteBytes += s.IO.WriteBytes
	p.past.IO.ReadBytes += s.IO.ReadBytes
	p.past.IO.Wchar += s.IO.Wchar
	p.past.IO.SyscW += s.IO.SyscW
	p.past.CPUSeconds += s.CPUSeconds
	p.peak = max(p.peak, s.HWMBytes)
}

// Totals are the costs of every incarnation so far: counters summed, RSS
// the current one, HWM the highest peak of any incarnation.
func (p *Process) Totals() ProcSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.past
	t.HWMBytes = p.peak
	if p.cmd != nil {
		if s, err := ReadProc(p.cmd.Process.Pid); err == nil {
			t.IO.WriteBytes += s.IO.WriteBytes
			t.IO.ReadBytes += s.IO.ReadBytes
			t.IO.Wchar += s.IO.Wchar
			t.IO.SyscW += s.IO.SyscW
			t.CPUSeconds += s.CPUSeconds
			t.RSSBytes = s.RSSBytes
			t.HWMBytes = max(t.HWMBytes, s.HWMBytes)
		}
	}
	return t
}

// Starts and Kills count incarnations and SIGKILLs.
func (p *Process) Starts() int { p.mu.Lock(); defer p.mu.Unlock(); return p.starts }
func (p *Process) Kills() int  { p.mu.Lock(); defer p.mu.Unlock(); return p.kills }

// Exited reports whether the running incarnation ended by itself (a crash),
// with its exit status.
func (p *Process) Exited() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false, ""
	}
	select {
	case <-p.done:
		return true, p.cmd.ProcessState.String()
	default:
		return false, ""
	}
}
