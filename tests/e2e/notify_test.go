package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
)

// notifySocket is a real unixgram socket standing in for systemd's
// NOTIFY_SOCKET; it records every datagram.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, conn: conn}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return s
}

// count returns how many datagrams carry the assignment (e.g. "READY=1"
// or "STATUS=", a prefix).
func (s *notifySocket) count(assignment string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, assignment) {
				n++
			}
		}
	}
	return n
}

func (s *notifySocket) all() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.msgs, " | ")
}

// Both services speak sd_notify as Type=notify units with WatchdogSec:
// READY once serving, STATUS lines, WATCHDOG pets at half the interval,
// STOPPING on SIGTERM.
func TestE2E_SdNotify_ReceiverAndWriter(t *testing.T) {
	broker := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	e := newEnv(t, map[string]any{
		"mqttSources": []map[string]any{{"name": "local", "broker": broker.MQTTURL()}},
	})
	for _, stage := range []string{"receive", "write"} {
		t.Run(stage, func(t *testing.T) {
			sock := listenNotify(t)
			// WATCHDOG_USEC of 1 s: pets every 500 ms. WATCHDOG_PID is left
			// out, as systemd does when the main process is the one watched.
			p := e.start(stage, []string{"NOTIFY_SOCKET=" + sock.path, "WATCHDOG_USEC=1000000"}, stage, "--config", e.config)
			testkit.WaitFor(t, 2*time.Minute, stage+" READY=1", func() bool { return sock.count("READY=1") == 1 })
			testkit.WaitFor(t, time.Minute, stage+" watchdog pets", func() bool { return sock.count("WATCHDOG=1") >= 3 })
			if sock.count("STATUS=") == 0 {
				t.Errorf("%s sent no STATUS line: %s", stage, sock.all())
			}
			if sock.count("STOPPING=1") != 0 {
				t.Fatalf("%s sent STOPPING=1 before being stopped: %s", stage, sock.all())
			}
			if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Errorf("%s exited %d after SIGTERM", stage, code)
			}
			if sock.count("STOPPING=1") != 1 {
				t.Errorf("%s: STOPPING=1 sent %d times, want once: %s", stage, sock.count("STOPPING=1"), sock.all())
			}
			if sock.count("READY=1") != 1 {
				t.Errorf("%s: READY=1 sent %d times, want once", stage, sock.count("READY=1"))
			}
		})
	}
}

// `meshingest run` speaks for itself and keeps its children off the
// socket: systemd (NotifyAccess=main) would refuse their messages.
func TestE2E_SdNotify_RunSpeaksForItselfOnly(t *testing.T) {
	sock := listenNotify(t)
	e := newEnv(t, map[string]any{"broker": map[string]any{"listen": "127.0.0.1:0"}})
	p := e.start("run", []string{"NOTIFY_SOCKET=" + sock.path, "WATCHDOG_USEC=1000000"}, "run", "--config", e.config)
	e.waitSubscribed(30 * time.Second)
	testkit.WaitFor(t, time.Minute, "run's watchdog pets", func() bool { return sock.count("WATCHDOG=1") >= 2 })
	if code := p.stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Errorf("run exited %d", code)
	}
	if sock.count("READY=1") != 1 || sock.count("STOPPING=1") != 1 {
		t.Fatalf("READY=1 ×%d, STOPPING=1 ×%d, want once each (children must not speak): %s",
			sock.count("READY=1"), sock.count("STOPPING=1"), sock.all())
	}
}
