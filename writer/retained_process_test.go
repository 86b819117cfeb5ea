package writer

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// TestWriter_RetainedPacket_ReceiverRestarts_CountsOnce: an observer
// publishes one packet with the retain flag to a real mosquitto; the
// receiver (a real process) is restarted three times, and each time the
// broker replays the message to its new subscription. The writer (a real
// process) counts it once: packet_count 1, and last_seen stays the first
// delivery's.
func TestWriter_RetainedPacket_ReceiverRestarts_CountsOnce(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	broker := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	rxStats := filepath.Join(dir, "receiver-stats.json")
	p := newProcessSetup(t, dir, map[string]any{
		"mqttSources": []map[string]any{{"name": "local", "broker": broker.MQTTURL(), "topics": []string{"meshcore/#"}}},
		"receiver":    map[string]any{"statsFile": rxStats},
	})
	writer := p.start(t)
	defer stopProcess(t, writer)
	p.waitReady(t, 1)

	receive := func() *exec.Cmd {
		cmd := exec.Command(meshingestBinary(t), "receive", "--config", p.Config)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, time.Minute, "the receiver to connect", func() bool {
			s, err := shared.ReadReceiverSnapshot(rxStats, 5*time.Second, time.Now())
			return err == nil && len(s.SourceStatuses) == 1 && s.SourceStatuses[0].Connected && s.PID == cmd.Process.Pid
		})
		return cmd
	}
	written := func(n int64) {
		testkit.WaitFor(t, time.Minute, fmt.Sprintf("the writer to write %d messages", n), func() bool {
			f, ok := p.readStats(t)
			return ok && f.Meshingest.Messages >= n
		})
	}
	stopReceiver := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}

	rx := receive()
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	payload, _ := json.Marshal(map[string]any{"origin": "A", "raw": raw, "SNR": 5.5, "RSSI": -100})
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("observer-a"))
	if tok := pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect the publisher: %v", tok.Error())
	}
	if tok := pub.Publish("meshcore/SJC/"+obsA+"/packets", 0, true, payload); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	pub.Disconnect(100)
	written(1)
	packets, lastSeen := observerRow(t, &shared.Config{DBPath: p.DB}, obsA)
	if packets != 1 {
		t.Fatalf("packet_count %d after the publication, want 1", packets)
	}
	for i := 1; i <= 3; i++ {
		stopReceiver(rx)
		time.Sleep(1100 * time.Millisecond) // a later second: a moved last_seen would show
		rx = receive()
		written(int64(1 + i))
	}
	stopReceiver(rx)
	got, seen := observerRow(t, &shared.Config{DBPath: p.DB}, obsA)
	if got != 1 || seen != lastSeen {
		t.Errorf("after three receiver restarts: packet_count %d, last_seen %s; want 1 and %s", got, seen, lastSeen)
	}
	f, _ := p.readStats(t)
	if n := f.Meshingest.Drops[DropRetainedReplay]; n != 3 {
		t.Errorf("retained_replay %d, want 3 (drops %v)", n, f.Meshingest.Drops)
	}
	if n := writertest.Count(t, writertest.OpenRaw(t, p.DB), `SELECT COUNT(*) FROM observations`); n != 1 {
		t.Errorf("%d observations, want 1", n)
	}
}
