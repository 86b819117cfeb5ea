package writer

import (
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/redelivery"
)

const obsA = "AAAA000000000000000000000000000000000000000000000000000000000001"
const obsB = "BBBB000000000000000000000000000000000000000000000000000000000002"

func packetRecord(at time.Time, observer, raw string, extra map[string]any) Record {
	p := map[string]any{"origin": "name-" + observer[:4], "raw": raw, "direction": "rx"}
	for k, v := range extra {
		p[k] = v
	}
	b, _ := json.Marshal(p)
	return Record{ReceivedAt: at, Source: "test", Topic: "meshcore/sjc/" + observer + "/packets", Payload: b}
}

func statusRecord(at time.Time, observer string, payload map[string]any, retained bool) Record {
	b, _ := json.Marshal(payload)
	return Record{ReceivedAt: at, Source: "test", Topic: "meshcore/SJC/" + observer + "/status", Payload: b, Retained: retained}
}

// corpusRaw returns the raw of the first corpus packet of a payload type.
func corpusRaw(t testing.TB, payloadType decoder.PayloadType) string {
	t.Helper()
	for _, r := range writertest.CorpusRecords(t) {
		if !strings.HasSuffix(r.Topic, "/packets") {
			continue
		}
		var p struct{ Raw string }
		json.Unmarshal(r.Payload, &p)
		if f, err := decoder.DecodeFrame(p.Raw); err == nil && f.Type == payloadType {
			return p.Raw
		}
	}
	t.Fatalf("no corpus packet of type %v", payloadType)
	return ""
}

func runRecords(t *testing.T, cfg *shared.Config, recs ...Record) {
	t.Helper()
	drain(t, spoolOf(t, recs), Options{Config: cfg}, int64(len(recs)))
}

// TestWriter_BatchBoundaries_SameRows: the per-batch aggregation of
// counters and times gives the same rows as one statement per message,
// whatever the batch size.
func TestWriter_BatchBoundaries_SameRows(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	recs := writertest.CorpusRecords(t)
	var dumps []map[string][]string
	for _, size := range []int{1, 7, 100000} {
		cfg := writertest.CorpusConfig(t)
		drain(t, spoolOf(t, append([]Record(nil), recs...)), Options{Config: cfg, BatchMaxRecords: size}, int64(len(recs)))
		dumps = append(dumps, dumpDB(t, cfg.DBPath))
	}
	diffDumps(t, dumps[0], dumps[1])
	diffDumps(t, dumps[0], dumps[2])
}

// TestWriter_BacklogSpooledYesterday_StoredWithYesterdaysTimes: every stored
// time is the receive time the spool recorded, not the time of writing.
func TestWriter_BacklogSpooledYesterday_StoredWithYesterdaysTimes(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	yesterday := time.Now().UTC().Add(-24 * time.Hour).Truncate(time.Second)
	advert := corpusRaw(t, decoder.TypeAdvert)
	runRecords(t, cfg,
		statusRecord(yesterday, obsA, map[string]any{"status": "online", "origin": "A", "radio": "910,62.5,7,5"}, false),
		packetRecord(yesterday.Add(time.Minute), obsA, advert, nil),
		packetRecord(yesterday.Add(2*time.Minute), obsB, advert, nil),
	)
	db := writertest.OpenRaw(t, cfg.DBPath)
	ts := func(d time.Duration) string { return yesterday.Add(d).Format(rfc3339Seconds) }
	var firstSeen string
	var lastSeen int64
	db.QueryRow(`SELECT first_seen, last_seen FROM transmissions`).Scan(&firstSeen, &lastSeen)
	if firstSeen != ts(time.Minute) || lastSeen != yesterday.Add(2*time.Minute).Unix() {
		t.Errorf("transmission first_seen %s last_seen %d; want %s and %d", firstSeen, lastSeen, ts(time.Minute), yesterday.Add(2*time.Minute).Unix())
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observations WHERE timestamp IN (?, ?)`,
		yesterday.Add(time.Minute).Unix(), yesterday.Add(2*time.Minute).Unix()); n != 2 {
		t.Errorf("%d observations stamped with their receive time, want 2", n)
	}
	var oFirst, oLast, oPkt string
	db.QueryRow(`SELECT first_seen, last_seen, last_packet_at FROM observers WHERE id = ?`, obsA).Scan(&oFirst, &oLast, &oPkt)
	if oFirst != ts(0) || oLast != ts(time.Minute) || oPkt != ts(time.Minute) {
		t.Errorf("observer first/last/last_packet %s %s %s; want %s %s %s", oFirst, oLast, oPkt, ts(0), ts(time.Minute), ts(time.Minute))
	}
	var nFirst, nLast string
	db.QueryRow(`SELECT first_seen, last_seen FROM nodes`).Scan(&nFirst, &nLast)
	if nFirst != ts(time.Minute) || nLast != ts(2*time.Minute) {
		t.Errorf("node first/last %s %s; want %s %s", nFirst, nLast, ts(time.Minute), ts(2*time.Minute))
	}
	var mts string
	db.QueryRow(`SELECT timestamp FROM observer_metrics`).Scan(&mts)
	if want := FormatSeconds(roundToInterval(yesterday.Unix(), 300*time.Second)); mts != want {
		t.Errorf("observer_metrics timestamp %s, want %s (receive time rounded to 300 s)", mts, want)
	}
}

func TestIngest_OutOfOrderObservation_LowersFirstSeen(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	runRecords(t, cfg,
		packetRecord(t0, obsA, raw, nil),
		packetRecord(t0.Add(-time.Hour), obsB, raw, nil),
		packetRecord(t0.Add(time.Hour), obsB, raw, map[string]any{"SNR": "7.5", "RSSI": "-101dBm"}),
	)
	db := writertest.OpenRaw(t, cfg.DBPath)
	var firstSeen string
	var lastSeen int64
	db.QueryRow(`SELECT first_seen, last_seen FROM transmissions`).Scan(&firstSeen, &lastSeen)
	if firstSeen != t0.Add(-time.Hour).Format(rfc3339Seconds) || lastSeen != t0.Add(time.Hour).Unix() {
		t.Errorf("first_seen %s last_seen %d", firstSeen, lastSeen)
	}
	// B reported the same frame with the same path twice: one row, filled
	// with the values the second report added.
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observations`); n != 2 {
		t.Errorf("%d observations, want 2", n)
	}
	var snr, rssi float64
	db.QueryRow(`SELECT snr, rssi FROM observations o JOIN observers b ON b.rowid = o.observer_idx WHERE b.id = ?`, obsB).Scan(&snr, &rssi)
	if snr != 7.5 || rssi != -101 {
		t.Errorf("snr %v rssi %v, want 7.5 and -101", snr, rssi)
	}
	if n := writertest.Count(t, db, `SELECT packet_count FROM observers WHERE id = ?`, obsB); n != 2 {
		t.Errorf("packet_count %d, want 2 (every message counts)", n)
	}
}

func TestIngest_RetainedStatus_UpdatesMetadataOnly(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	runRecords(t, cfg,
		statusRecord(t0, obsB, map[string]any{"status": "online", "origin": "ghost", "model": "old"}, true),
		statusRecord(t0, obsA, map[string]any{"status": "online", "origin": "A", "model": "v1"}, false),
		statusRecord(t0.Add(time.Hour), obsA, map[string]any{"status": "online", "origin": "A2", "model": "v2", "repeat": "off"}, true),
	)
	db := writertest.OpenRaw(t, cfg.DBPath)
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observers WHERE id = ?`, obsB); n != 0 {
		t.Error("a retained status created an observer row")
	}
	var name, model, lastSeen string
	var packets, canRelay, seen int64
	db.QueryRow(`SELECT name, model, last_seen, packet_count, can_relay, can_relay_seen FROM observers WHERE id = ?`, obsA).
		Scan(&name, &model, &lastSeen, &packets, &canRelay, &seen)
	if name != "A2" || model != "v2" || canRelay != 0 || seen != 1 {
		t.Errorf("metadata not applied: name %s model %s can_relay %d seen %d", name, model, canRelay, seen)
	}
	if lastSeen != t0.Format(rfc3339Seconds) || packets != 1 {
		t.Errorf("retained status refreshed liveness: last_seen %s packet_count %d", lastSeen, packets)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observer_metrics`); n != 1 {
		t.Errorf("%d observer_metrics rows, want 1 (the live status only)", n)
	}
}

func TestIngest_InvalidSignature_OneDroppedRowAndNothingElse(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeAdvert)
	f, _ := decoder.DecodeFrame(raw)
	b := append([]byte(nil), f.Bytes...)
	sigAt := len(b) - len(f.Payload) + 32 + 4 // payload: pubkey, timestamp, signature
	b[sigAt] ^= 0x01
	bad := strings.ToUpper(hex.EncodeToString(b))
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)

	cfg := writertest.CorpusConfig(t)
	runRecords(t, cfg, packetRecord(t0, obsA, bad, nil))
	db := writertest.OpenRaw(t, cfg.DBPath)
	var reason, hash, pubkey, observer, droppedAt string
	db.QueryRow(`SELECT reason, hash, node_pubkey, observer_id, dropped_at || '' FROM dropped_packets`).Scan(&reason, &hash, &pubkey, &observer, &droppedAt)
	if reason != "invalid signature" || len(hash) != 16 || len(pubkey) != 64 || observer != obsA {
		t.Errorf("dropped row: reason %q hash %q node %q observer %q", reason, hash, pubkey, observer)
	}
	if droppedAt != t0.Format(sqliteDateTime) {
		t.Errorf("dropped_at %s, want the receive time %s", droppedAt, t0.Format(sqliteDateTime))
	}
	for _, table := range []string{"transmissions", "observations", "nodes", "observers"} {
		if n := writertest.Count(t, db, "SELECT COUNT(*) FROM "+table); n != 0 {
			t.Errorf("%s has %d rows after a bad-signature advert", table, n)
		}
	}

	off := false
	cfg = writertest.CorpusConfig(t)
	cfg.ValidateSignatures = &off
	runRecords(t, cfg, packetRecord(t0, obsA, bad, nil))
	db = writertest.OpenRaw(t, cfg.DBPath)
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM nodes`); n != 1 {
		t.Errorf("validateSignatures=false: %d nodes, want 1", n)
	}
}

func TestIngest_Filters(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	cfg := writertest.CorpusConfig(t)
	cfg.ObserverBlacklist = []string{strings.ToLower(obsB)}
	cfg.ObserverIATAWhitelist = []string{"sjc"}
	oak := packetRecord(t0, obsA, raw, nil)
	oak.Topic = strings.Replace(oak.Topic, "/sjc/", "/OAK/", 1)
	w := drain(t, spoolOf(t, []Record{
		packetRecord(t0, obsB, raw, nil), // blacklisted
		oak,                              // not whitelisted
		packetRecord(t0, obsA, raw, map[string]any{"direction": "tx"}),
		{ReceivedAt: t0, Topic: "meshcore/SJC/" + obsA + "/packets", Payload: []byte("not json")},
		{ReceivedAt: t0, Topic: "meshcore/SJC/" + obsA + "/debug", Payload: []byte(`{}`)},
	}), Options{Config: cfg}, 5)
	db := writertest.OpenRaw(t, cfg.DBPath)
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions`); n != 0 {
		t.Errorf("%d transmissions stored from filtered messages", n)
	}
	drops := w.Stats().Drops()
	for _, r := range []string{DropBlacklisted, DropNotWhitelisted, DropDirectionTx, DropUnreadable, DropIgnoredTopic} {
		if drops[r] != 1 {
			t.Errorf("drops[%s] = %d, want 1 (all: %v)", r, drops[r], drops)
		}
	}
	var reason string
	db.QueryRow(`SELECT reason FROM dropped_packets`).Scan(&reason)
	if !strings.HasPrefix(reason, DropUnreadable) {
		t.Errorf("unreadable payload's dropped_packets reason %q", reason)
	}
}

func TestIngest_NaiveClock_RecordsSkew(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	naive := func(at time.Time) map[string]any {
		// A publisher whose clock is UTC-7 and writes no zone.
		return map[string]any{"timestamp": at.Add(-7 * time.Hour).Format("2006-01-02T15:04:05")}
	}
	var recs []Record
	for _, d := range []time.Duration{0, time.Hour, 48 * time.Hour} {
		recs = append(recs, packetRecord(t0.Add(d), obsA, raw, naive(t0.Add(d))))
	}
	recs = append(recs, packetRecord(t0.Add(49*time.Hour), obsA, raw, map[string]any{"timestamp": t0.Format(time.RFC3339)}))
	runRecords(t, cfg, recs...)
	db := writertest.OpenRaw(t, cfg.DBPath)
	var skew, n int64
	var at string
	db.QueryRow(`SELECT clock_skew_seconds, clock_skew_count_24h, clock_last_naive_at FROM observers`).Scan(&skew, &n, &at)
	if skew != -7*3600 || n != 1 || at != t0.Add(48*time.Hour).Format(rfc3339Seconds) {
		t.Errorf("skew %d count %d at %s; want -25200, 1 (reset after 24 h), %s", skew, n, at, t0.Add(48*time.Hour).Format(rfc3339Seconds))
	}
}

func TestIngest_CompanionMessage(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	runRecords(t, cfg, Record{ReceivedAt: t0, Topic: "meshcore/message/channel/3",
		Payload: []byte(`{"text":"Bob: hello","SNR":5}`)})
	db := writertest.OpenRaw(t, cfg.DBPath)
	var raw, ch, decoded string
	var pt int
	db.QueryRow(`SELECT raw_hex, channel_hash, decoded_json, payload_type FROM transmissions`).Scan(&raw, &ch, &decoded, &pt)
	if raw != "" || ch != "ch3" || pt != 5 || !strings.Contains(decoded, `"sender":"Bob"`) {
		t.Errorf("companion transmission raw %q channel %q type %d decoded %s", raw, ch, pt, decoded)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observations WHERE observer_idx IS NULL AND path_json = '[]' AND snr = 5`); n != 1 {
		t.Error("companion observation missing or wrong")
	}
}

func TestIngest_GeoFilter(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeAdvert)
	f, _ := decoder.DecodeFrame(raw)
	n, _ := decoder.DecodePacket(f, decoder.Options{}).Node()
	if !n.Lat.Valid {
		t.Skip("first corpus advert has no position")
	}
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	far := n.Lat.Float64 + 10
	for _, mode := range []string{"flag", "drop"} {
		cfg := writertest.CorpusConfig(t)
		cfg.GeoFilter = &shared.GeoFilter{LatMin: &far}
		cfg.ForeignAdverts = &shared.ForeignAdverts{Mode: mode}
		runRecords(t, cfg, packetRecord(t0, obsA, raw, nil))
		db := writertest.OpenRaw(t, cfg.DBPath)
		got := fmt.Sprint(writertest.Count(t, db, `SELECT COUNT(*) FROM nodes WHERE foreign_advert = 1`), writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions`))
		want := map[string]string{"flag": "1 1", "drop": "0 0"}[mode]
		if got != want {
			t.Errorf("mode %s: foreign nodes, transmissions = %s, want %s", mode, got, want)
		}
	}
}

func nullF(v float64) sql.NullFloat64 { return sql.NullFloat64{Float64: v, Valid: true} }

// qos1 makes r a QoS 1 delivery with packet id id, redelivered (DUP) or not.
func qos1(r Record, id uint16, dup bool) Record {
	r.QoS, r.MessageID, r.Duplicate = 1, id, dup
	return r
}

// TestIngest_QoS1Redelivery_CountedOnce: a message the broker delivers
// again with the DUP flag and the same packet id (the receiver died
// between its fsync and its ack) changes nothing when its first delivery
// was applied, whatever its kind; one whose first delivery never reached
// the spool counts once. An exact repeat without the flag (an observer
// publishing twice) still counts twice, as in CoreScope.
func TestIngest_QoS1Redelivery_CountedOnce(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	other := corpusRaw(t, decoder.TypeReq)
	f, _ := decoder.DecodeFrame(corpusRaw(t, decoder.TypeAdvert))
	bad := append([]byte(nil), f.Bytes...)
	bad[len(bad)-len(f.Payload)+40] ^= 0x01
	badRaw := strings.ToUpper(hex.EncodeToString(bad))
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	dup := func(r Record, later time.Duration) Record {
		r.Duplicate = true
		r.ReceivedAt = r.ReceivedAt.Add(later)
		return r
	}
	status := qos1(statusRecord(t0, obsA, map[string]any{"status": "online", "origin": "A", "radio": "910,62.5,7,5"}, false), 1, false)
	pkt := qos1(packetRecord(t0.Add(time.Second), obsA, raw, nil), 2, false)
	badAdvert := qos1(packetRecord(t0.Add(2*time.Second), obsA, badRaw, nil), 3, false)
	companion := qos1(Record{ReceivedAt: t0, Topic: "meshcore/message/channel/3", Payload: []byte(`{"text":"Bob: hello","SNR":5}`)}, 4, false)
	recs := []Record{
		status, pkt, badAdvert, companion,
		qos1(packetRecord(t0.Add(3*time.Second), obsA, raw, nil), 5, false), // published twice: counts
		dup(status, 10*time.Minute), dup(pkt, 10*time.Minute), dup(badAdvert, 10*time.Minute), dup(companion, 10*time.Minute),
		dup(qos1(packetRecord(t0.Add(4*time.Second), obsA, other, nil), 6, false), 10*time.Minute), // first delivery lost
	}
	for _, size := range []int{1, 1000} {
		cfg := writertest.CorpusConfig(t)
		w := drain(t, spoolOf(t, append([]Record(nil), recs...)), Options{Config: cfg, BatchMaxRecords: size}, int64(len(recs)))
		db := writertest.OpenRaw(t, cfg.DBPath)
		for _, c := range []struct {
			what, query string
			want        int64
		}{
			{"packet_count", `SELECT packet_count FROM observers`, 4},
			{"observations", `SELECT COUNT(*) FROM observations`, 3},
			{"companion transmissions", `SELECT COUNT(*) FROM transmissions WHERE channel_hash = 'ch3'`, 1},
			{"observer_metrics", `SELECT COUNT(*) FROM observer_metrics`, 1},
			{"dropped_packets", `SELECT COUNT(*) FROM dropped_packets`, 1},
		} {
			if got := writertest.Count(t, db, c.query); got != c.want {
				t.Errorf("batch size %d: %s = %d, want %d", size, c.what, got, c.want)
			}
		}
		if n := w.Stats().Drops()[DropRedelivered]; n != 4 {
			t.Errorf("batch size %d: %d redeliveries recognised, want 4", size, n)
		}
	}
}

// TestIngest_QoS1Redelivery_SecondCopyOfARepeat: an observer publishes the
// same observation twice (other SNR: other bytes) and the receiver dies
// after spooling the first copy but before the second: the broker
// redelivers the second with DUP. The observation row exists (from the
// first copy), yet the second copy never counted: it must count now. A
// redelivery of the first copy itself changes nothing, and a packet id
// used earlier by another message does not make a redelivery.
func TestIngest_QoS1Redelivery_SecondCopyOfARepeat(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	older := qos1(packetRecord(t0, obsA, corpusRaw(t, decoder.TypeReq), nil), 2, false)
	first := qos1(packetRecord(t0.Add(time.Second), obsA, raw, map[string]any{"SNR": 7.5}), 1, false)
	second := qos1(packetRecord(t0.Add(time.Second), obsA, raw, map[string]any{"SNR": 8.25}), 2, true) // its first delivery was lost
	again := qos1(first, 1, true)                                                                      // the first copy redelivered
	recs := []Record{older, first, second, again}
	for _, size := range []int{1, 1000} {
		cfg := writertest.CorpusConfig(t)
		w := drain(t, spoolOf(t, append([]Record(nil), recs...)), Options{Config: cfg, BatchMaxRecords: size}, int64(len(recs)))
		db := writertest.OpenRaw(t, cfg.DBPath)
		if got := writertest.Count(t, db, `SELECT packet_count FROM observers`); got != 3 {
			t.Errorf("batch size %d: packet_count %d, want 3 (older, first, second)", size, got)
		}
		if got := writertest.Count(t, db, `SELECT COUNT(*) FROM observations`); got != 2 {
			t.Errorf("batch size %d: %d observations, want 2", size, got)
		}
		if n := w.Stats().Drops()[DropRedelivered]; n != 1 {
			t.Errorf("batch size %d: %d redeliveries recognised, want 1 (the first copy's)", size, n)
		}
	}
}

// TestIngest_QoS1Redelivery_AcrossWriterRestart: as above, but the writer
// is restarted between the first copy and the redelivered second one (the
// harness's receiver-kill run starts its writer while the load runs): the
// memory of the first delivery comes from the database, so the second
// copy still counts and a redelivery of the first still does not.
func TestIngest_QoS1Redelivery_AcrossWriterRestart(t *testing.T) {
	raw := corpusRaw(t, decoder.TypeGrpTxt)
	t0 := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	first := qos1(packetRecord(t0, obsA, raw, map[string]any{"SNR": 7.5}), 1, false)
	second := qos1(packetRecord(t0, obsA, raw, map[string]any{"SNR": 8.25}), 2, true) // its first delivery was lost
	again := qos1(first, 1, true)
	cfg := writertest.CorpusConfig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	writertest.AppendToSpool(t, dir, []Record{first}, spool.Options{})
	drain(t, spoolOf2(t, dir), Options{Config: cfg}, 1)
	writertest.AppendToSpool(t, dir, []Record{second, again}, spool.Options{})
	w := drain(t, spoolOf2(t, dir), Options{Config: cfg}, 2)
	db := writertest.OpenRaw(t, cfg.DBPath)
	if got := writertest.Count(t, db, `SELECT packet_count FROM observers`); got != 2 {
		t.Errorf("packet_count %d, want 2 (first, second)", got)
	}
	if n := w.Stats().Drops()[DropRedelivered]; n != 1 {
		t.Errorf("%d redeliveries recognised, want 1 (the first copy's)", n)
	}
	if got := storedDeliveries(t, db); got != 3 {
		t.Errorf("%d deliveries stored, want 3 (one per applied record)", got)
	}
}

// storedDeliveries counts the QoS 1 deliveries meshingest_deliveries lists.
func storedDeliveries(t *testing.T, db *sql.DB) int {
	t.Helper()
	rows, err := db.Query(`SELECT digests FROM meshingest_deliveries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	total := 0
	for rows.Next() {
		var blob []byte
		if err := rows.Scan(&blob); err != nil {
			t.Fatal(err)
		}
		n, err := redelivery.Decode(blob, func(redelivery.Key, uint64) {})
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}
