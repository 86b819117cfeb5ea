package shared

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends systemd service notifications (sd_notify) over the
// unixgram socket in $NOTIFY_SOCKET. Without that variable (not under
// systemd, or Type=simple) every call is a no-op, so callers need no checks.
type Notifier struct {
	addr *net.UnixAddr
}

// NewNotifier reads NOTIFY_SOCKET. A leading '@' names an abstract socket.
func NewNotifier() *Notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n.addr != nil }

// Notify sends one state string, e.g. "READY=1" or "STATUS=draining".
func (n *Notifier) Notify(state string) error {
	if n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// Ready says the service is up (READY=1) with a status line.
func (n *Notifier) Ready(status string) error { return n.Notify("READY=1\nSTATUS=" + status) }

// Status replaces the one-line status systemctl shows.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + status) }

// Watchdog pets the systemd watchdog. Call it only from the loop whose
// progress it vouches for.
func (n *Notifier) Watchdog() error { return n.Notify("WATCHDOG=1") }

// Stopping says a clean shutdown has begun.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// WatchdogInterval is how often to pet the watchdog: half of WATCHDOG_USEC,
// or 0 when no watchdog is configured for this process.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
