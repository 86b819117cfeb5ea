package receiver

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// TestReceiver_Run_SpoolFolderDeleted_KeepsReceiving: `rm -rf` of the
// spool folder under a running receiver (harness finding 8). The spool
// makes the folder again as a new spool and the receiver goes on: every
// QoS 1 message published after is in the new folder, none is dropped,
// the receiver stays ready, and the log and the stats say the folder was
// remade and what the deleted one held.
func TestReceiver_Run_SpoolFolderDeleted_KeepsReceiving(t *testing.T) {
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	sp := newSpool(t, spool.Options{})
	r := startReceiver(t, sp, shared.Source{Name: "q1", Broker: b.MQTTURL(), Topics: []string{"meshcore/#"}, QoS: 1, ClientID: "wiped-test"})
	testkit.WaitFor(t, 5*time.Second, "connected", func() bool { s, _ := r.source("q1"); return s.Connected })
	old := sp.Identity().ID

	pub := publisher(t, b.URL())
	const before, after = 200, 300
	for i := 0; i < before; i++ {
		publish(t, pub, "meshcore/SJC/O/packets", 1, false, []byte(fmt.Sprintf("before-%04d", i)))
	}
	testkit.WaitFor(t, 10*time.Second, "the first messages durable", func() bool { _, c := r.source("q1"); return c.Durable == before })
	testkit.WaitFor(t, 10*time.Second, "the spool's depth scanned", func() bool { return sp.Stats().DepthRecords == before })
	if err := os.RemoveAll(sp.dir); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < after; i++ {
		publish(t, pub, "meshcore/SJC/O/packets", 1, false, []byte(fmt.Sprintf("after-%04d", i)))
	}
	testkit.WaitFor(t, 30*time.Second, "every message after the wipe durable", func() bool {
		_, c := r.source("q1")
		return c.Durable >= before+after
	})
	waitQuiet(t, r, "q1")
	if why := r.notReady(time.Now()); why != "" {
		t.Errorf("not ready after the folder was remade: %s", why)
	}
	r.stop(t)

	seen := map[string]bool{}
	for _, rec := range sp.records(t) {
		seen[string(rec.Payload)] = true
	}
	for i := 0; i < after; i++ {
		if p := fmt.Sprintf("after-%04d", i); !seen[p] {
			t.Fatalf("%s is not in the remade folder (%d messages there)", p, len(seen))
		}
	}
	if id, err := spool.ReadIdentity(sp.dir); err != nil || id.ID == old {
		t.Errorf("the remade folder's identity %v (%v), the deleted one's %v", id.ID, err, old)
	}
	_, c := r.source("q1")
	if len(nonZero(c.Dropped)) != 0 || len(nonZero(c.Held)) != 0 {
		t.Errorf("dropped %v, held %v", c.Dropped, c.Held)
	}
	if st := sp.Stats(); st.FoldersRemade != 1 || st.RecordsLostWithFolder != before || st.FailedRecords != 0 {
		t.Errorf("folders_remade %d, records_lost_with_folder %d, failed_records %d; want 1, %d, 0", st.FoldersRemade, st.RecordsLostWithFolder, st.FailedRecords, before)
	}
	if n := strings.Count(r.logs.String(), "spool folder was deleted"); n != 1 {
		t.Errorf("the log says %d times that the folder was remade, want once", n)
	}
}
