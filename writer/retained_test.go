package writer

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

func retained(r Record) Record { r.Retained = true; return r }

// TestIngest_RetainedReplay_ChangesNothing: a broker replays a retained
// message at every subscribe. Whether its first delivery was live (retain
// flag cleared) or itself a replay, the later replays change neither
// packet_count nor last_seen, in every form, across writer restarts.
func TestIngest_RetainedReplay_ChangesNothing(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		first Record
	}{
		{"live packets", packetRecord(t0, obsA, raw, nil)},
		{"retained packets", retained(packetRecord(t0, obsA, raw, nil))},
		{"live raw", rawRecord(t0, obsA, raw)},
		{"retained binary", retained(binaryRecord(t, t0, obsA, raw))},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := writertest.CorpusConfig(t)
			dir := filepath.Join(t.TempDir(), "spool")
			writertest.AppendToSpool(t, dir, []Record{c.first}, spool.Options{})
			drainDir(t, Options{Config: cfg}, dir, 1)
			_, lastSeen := observerRow(t, cfg, obsA)
			for i := 1; i <= 3; i++ { // three receiver restarts, a writer restart each
				replay := c.first
				replay.Retained, replay.ReceivedAt = true, t0.Add(time.Duration(i)*time.Hour)
				writertest.AppendToSpool(t, dir, []Record{replay}, spool.Options{})
				w := drainDir(t, Options{Config: cfg}, dir, 1)
				if n := w.Stats().Drops()[DropRetainedReplay]; n != 1 {
					t.Errorf("replay %d: retained_replay %d, want 1", i, n)
				}
			}
			packets, seen := observerRow(t, cfg, obsA)
			if packets != 1 || seen != lastSeen {
				t.Errorf("packet_count %d, last_seen %s after three replays; want 1 and %s", packets, seen, lastSeen)
			}
		})
	}
}

// TestIngest_RetainedReplay_AfterRetentionDeletedTheRow: the observation a
// retained message made is gone (retention), yet the broker still replays
// it; the stored digest of the last retained message on its topic still
// recognises the replay.
func TestIngest_RetainedReplay_AfterRetentionDeletedTheRow(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	cfg := writertest.CorpusConfig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	first := retained(packetRecord(t0, obsA, raw, nil))
	writertest.AppendToSpool(t, dir, []Record{first}, spool.Options{})
	drainDir(t, Options{Config: cfg}, dir, 1)
	db := writertest.OpenRaw(t, cfg.DBPath)
	if _, err := db.Exec(`DELETE FROM observations; DELETE FROM transmissions`); err != nil {
		t.Fatal(err)
	}
	first.ReceivedAt = t0.Add(40 * 24 * time.Hour)
	writertest.AppendToSpool(t, dir, []Record{first}, spool.Options{})
	drainDir(t, Options{Config: cfg}, dir, 1)
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions`); n != 0 {
		t.Errorf("the replay of a pruned retained message stored %d transmissions again", n)
	}
	if packets, _ := observerRow(t, cfg, obsA); packets != 1 {
		t.Errorf("packet_count %d, want 1", packets)
	}
}

// TestIngest_RetainedNeighbors_StoredOnce: a neighbors report (QoS 1,
// retained by the firmware) replayed at the next subscribe is not stored
// again; a new report is.
func TestIngest_RetainedNeighbors_StoredOnce(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	live := neighborsRecord(t0, obsA, false)
	next := neighborsRecord(t0.Add(24*time.Hour), obsA, false)
	next.Payload = []byte(string(next.Payload[:len(next.Payload)-1]) + `,"truncated":false}`)
	w := drain(t, spoolOf(t, []Record{live, retained(live), retained(live), next, retained(next)}), Options{Config: cfg}, 5)
	if n := writertest.Count(t, writertest.OpenRaw(t, cfg.DBPath), `SELECT COUNT(*) FROM meshingest_neighbor_reports`); n != 2 {
		t.Errorf("%d neighbor reports stored, want 2", n)
	}
	if n := w.Stats().Drops()[DropRetainedReplay]; n != 3 {
		t.Errorf("retained_replay %d, want 3", n)
	}
}
