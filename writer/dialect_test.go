package writer

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

const obsC = "CCCC000000000000000000000000000000000000000000000000000000000003"

// rawRecord is a `…/raw` message (PC, PY, OffbandMesh, agessaman): the
// frame under data, no reception fields.
func rawRecord(at time.Time, observer, raw string) Record {
	b, _ := json.Marshal(map[string]any{"origin": "name-" + observer[:4], "origin_id": observer, "type": "RAW", "data": raw})
	return Record{ReceivedAt: at, Source: "test", Topic: "meshcore/sjc/" + observer + "/raw", Payload: b}
}

// binaryRecord is a `binary/<GATEWAY>` message: the frame's bytes.
func binaryRecord(t testing.TB, at time.Time, gateway, raw string) Record {
	b, err := hex.DecodeString(raw)
	if err != nil {
		t.Fatal(err)
	}
	return Record{ReceivedAt: at, Source: "test", Topic: "binary/" + gateway, Payload: b}
}

func neighborsRecord(at time.Time, observer string, retained bool) Record {
	b, _ := json.Marshal(map[string]any{"timestamp": "2026-07-18T12:34:56+00:00", "origin": "DEN", "origin_id": observer,
		"total_neighbors": 1, "queried_neighbors": 1,
		"neighbors": []map[string]any{{"pubkey": obsB, "snr": 9.75, "rssi": -88, "heard_secs_ago": 42, "scopes": "DEN", "status": "responded"}}})
	return Record{ReceivedAt: at, Source: "test", Topic: "meshcore/sjc/" + observer + "/neighbors", Payload: b, Retained: retained}
}

// corpusRaws returns n distinct corpus frames of a payload type.
func corpusRaws(t testing.TB, payloadType decoder.PayloadType, n int) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, r := range writertest.CorpusRecords(t) {
		var p struct{ Raw string }
		json.Unmarshal(r.Payload, &p)
		if f, err := decoder.DecodeFrame(p.Raw); err == nil && f.Type == payloadType && !seen[f.Hash.String()] {
			seen[f.Hash.String()] = true
			out = append(out, p.Raw)
			if len(out) == n {
				return out
			}
		}
	}
	t.Fatalf("fewer than %d corpus packets of type %v", n, payloadType)
	return nil
}

func observerRow(t testing.TB, cfg *shared.Config, id string) (packets int64, lastSeen string) {
	t.Helper()
	db := writertest.OpenRaw(t, cfg.DBPath)
	db.QueryRow(`SELECT packet_count, last_seen FROM observers WHERE id = ?`, id).Scan(&packets, &lastSeen)
	return packets, lastSeen
}

// TestIngest_Dialects_EachFormStored: `…/raw`, `binary/<GATEWAY>`, PC's
// classic `meshcore/packets` (observer from origin_id) and `…/neighbors`
// each end where they belong.
func TestIngest_Dialects_EachFormStored(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	raws := corpusRaws(t, decoder.TypeGrpTxt, 3)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	classic := packetRecord(t0, obsC, raws[2], map[string]any{"origin_id": strings.ToLower(obsC)})
	classic.Topic = "meshcore/packets"
	w := drain(t, spoolOf(t, []Record{
		rawRecord(t0, obsA, raws[0]),
		binaryRecord(t, t0, obsB, raws[1]),
		classic,
		neighborsRecord(t0, obsA, false),
		binaryRecord(t, t0, "not-a-key", raws[1]),
	}), Options{Config: cfg}, 5)
	db := writertest.OpenRaw(t, cfg.DBPath)
	for i, obs := range []string{obsA, obsB, obsC} {
		if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observations o JOIN observers r ON r.rowid = o.observer_idx
			JOIN transmissions x ON x.id = o.transmission_id WHERE r.id = ? AND x.raw_hex = ?`, obs, raws[i]); n != 1 {
			t.Errorf("form %d: %d observations of observer %s, want 1", i, n, obs[:4])
		}
		if packets, _ := observerRow(t, cfg, obs); packets != 1 {
			t.Errorf("form %d: observer %s packet_count %d, want 1", i, obs[:4], packets)
		}
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_neighbor_reports WHERE observer_id = ?`, obsA); n != 1 {
		t.Errorf("%d neighbor reports stored, want 1", n)
	}
	if n := w.Stats().NeighborReports.Load(); n != 1 {
		t.Errorf("stats neighbor_reports %d, want 1", n)
	}
	if n := w.Stats().Drops()[DropGatewayNotKey]; n != 1 {
		t.Errorf("drops[%s] = %d, want 1", DropGatewayNotKey, n)
	}
}

// TestIngest_PacketsAndRaw_OneReceptionCountsOnce: a reception published
// as `/packets` and `/raw` is one observation and one packet_count, in
// either order, and gets the `/packets` SNR; a real double hearing in both
// forms counts twice; two messages of one form are never a pair; forms
// more than 10 s apart are two receptions.
func TestIngest_PacketsAndRaw_OneReceptionCountsOnce(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	snr := map[string]any{"SNR": 7.5, "RSSI": -101, "direction": "rx"}
	for _, c := range []struct {
		name       string
		recs       []Record
		packets    int64
		duplicates int64
	}{
		{"raw then packets", []Record{rawRecord(t0, obsA, raw), packetRecord(t0.Add(time.Second), obsA, raw, snr)}, 1, 1},
		{"packets then raw", []Record{packetRecord(t0, obsA, raw, snr), rawRecord(t0.Add(time.Second), obsA, raw)}, 1, 1},
		{"heard twice, both forms", []Record{rawRecord(t0, obsA, raw), packetRecord(t0, obsA, raw, snr),
			packetRecord(t0.Add(2*time.Second), obsA, raw, snr), rawRecord(t0.Add(2*time.Second), obsA, raw)}, 2, 2},
		{"two of one form", []Record{packetRecord(t0, obsA, raw, snr), packetRecord(t0.Add(time.Second), obsA, raw, snr)}, 2, 0},
		{"11 s apart", []Record{rawRecord(t0, obsA, raw), packetRecord(t0.Add(11*time.Second), obsA, raw, snr)}, 2, 0},
		{"other observer", []Record{rawRecord(t0, obsA, raw), packetRecord(t0, obsB, raw, snr)}, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := writertest.CorpusConfig(t)
			w := drain(t, spoolOf(t, c.recs), Options{Config: cfg, BatchMaxRecords: 1}, int64(len(c.recs)))
			if packets, _ := observerRow(t, cfg, obsA); packets != c.packets {
				t.Errorf("packet_count %d, want %d", packets, c.packets)
			}
			if n := w.Stats().Drops()[DropDuplicateForm]; n != c.duplicates {
				t.Errorf("duplicate_form %d, want %d", n, c.duplicates)
			}
			db := writertest.OpenRaw(t, cfg.DBPath)
			if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observations WHERE snr = 7.5 AND rssi = -101 AND direction = 'rx'`); n != 1 {
				t.Errorf("%d observations with the /packets SNR, RSSI and direction, want 1", n)
			}
		})
	}
}

// TestWriter_PacketsAndRaw_PairSplitByRestart: the writer stops between the
// two forms of a reception; the one that resumes still knows the first
// (it is stored with the position) and does not count the second.
func TestWriter_PacketsAndRaw_PairSplitByRestart(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "spool")
	writertest.AppendToSpool(t, dir, []Record{rawRecord(t0, obsA, raw)}, spool.Options{})
	drainDir(t, Options{Config: cfg}, dir, 1)
	writertest.AppendToSpool(t, dir, []Record{packetRecord(t0.Add(3*time.Second), obsA, raw, map[string]any{"SNR": 7.5})}, spool.Options{})
	w := drainDir(t, Options{Config: cfg}, dir, 1)
	if packets, _ := observerRow(t, cfg, obsA); packets != 1 {
		t.Errorf("packet_count %d after a restart between the two forms, want 1", packets)
	}
	if n := w.Stats().Drops()[DropDuplicateForm]; n != 1 {
		t.Errorf("duplicate_form %d, want 1", n)
	}
}

// TestWriter_PacketsAndRaw_PairSplitByUpgrade: a version that stored the
// unpaired receptions as one blob in meshingest_state stops between the
// two forms of a reception; this one reads the blob, does not count the
// second form, and leaves the receptions in meshingest_forms only.
func TestWriter_PacketsAndRaw_PairSplitByUpgrade(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	frame, err := decoder.DecodeFrame(raw)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "spool")
	writertest.AppendToSpool(t, dir, []Record{rawRecord(t0, obsA, raw)}, spool.Options{})
	drainDir(t, Options{Config: cfg}, dir, 1)

	// What the earlier version left: version 1, the base time, then per
	// observer its id and receptions (fingerprint, form, ms before base).
	legacy := binary.AppendUvarint([]byte{1}, uint64(t0.UnixMilli()))
	legacy = binary.AppendUvarint(legacy, uint64(len(obsA)))
	legacy = append(legacy, obsA...)
	legacy = binary.AppendUvarint(legacy, 1)
	legacy = binary.LittleEndian.AppendUint64(legacy, frame.Fingerprint())
	legacy = append(legacy, 1, 0)
	db := writertest.OpenRaw(t, cfg.DBPath)
	for _, q := range []string{`DELETE FROM meshingest_forms`, `DELETE FROM meshingest_state WHERE key = 'unpaired_forms'`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO meshingest_state (key, value) VALUES ('unpaired_forms', ?)`, legacy); err != nil {
		t.Fatal(err)
	}

	writertest.AppendToSpool(t, dir, []Record{packetRecord(t0.Add(3*time.Second), obsA, raw, map[string]any{"SNR": 7.5})}, spool.Options{})
	w := drainDir(t, Options{Config: cfg}, dir, 1)
	if packets, _ := observerRow(t, cfg, obsA); packets != 1 {
		t.Errorf("packet_count %d after an upgrade between the two forms, want 1", packets)
	}
	if n := w.Stats().Drops()[DropDuplicateForm]; n != 1 {
		t.Errorf("duplicate_form %d, want 1", n)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_state WHERE key = 'unpaired_forms'`); n != 0 {
		t.Errorf("the earlier version's blob is still stored")
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM meshingest_forms`); n > 1 {
		t.Errorf("%d rows in meshingest_forms, want at most the snapshot that replaced the blob", n)
	}
}

// ownAdvert is a zero-hop advert of the corpus and the key that sent it.
func ownAdvert(t testing.TB) (raw, key string) {
	t.Helper()
	for _, r := range writertest.CorpusRecords(t) {
		var p struct{ Raw string }
		json.Unmarshal(r.Payload, &p)
		if f, err := decoder.DecodeFrame(p.Raw); err == nil && f.Type == decoder.TypeAdvert && f.PathHops == 0 && len(f.Payload) >= 32 {
			return p.Raw, strings.ToUpper(hex.EncodeToString(f.Payload[:32]))
		}
	}
	t.Skip("no zero-hop advert in the corpus")
	return "", ""
}

// TestIngest_OwnAdvertOnRaw_Dropped: an observer's own zero-hop advert on
// `…/raw` or binary is a transmit log (own_transmission); the same frame
// reported by another observer is a reception.
func TestIngest_OwnAdvertOnRaw_Dropped(t *testing.T) {
	raw, key := ownAdvert(t)
	cfg := writertest.CorpusConfig(t)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	w := drain(t, spoolOf(t, []Record{rawRecord(t0, key, raw), binaryRecord(t, t0, key, raw), rawRecord(t0, obsA, raw)}), Options{Config: cfg}, 3)
	if n := w.Stats().Drops()[DropOwnTransmission]; n != 2 {
		t.Errorf("own_transmission %d, want 2", n)
	}
	if n := writertest.Count(t, writertest.OpenRaw(t, cfg.DBPath), `SELECT COUNT(*) FROM observations`); n != 1 {
		t.Errorf("%d observations, want 1 (observer A's)", n)
	}
}

// TestIngest_DialectFilters: the blacklist sees the observer an origin_id
// names; the IATA whitelist applies to `…/raw` and `…/neighbors`, and to
// binary topics with their source's region.
func TestIngest_DialectFilters(t *testing.T) {
	raws := corpusRaws(t, decoder.TypeGrpTxt, 2)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	cfg := writertest.CorpusConfig(t)
	cfg.ObserverBlacklist = []string{strings.ToLower(obsC)}
	cfg.ObserverIATAWhitelist = []string{"SJC"}
	cfg.MQTTSources = []shared.Source{{Name: "lax", Region: "LAX"}, {Name: "test", Region: "SJC"}}
	classic := packetRecord(t0, obsC, raws[0], map[string]any{"origin_id": obsC})
	classic.Topic = "meshcore/packets"
	laxRaw := rawRecord(t0, obsA, raws[0])
	laxRaw.Topic = strings.Replace(laxRaw.Topic, "/sjc/", "/LAX/", 1)
	laxNeighbors := neighborsRecord(t0, obsA, false)
	laxNeighbors.Topic = strings.Replace(laxNeighbors.Topic, "/sjc/", "/LAX/", 1)
	laxBinary := binaryRecord(t, t0, obsB, raws[1])
	laxBinary.Source = "lax"
	w := drain(t, spoolOf(t, []Record{classic, laxRaw, laxNeighbors, laxBinary, binaryRecord(t, t0, obsB, raws[1])}), Options{Config: cfg}, 5)
	drops := w.Stats().Drops()
	if drops[DropBlacklisted] != 1 || drops[DropNotWhitelisted] != 3 {
		t.Errorf("drops %v: want 1 %s and 3 %s", drops, DropBlacklisted, DropNotWhitelisted)
	}
	if packets, _ := observerRow(t, cfg, obsB); packets != 1 {
		t.Errorf("observer B (binary from the SJC source) packet_count %d, want 1", packets)
	}
}
