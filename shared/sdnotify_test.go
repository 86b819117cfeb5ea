package shared

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNotifier_Notify_RealSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	n := NewNotifier()
	if !n.Enabled() {
		t.Fatal("notifier disabled with NOTIFY_SOCKET set")
	}
	for _, send := range []func() error{
		func() error { return n.Ready("spool open") },
		n.Watchdog,
		func() error { return n.Status("draining 5 segments") },
		n.Stopping,
	} {
		if err := send(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"READY=1\nSTATUS=spool open", "WATCHDOG=1", "STATUS=draining 5 segments", "STOPPING=1"}
	buf := make([]byte, 512)
	for _, w := range want {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:k]); got != w {
			t.Fatalf("got %q, want %q", got, w)
		}
	}
}

func TestNotifier_Notify_NoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := NewNotifier().Ready("x"); err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogInterval_HalfOfUsecForThisPid(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "10000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := WatchdogInterval(); got != 5*time.Second {
		t.Fatalf("got %v, want 5s", got)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if got := WatchdogInterval(); got != 0 {
		t.Fatalf("another pid's watchdog: got %v, want 0", got)
	}
}
