package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Mosquitto is a real mosquitto broker on a free loopback port, with
// persistence so QoS 1 sessions and their queued messages survive a
// restart, and without the per-client queue limits that silently drop
// messages for a slow or absent subscriber (docs/reference/measured.md).
type Mosquitto struct {
	Port int
	dir  string
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
}

// ErrNoMosquitto: the harness needs a real broker.
var ErrNoMosquitto = errors.New("mosquitto is not installed; run: apt-get install mosquitto")

// StartMosquitto writes a configuration into dir and starts the broker.
func StartMosquitto(dir string) (*Mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/mosquitto"); e != nil {
			return nil, ErrNoMosquitto
		}
		bin = "/usr/sbin/mosquitto"
	}
	// A free port can be taken by another process between the probe and
	// mosquitto's bind (tests run side by side); then mosquitto exits and
	// the start is tried again on another port.
	for attempt := 0; attempt < 5; attempt++ {
		var m *Mosquitto
		if m, err = startMosquittoOnce(dir, bin); err == nil {
			return m, nil
		}
		if !errors.Is(err, errBrokerExited) {
			return nil, err
		}
	}
	return nil, err
}

// errBrokerExited: mosquitto ended right after starting (port taken).
var errBrokerExited = errors.New("mosquitto exited at start")

func startMosquittoOnce(dir, bin string) (*Mosquitto, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &Mosquitto{Port: port, dir: dir, bin: bin}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n", port)
	if os.Geteuid() == 0 {
		conf += "user root\n" // else it drops to "mosquitto" and cannot write dir
	}
	conf += "max_queued_messages 0\nmax_inflight_messages 0\nmax_queued_bytes 0\n"
	conf += "persistence true\npersistence_location " + dir + "/\nautosave_interval 1\n"
	conf += "log_dest file " + filepath.Join(dir, "mosquitto.log") + "\nlog_type error\nlog_type warning\nlog_type notice\n"
	if err := os.WriteFile(m.confPath(), []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("write mosquitto config: %w", err)
	}
	return m, m.start()
}

func (m *Mosquitto) confPath() string { return filepath.Join(m.dir, "mosquitto.conf") }

// URL is the broker in the configuration's form.
func (m *Mosquitto) URL() string { return "mqtt://127.0.0.1:" + strconv.Itoa(m.Port) }

// PahoURL is the broker in paho's form.
func (m *Mosquitto) PahoURL() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.Port) }

func (m *Mosquitto) start() error {
	m.cmd = exec.Command(m.bin, "-c", m.confPath())
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	m.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(m.cmd, m.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
			return fmt.Errorf("%w on port %d: %s", errBrokerExited, m.Port, tail(log, 300))
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(m.Port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			// Make sure the listener is this mosquitto, not a process that
			// took the port: ours must still be running a moment later.
			select {
			case <-m.done:
				continue
			case <-time.After(100 * time.Millisecond):
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
	return fmt.Errorf("mosquitto did not listen on port %d within 10 s; log:\n%s", m.Port, log)
}

// Stop ends the broker with SIGTERM, so it saves its persistent state.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Restart stops the broker, waits down, and starts it on the same port.
func (m *Mosquitto) Restart(down time.Duration) error {
	m.Stop()
	time.Sleep(down)
	return m.start()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail is the last n bytes of b, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
