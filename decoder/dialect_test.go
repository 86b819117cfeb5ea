package decoder

import (
	"database/sql"
	"errors"
	"strings"
	"testing"
)

// One test per publisher dialect (mqtt-formats.md §1, §4a). The payloads
// are the publishers' own formats, byte for byte where their source has a
// format string.

const (
	dialectObserver = "EC3433BB3ADF1ACAEE0CE117600B0CA473705486EC666137379A1E8CBB7E75F4"
	// A real 6-hop GRP_TXT of the capture (content hash e26ad9dfa1ac3f7e).
	dialectFrame = "1546DA2A28DB852827D710004596D92F365EB798ABCF98ADE9AD5564C03150295EB15B8BE1B388EBB7733D3112CABD42830928E0AF222205834112BA9A47D6E344"
	// Vector adv-valid-mh: a zero-hop flood ADVERT and its advertiser's key.
	dialectAdvert    = "11007E7662676F7F0850A8A355BAAFBFC1EB7B4174C340442D7D7161C9474A2C94006CE7CF682E58408DD8FCC51906ECA98EBF94A037886BDADE7ECD09FD92B839491DF3809C9454F5286D1D3370AC31A34593D569E9A042A3B41FD331DFFB7E18599CE1E60992A076D50238C5B8F85757375354522F50756765744D65736820436F75676172"
	dialectAdvertKey = "7E7662676F7F0850A8A355BAAFBFC1EB7B4174C340442D7D7161C9474A2C9400"
)

func TestParseTopic_Dialects(t *testing.T) {
	pk := dialectObserver
	cases := []struct {
		topic string
		want  Topic
	}{
		{"meshcore/SJC/" + pk + "/raw", Topic{Kind: KindRawPacket, Region: "SJC", ObserverID: pk}},
		{"meshcore/SJC/" + pk + "/neighbors", Topic{Kind: KindNeighbors, Region: "SJC", ObserverID: pk}},
		{"meshcore/raw", Topic{Kind: KindRawPacket}},
		{"binary/" + pk, Topic{Kind: KindBinaryPacket, ObserverID: pk}},
		{"binary/gw-kitchen", Topic{Kind: KindBinaryPacket, ObserverID: "gw-kitchen"}},
		{"binary/" + pk + "/x", Topic{Kind: KindIgnored}},
		// agessaman custom templates: `mynetwork/{device}/{type}`, `…/{iata}/{type}`.
		{"mynetwork/" + pk + "/packets", Topic{Kind: KindPacket, ObserverID: pk}},
		{"mynetwork/" + strings.ToLower(pk) + "/status", Topic{Kind: KindStatus, ObserverID: strings.ToLower(pk)}},
		{"mynetwork/SJC/raw", Topic{Kind: KindRawPacket, Region: "SJC"}},
		{"mynetwork/SJC/debug", Topic{Kind: KindIgnored}},
		{"meshcore/status", Topic{Kind: KindIgnored}}, // BR's plain text, still
		{"meshcore/neighbors", Topic{Kind: KindIgnored}},
	}
	for _, c := range cases {
		if got := ParseTopic(c.topic); got != c.want {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", c.topic, got, c.want)
		}
	}
	for k := KindIgnored; k <= KindNeighbors; k++ {
		if k.String() == "unknown" {
			t.Errorf("kind %d has no name", k)
		}
	}
}

// observe is the writer's per-message path for the frame-carrying kinds.
func observe(t *testing.T, topic string, payload []byte) (PacketMessage, Frame, string) {
	t.Helper()
	tp := ParseTopic(topic)
	m, err := ParseObservation(tp, payload)
	if err != nil {
		t.Fatalf("%s: %v", topic, err)
	}
	f, err := DecodeFrame(m.Raw)
	if err != nil {
		t.Fatalf("%s: frame: %v", topic, err)
	}
	id, err := m.Observer(tp)
	if err != nil {
		t.Fatalf("%s: observer: %v", topic, err)
	}
	return m, f, id
}

// OffbandMesh firmware (MqttPayload.cpp) publishes every received packet on
// `/packets` (slim body, numbers as strings, naive local time) and on
// `/raw` (origin, origin_id, timestamp, type, data). Both forms must give
// the same observer, the same frame and so the same content hash and
// fingerprint, and differ in Form and in the reception fields, which only
// `/packets` has.
func TestParseObservation_OffbandMeshPacketsAndRaw(t *testing.T) {
	base := "meshcore/SJC/" + dialectObserver
	packets := `{"origin":"Hilltop \ud83d\udce1","timestamp":"2026-07-18T09:12:01.000000","type":"PACKET","direction":"rx","raw":"` +
		dialectFrame + `","SNR":"12.5","RSSI":"-71","score":"1000"}`
	raw := `{"origin":"Hilltop \ud83d\udce1","origin_id":"` + dialectObserver + `","timestamp":"2026-07-18T09:12:01.000000","type":"RAW","data":"` + dialectFrame + `"}`
	pm, pf, pid := observe(t, base+"/packets", []byte(packets))
	rm, rf, rid := observe(t, base+"/raw", []byte(raw))
	if pm.Form != FormPacket || rm.Form != FormRaw {
		t.Errorf("forms %v %v", pm.Form, rm.Form)
	}
	if pid != rid || pid != dialectObserver {
		t.Errorf("observers %q %q", pid, rid)
	}
	if pf.Hash != rf.Hash || pf.Hash.String() != "e26ad9dfa1ac3f7e" || pf.Fingerprint() != rf.Fingerprint() || pf.PathJSON() != rf.PathJSON() {
		t.Errorf("the two forms differ: %s/%x %s/%x", pf.Hash, pf.Fingerprint(), rf.Hash, rf.Fingerprint())
	}
	if pm.SNR != num(12.5) || pm.RSSI != num(-71) || pm.Score != num(1000) || pm.Direction != text("rx") {
		t.Errorf("packets form reception fields %+v", pm)
	}
	if rm.SNR.Valid || rm.RSSI.Valid || rm.Score.Valid || rm.Direction.Valid {
		t.Errorf("raw form has reception fields %+v", rm)
	}
	if !pm.Timestamp.OK || !pm.Timestamp.Naive || pm.Origin != text("Hilltop 📡") || rm.OriginID() != text(dialectObserver) {
		t.Errorf("envelope %+v / %+v", pm, rm)
	}
	// Another frame (the same payload one hop further) is another
	// reception: same hash, another fingerprint.
	other := "1547DA2A28DB852827D710004596AAAAD92F365EB798ABCF98ADE9AD5564C03150295EB15B8BE1B388EBB7733D3112CABD42830928E0AF222205834112BA9A47D6E344"
	of, err := DecodeFrame(other)
	if err != nil || of.Hash != pf.Hash || of.Fingerprint() == pf.Fingerprint() {
		t.Errorf("one hop more: %s %x, %v", of.Hash, of.Fingerprint(), err)
	}
}

// meshcore-packet-capture (PC) sends the mctomqtt shape on /packets, and on
// /raw the same origin, origin_id and timestamp with the frame under data.
// Its classic flat topics have no observer segment: origin_id names it.
func TestParseObservation_PacketCaptureClassicTopics(t *testing.T) {
	packets := `{"origin":"Base","origin_id":"` + strings.ToLower(dialectObserver) + `","timestamp":"2026-07-18T16:12:01.123456+00:00","type":"PACKET","direction":"rx","time":"16:12:01","date":"18/07/2026","len":"64","packet_type":"5","route":"F","payload_len":"51","raw":"` +
		dialectFrame + `","SNR":"8.75","RSSI":"Unknown","hash":"E26AD9DFA1AC3F7E"}`
	raw := `{"origin":"Base","origin_id":"` + strings.ToLower(dialectObserver) + `","timestamp":"2026-07-18T16:12:01.123456+00:00","type":"RAW","data":"` + dialectFrame + `"}`
	pm, _, pid := observe(t, "meshcore/packets", []byte(packets))
	rm, _, rid := observe(t, "meshcore/raw", []byte(raw))
	if pid != dialectObserver || rid != dialectObserver {
		t.Errorf("observer from origin_id: %q %q (upper case expected)", pid, rid)
	}
	if pm.SNR != num(8.75) || pm.RSSI.Valid || rm.Form != FormRaw {
		t.Errorf("PC fields %+v %+v", pm, rm)
	}
	// PC's fallbacks are no key: such a message has no observer.
	for _, id := range []string{"DEVICE", "", "ABCDEF"} {
		m, err := ParsePacketMessage([]byte(`{"origin_id":"` + id + `","raw":"` + dialectFrame + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Observer(ParseTopic("meshcore/packets")); !errors.Is(err, ErrNoObserver) || DropReason(err) != ReasonNoObserver {
			t.Errorf("origin_id %q: %v", id, err)
		}
	}
}

// agessaman's MQTT observer firmware (MQTTPayloadBuilder.cpp) sends every
// number as a string ("len":"39", "SNR":"12.5"); status stats as numbers,
// but other publishers send those as strings too. All stay accepted.
func TestParse_NumbersAsStrings(t *testing.T) {
	m, err := ParsePacketMessage([]byte(`{"timestamp":"2026-07-18T12:34:56.000000","hash":"E26AD9DFA1AC3F7E","origin":"HOWL","type":"PACKET","direction":"rx","time":"19:34:56","date":"18/07/2026","len":"64","packet_type":"5","route":"F","payload_len":"51","raw":"` +
		dialectFrame + `","origin_id":"` + dialectObserver + `","SNR":"12.5","RSSI":"-65","score":"870","path":["da2a","28db"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.SNR != num(12.5) || m.RSSI != num(-65) || m.Score != num(870) || m.Direction != text("rx") {
		t.Errorf("packet %+v", m)
	}
	s, err := ParseStatusMessage([]byte(`{"status":"online","timestamp":"2026-07-18T12:34:56.000000","origin":"HOWL","origin_id":"` + dialectObserver + `",
		"model":"Heltec V3","firmware_version":"v1.9.1","radio":"910.525024,62.5,7,5","client_version":"meshcore-custom-repeater/2026-07-18","repeat":"on",
		"stats":{"battery_mv":"4123","uptime_secs":"86400","packets_sent":"12","packets_received":"900","errors":"0","queue_len":"0","noise_floor":"-112","tx_air_secs":"31","rx_air_secs":"2200","recv_errors":"3","internal_heap":"81234"}}`))
	if err != nil {
		t.Fatal(err)
	}
	i64 := func(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: true} }
	if s.BatteryMV != i64(4123) || s.UptimeSecs != i64(86400) || s.NoiseFloor != num(-112) || s.TxAirSecs != i64(31) ||
		s.RxAirSecs != i64(2200) || s.RecvErrors != i64(3) || s.PacketsSent != i64(12) || !s.Repeat.Bool || !s.HasMetadata {
		t.Errorf("status %+v", s)
	}
	if s.OriginID != text(dialectObserver) {
		t.Errorf("status origin_id %+v", s.OriginID)
	}
}

// Envelopes without packet bytes (origin fields only) are real: every
// form refuses them with ErrNoRaw, which is a drop with its own reason.
func TestParseObservation_NoPacketBytes(t *testing.T) {
	env := []byte(`{"origin":"Base","origin_id":"` + dialectObserver + `","timestamp":"2026-07-18T16:12:01","type":"PACKET","direction":"rx"}`)
	cases := []struct {
		topic   string
		payload []byte
	}{
		{"meshcore/SJC/" + dialectObserver + "/packets", env},
		{"meshcore/SJC/" + dialectObserver + "/raw", env},
		{"meshcore/SJC/" + dialectObserver + "/raw", []byte(`{"origin":"Base","type":"RAW","data":""}`)},
		{"meshcore/SJC/" + dialectObserver + "/raw", []byte(`{"type":"RAW","data":12,"raw":"` + dialectFrame + `"}`)},
		{"binary/" + dialectObserver, nil},
		{"meshcore/SJC/" + dialectObserver + "/status", env}, // not a frame-carrying kind
	}
	for _, c := range cases {
		_, err := ParseObservation(ParseTopic(c.topic), c.payload)
		var me *MessageError
		if !errors.Is(err, ErrNoRaw) || !errors.As(err, &me) || DropReason(err) != ReasonNoRaw {
			t.Errorf("%s %q: %v (%q)", c.topic, c.payload, err, DropReason(err))
		}
	}
	// A raw form with the frame under `raw` only is still read.
	m, err := ParseRawMessage([]byte(`{"raw":"` + dialectFrame + `"}`))
	if err != nil || m.Raw != dialectFrame {
		t.Errorf("raw key in raw form: %+v %v", m, err)
	}
}

// `binary/<GATEWAY>`: the payload is the frame. The gateway segment names
// the observer only when it is a public key.
func TestParseObservation_BinaryGateway(t *testing.T) {
	b := make([]byte, len(dialectFrame)/2)
	for i := range b {
		b[i] = unhex(dialectFrame[2*i])<<4 | unhex(dialectFrame[2*i+1])
	}
	m, f, id := observe(t, "binary/"+strings.ToLower(dialectObserver), b)
	if m.Form != FormBinary || m.Raw != dialectFrame || f.Hash.String() != "e26ad9dfa1ac3f7e" || id != dialectObserver {
		t.Errorf("binary: %+v %s %q", m, f.Hash, id)
	}
	tp := ParseTopic("binary/kitchen")
	m, err := ParseObservation(tp, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Observer(tp); !errors.Is(err, ErrGatewayNotKey) || DropReason(err) != ReasonGatewayNotKey {
		t.Errorf("gateway kitchen: %v", err)
	}
	// Too long for any frame: refused before it is turned into hex.
	_, err = ParseBinaryPacket(make([]byte, 4096))
	if !errors.Is(err, ErrTooLong) || DropReason(err) != "invalid_frame:too_long" {
		t.Errorf("4 KiB binary: %v %q", err, DropReason(err))
	}
	// JSON on a binary topic is not a frame: the firmware checks refuse it.
	m, _ = ParseBinaryPacket([]byte(`{"raw":"00"}`))
	if _, err := DecodeFrame(m.Raw); err == nil {
		t.Errorf("JSON bytes decoded as a frame")
	}
}

func TestResolveObserver_Rules(t *testing.T) {
	lc := strings.ToLower(dialectObserver)
	oid := func(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }
	cases := []struct {
		topic  string
		origin sql.NullString
		want   string
		err    error
	}{
		{"meshcore/SJC/kpabap/packets", oid(dialectObserver), "kpabap", nil}, // the topic wins, verbatim
		{"meshcore/SJC/" + lc + "/packets", sql.NullString{}, lc, nil},
		{"meshcore/SJC//packets", oid(" " + lc + " "), dialectObserver, nil},
		{"meshcore/packets", sql.NullString{}, "", ErrNoObserver},
		{"mynetwork/SJC/packets", oid(lc), dialectObserver, nil},
		{"binary/" + lc, oid("ignored"), dialectObserver, nil},
		{"binary/" + lc[:62], oid(dialectObserver), "", ErrGatewayNotKey},
	}
	for _, c := range cases {
		got, err := ResolveObserver(ParseTopic(c.topic), c.origin)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%s %+v: %q %v, want %q %v", c.topic, c.origin, got, err, c.want, c.err)
		}
	}
}

// agessaman firmware publishes its own adverts (TX) on /raw, which has no
// direction: a zero-hop advert of the observer's own key can only be that.
func TestIsOwnTransmission_OwnAdvertOnRaw(t *testing.T) {
	_, f, id := observe(t, "meshcore/SJC/"+dialectAdvertKey+"/raw", []byte(`{"origin":"PugetMesh Cougar","origin_id":"`+dialectAdvertKey+`","timestamp":"2026-07-18T12:00:00.000000","type":"RAW","data":"`+dialectAdvert+`"}`))
	if !IsOwnTransmission(&f, id) {
		t.Errorf("own zero-hop advert not recognised")
	}
	if IsOwnTransmission(&f, strings.ToLower(dialectAdvertKey)) != true || IsOwnTransmission(&f, dialectObserver) || IsOwnTransmission(&f, "kpabap") {
		t.Errorf("key comparison")
	}
	// The same advert one hop later is a real reception of a repeat.
	repeated, err := DecodeFrame(dialectAdvert[:2] + "01AB" + dialectAdvert[4:])
	if err != nil || IsOwnTransmission(&repeated, dialectAdvertKey) {
		t.Errorf("repeated own advert: %v", err)
	}
	other, _ := DecodeFrame(dialectFrame)
	if IsOwnTransmission(&other, dialectObserver) {
		t.Errorf("a GRP_TXT is no advert")
	}
}

// The ESP32 observer firmware's neighbors report (agessaman MeshCore,
// MQTTPayloadBuilder::buildNeighborsMessage) and PC's port of it.
func TestParseNeighborsMessage_ObserverFirmware(t *testing.T) {
	n, err := ParseNeighborsMessage([]byte(`{"timestamp":"2026-07-18T12:34:56.123456+00:00","origin":"DEN Repeater","origin_id":"` + dialectObserver + `",
		"total_neighbors":5,"queried_neighbors":2,"truncated":true,"self":{"scopes":"DEN,APRS","default_scope":"*"},
		"neighbors":[{"pubkey":"` + strings.ToLower(dialectAdvertKey) + `","snr":9.75,"rssi":-88,"heard_secs_ago":42,"scopes":"DEN,APRS","status":"responded"},
		{"pubkey":"8899AABBCCDDEEFF","snr":-3.5,"rssi":-120,"heard_secs_ago":null,"scopes":"","status":"timeout"},
		{"pubkey":"not hex","status":"responded"},{"snr":1},7]}`))
	if err != nil {
		t.Fatal(err)
	}
	i64 := func(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: true} }
	if n.Origin != text("DEN Repeater") || n.OriginID != text(dialectObserver) || !n.Timestamp.OK || n.Timestamp.Naive ||
		n.TotalNeighbors != i64(5) || n.QueriedNeighbors != i64(2) || n.Truncated != (sql.NullBool{Bool: true, Valid: true}) ||
		n.SelfScopes != text("DEN,APRS") || n.SelfDefaultScope != text("*") || n.Skipped != 3 || len(n.Neighbors) != 2 {
		t.Fatalf("%+v", n)
	}
	a, b := n.Neighbors[0], n.Neighbors[1]
	if a.PublicKey != dialectAdvertKey || a.SNR != num(9.75) || a.RSSI != num(-88) || a.HeardSecsAgo != i64(42) || a.Scopes != text("DEN,APRS") || !a.ScopesConfirmed() {
		t.Errorf("first %+v", a)
	}
	if b.PublicKey != "8899AABBCCDDEEFF" || b.HeardSecsAgo.Valid || b.Scopes != text("") || b.ScopesConfirmed() || b.Status != "timeout" {
		t.Errorf("second %+v", b)
	}
	// PC: no default_scope, no rssi, numbers possibly strings.
	n, err = ParseNeighborsMessage([]byte(`{"timestamp":"2024-01-01T12:00:00.000000+00:00","origin":"MeshCore-HOWL","origin_id":"A1B2","total_neighbors":"1","queried_neighbors":1,"truncated":false,"self":{"scopes":"DEN"},"neighbors":[{"pubkey":"0011223344556677","snr":"9.75","heard_secs_ago":"42","scopes":"DEN","status":"send_failed"}]}`))
	if err != nil || len(n.Neighbors) != 1 || n.TotalNeighbors != i64(1) || n.Neighbors[0].SNR != num(9.75) || n.Neighbors[0].RSSI.Valid || n.SelfDefaultScope.Valid {
		t.Errorf("PC: %+v %v", n, err)
	}
	if _, err := ResolveObserver(ParseTopic("meshcore/neighbors"), n.OriginID); err == nil {
		t.Errorf("meshcore/neighbors is no observer topic")
	}
	// No list: its own drop reason. An empty list is a real report.
	for payload, want := range map[string]error{
		`{"origin":"x"}`:                   ErrNoNeighbors,
		`{"neighbors":{"a":1}}`:            ErrNoNeighbors,
		`{"neighbors":[]}`:                 nil,
		`{"neighbors":[{"pubkey":"0A"}]`:   ErrNotJSON,
		`{"neighbors":[{"pubkey":"0A"},]}`: ErrNotJSON,
	} {
		_, err := ParseNeighborsMessage([]byte(payload))
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", payload, err, want)
		}
	}
	if DropReason(&MessageError{Err: ErrNoNeighbors, Offset: -1}) != ReasonNoNeighbors {
		t.Errorf("reason")
	}
}

// A report at the firmware's 10 KB budget (65 full-key neighbours) parses
// in one piece.
func TestParseNeighborsMessage_FullBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"origin":"big","origin_id":"` + dialectObserver + `","neighbors":[`)
	for i := 0; b.Len() < 10<<10; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"pubkey":"` + dialectObserver[:62] + string(hexUpper[i>>4&15]) + string(hexUpper[i&15]) + `","snr":1.25,"rssi":-90,"heard_secs_ago":3600,"scopes":"DEN","status":"responded"}`)
	}
	b.WriteString(`]}`)
	n, err := ParseNeighborsMessage([]byte(b.String()))
	if err != nil || len(n.Neighbors) != 65 || n.Skipped != 0 {
		t.Fatalf("%d neighbours, %d skipped, %v", len(n.Neighbors), n.Skipped, err)
	}
}

func TestDropReason_Errors(t *testing.T) {
	_, badFrame := DecodeFrame("4100")
	_, notJSON := ParsePacketMessage([]byte("RX 12:00"))
	cases := map[error]string{
		nil:                 "",
		errors.New("other"): "",
		badFrame:            "invalid_frame:unsupported_version",
		notJSON:             ReasonUnreadable,
		ErrNoObserver:       ReasonNoObserver,
		&MessageError{Err: ErrNoText, Offset: -1}: ReasonNoText,
	}
	for err, want := range cases {
		if got := DropReason(err); got != want {
			t.Errorf("DropReason(%v) = %q, want %q", err, got, want)
		}
	}
	seen := map[string]bool{}
	for _, r := range DropReasons() {
		if seen[r] || r == "" || strings.ToLower(r) != r || strings.ContainsAny(r, " -") {
			t.Errorf("reason %q repeated or not snake_case", r)
		}
		seen[r] = true
	}
	if !seen["invalid_frame:truncated_path"] || !seen[ReasonDuplicateForm] {
		t.Errorf("DropReasons misses some: %v", DropReasons())
	}
}
