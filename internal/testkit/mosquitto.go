// A real mosquitto broker on a free loopback port. Debian: apt-get install
// mosquitto (.ci/run does it).

package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Mosquitto is one mosquitto process owned by a test.
type Mosquitto struct {
	t    testing.TB
	Port int
	conf string
	log  string
	cmd  *exec.Cmd
}

// MosquittoOptions for StartMosquitto. The zero value is a plain anonymous broker.
type MosquittoOptions struct {
	// Persistence keeps QoS 1 sessions across Restart (a file in a temp dir).
	Persistence bool
	// Username and Password, when set, are required of every client.
	Username, Password string
	// MaxInflight, when above 0, is mosquitto's max_inflight_messages (its
	// own default is 20): how many QoS 1 messages it sends a client before
	// waiting for acks. 0 keeps the test default, unlimited.
	MaxInflight int
}

// StartMosquitto runs mosquitto and waits until it accepts connections. It fails the
// test when mosquitto is not installed: broker tests are part of the suite,
// not optional.
func StartMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin = p
			}
		}
		if bin == "" {
			t.Fatal("mosquitto is not installed; run: apt-get install mosquitto (the broker tests need a real broker)")
		}
	}
	dir := t.TempDir()
	b := &Mosquitto{t: t, Port: FreePort(t), conf: filepath.Join(dir, "mosquitto.conf"), log: filepath.Join(dir, "mosquitto.log")}
	conf := fmt.Sprintf("listener %d 127.0.0.1\n", b.Port)
	if os.Geteuid() == 0 {
		// Started as root, mosquitto drops to the "mosquitto" user and then
		// cannot open the password or log file in the test's 0700 folder.
		conf += "user root\n"
	}
	// mosquitto's default of 1000 queued messages per client silently drops
	// QoS 1 messages beyond it (measured.md); tests must not hit it.
	conf += fmt.Sprintf("max_queued_messages 0\nmax_inflight_messages %d\nmax_queued_bytes 0\n", opts.MaxInflight)
	conf += "log_dest file " + b.log + "\nlog_type error\nlog_type warning\nlog_type notice\n"
	if opts.Username != "" {
		pw := filepath.Join(dir, "passwd")
		if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, opts.Username, opts.Password).CombinedOutput(); err != nil {
			// mosquitto_passwd comes with the mosquitto package.
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
		conf += "allow_anonymous false\npassword_file " + pw + "\n"
	} else {
		conf += "allow_anonymous true\n"
	}
	if opts.Persistence {
		conf += "persistence true\npersistence_location " + dir + "/\nautosave_interval 1\n"
	}
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(bin)
	t.Cleanup(b.Stop)
	return b
}

// URL is the broker address for paho: tcp://127.0.0.1:PORT.
func (b *Mosquitto) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.Port) }

// MQTTURL is the same address in CoreScope's config form: mqtt://127.0.0.1:PORT.
func (b *Mosquitto) MQTTURL() string { return "mqtt://127.0.0.1:" + strconv.Itoa(b.Port) }

func (b *Mosquitto) start(bin string) {
	b.t.Helper()
	b.cmd = exec.Command(bin, "-c", b.conf)
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.Port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(b.log)
	b.t.Fatalf("mosquitto did not listen on port %d within 10s; log:\n%s", b.Port, log)
}

// Stop terminates the broker (SIGTERM, so a persistent one saves its state).
func (b *Mosquitto) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.cmd = nil
}

// Restart stops the broker and starts it again on the same port.
func (b *Mosquitto) Restart(down time.Duration) {
	b.t.Helper()
	bin := "mosquitto"
	if b.cmd != nil {
		bin = b.cmd.Path
	}
	b.Stop()
	time.Sleep(down)
	b.start(bin)
}

// FreePort returns a loopback TCP port that was free a moment ago. Never a
// fixed port: several test binaries run at once.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
