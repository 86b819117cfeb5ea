package decoder

import (
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseTopic_Kinds(t *testing.T) {
	pk := "EC3433BB3ADF1ACAEE0CE117600B0CA473705486EC666137379A1E8CBB7E75F4"
	cases := []struct {
		topic string
		want  Topic
	}{
		{"meshcore/SJC/" + pk + "/packets", Topic{Kind: KindPacket, Region: "SJC", ObserverID: pk}},
		{"meshcore/SJC/kpabap/status", Topic{Kind: KindStatus, Region: "SJC", ObserverID: "kpabap"}},
		{"custom/test/DEVICE/packets", Topic{Kind: KindPacket, Region: "test", ObserverID: "DEVICE"}},
		{"meshcore/packets", Topic{Kind: KindPacket}},
		{"meshcore/status", Topic{Kind: KindIgnored}},
		{"meshcore/events/connection", Topic{Kind: KindIgnored}},
		{"meshcore/SJC/" + pk + "/debug", Topic{Kind: KindIgnored}},
		{"meshcore/SJC/" + pk + "/serial/commands", Topic{Kind: KindIgnored}},
		{"meshcore/message/channel/3", Topic{Kind: KindChannelMessage, ChannelIdx: "3"}},
		{"meshcore/message/direct/a1b2c3", Topic{Kind: KindDirectMessage, DirectPeer: "a1b2c3"}},
		{"meshcore/client/abcdef01/packets", Topic{Kind: KindClientPacket, ObserverID: "abcdef01"}},
		{"meshcore/client/not-hex/packets", Topic{Kind: KindIgnored}},
		{"", Topic{Kind: KindIgnored}},
		{"a/b/c/d/e/f/g", Topic{Kind: KindIgnored}},
	}
	for _, c := range cases {
		if got := ParseTopic(c.topic); got != c.want {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", c.topic, got, c.want)
		}
	}
}

func num(v float64) sql.NullFloat64 { return sql.NullFloat64{Float64: v, Valid: true} }
func text(s string) sql.NullString  { return sql.NullString{String: s, Valid: true} }

func TestParsePacketMessage_ObserverQuirks(t *testing.T) {
	cases := []struct {
		name           string
		payload        string
		snr, rssi, scr sql.NullFloat64
		dir            sql.NullString
	}{
		{"mctomqtt strings", `{"raw":"AA","SNR":"4","RSSI":"-93","score":"1000","direction":"rx"}`, num(4), num(-93), num(1000), text("rx")},
		{"lowercase keys, numbers", `{"raw":"AA","snr":8.75,"rssi":-95,"Score":500,"Direction":"tx"}`, num(8.75), num(-95), num(500), text("tx")},
		{"units", `{"raw":"AA","SNR":" 7.5dB ","RSSI":"-110dBm"}`, num(7.5), num(-110), sql.NullFloat64{}, sql.NullString{}},
		{"Unknown and empty", `{"raw":"AA","SNR":"Unknown","RSSI":""}`, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullString{}},
		{"null", `{"raw":"AA","SNR":null,"RSSI":null,"score":null}`, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullString{}},
		{"upper key wins even unparseable", `{"raw":"AA","SNR":"Unknown","snr":5,"RSSI":"x","rssi":-1}`, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullString{}},
		{"NaN is not a number", `{"raw":"AA","SNR":"NaN","RSSI":"Inf"}`, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullFloat64{}, sql.NullString{}},
		{"score over Score", `{"raw":"AA","score":"1","Score":"2","direction":"rx","Direction":"tx"}`, sql.NullFloat64{}, sql.NullFloat64{}, num(1), text("rx")},
	}
	for _, c := range cases {
		m, err := ParsePacketMessage([]byte(c.payload))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m.SNR != c.snr || m.RSSI != c.rssi || m.Score != c.scr || m.Direction != c.dir {
			t.Errorf("%s: got SNR %+v RSSI %+v score %+v dir %+v", c.name, m.SNR, m.RSSI, m.Score, m.Direction)
		}
	}
}

func TestParsePacketMessage_Fields(t *testing.T) {
	payload := `{"origin": "Jackrabbit\ud83d\udc30", "origin_id": "X", "timestamp": "2026-03-29T15:27:30.123456+00:00",
		"type": "PACKET", "raw": "1546da2a28db852827d710004596d92f365eb798abcf98ade9ad5564c03150295eb15b8be1b388ebb7733d3112cabd42830928e0af222205834112ba9a47d6e344",
		"region": "oak", "hash": null, "duration": null, "decoded": {"a": [1, 2, {"b": true}]}}`
	m, err := ParsePacketMessage([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	if m.Origin != text("Jackrabbit🐰") {
		t.Errorf("origin %+v", m.Origin)
	}
	if m.Region != text("oak") {
		t.Errorf("region %+v", m.Region)
	}
	want := time.Date(2026, 3, 29, 15, 27, 30, 123456000, time.UTC)
	if !m.Timestamp.OK || m.Timestamp.Naive || !m.Timestamp.Time.Equal(want) {
		t.Errorf("timestamp %+v", m.Timestamp)
	}
	f, err := DecodeFrame(m.Raw)
	if err != nil || f.Hash.String() != "e26ad9dfa1ac3f7e" {
		t.Errorf("frame hash %s, %v", f.Hash, err)
	}
	if got := f.PathJSON(); got != `["DA2A","28DB","8528","27D7","1000","4596"]` {
		t.Errorf("path_json %s", got)
	}
}

func TestParsePacketMessage_ClientGPS(t *testing.T) {
	m, err := ParsePacketMessage([]byte(`{"raw":"0100","gps":{"lat":37.5,"lon":"-122.25","acc_m":12},"snr":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.GPS.Lat != num(37.5) || m.GPS.Lon != num(-122.25) || m.GPS.AccM != num(12) || m.SNR != num(3) {
		t.Errorf("got %+v", m)
	}
}

func TestEnvelopeTime_NaiveSkew(t *testing.T) {
	recv := time.Date(2026, 3, 29, 15, 0, 0, 0, time.UTC)
	cases := []struct {
		ts     string
		ok     bool
		naive  bool
		record bool
		skew   time.Duration
	}{
		{"2026-03-29T08:00:00.123456", true, true, true, -7*time.Hour + 123456*time.Microsecond},
		{"2026-03-29T15:10:00", true, true, false, 10 * time.Minute},
		{"2026-03-29T08:00:00-07:00", true, false, false, 0},
		{"2026-03-29T15:00:00Z", true, false, false, 0},
		{"2026-02-30T15:00:00Z", false, false, false, 0},
		{"yesterday", false, false, false, 0},
	}
	for _, c := range cases {
		m, err := ParsePacketMessage([]byte(`{"raw":"0100","timestamp":"` + c.ts + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		if m.Timestamp.OK != c.ok || m.Timestamp.Naive != c.naive {
			t.Errorf("%s: %+v", c.ts, m.Timestamp)
			continue
		}
		skew, record := m.Timestamp.NaiveSkew(recv)
		if record != c.record || (c.naive && skew != c.skew) {
			t.Errorf("%s: skew %v record %v, want %v %v", c.ts, skew, record, c.skew, c.record)
		}
	}
	m, _ := ParsePacketMessage([]byte(`{"raw":"0100","timestamp":"2026-03-29T08:00:00-07:00"}`))
	if !m.Timestamp.Time.Equal(recv) {
		t.Errorf("offset not applied: %v", m.Timestamp.Time)
	}
}

func TestParseStatusMessage_StatsAndRepeat(t *testing.T) {
	s, err := ParseStatusMessage([]byte(`{"status":"online","origin":"N6IJ","radio":"910.525,62.5,7,5",
		"firmware":"old","firmware_version":"1.14","client_version":"mt/1","model":"",
		"stats":{"battery_mv":4101.6,"uptime_secs":"3600","noise_floor":-112.5,"packets_recv":null},
		"tx_air_secs":12,"battery_mv":1,"packets_recv":9,"packets_received":99,"repeat":"On"}`))
	if err != nil {
		t.Fatal(err)
	}
	i64 := func(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: true} }
	if s.Radio != text("910.525,62.5,7,5") || s.Firmware != text("1.14") || s.ClientVersion != text("mt/1") || s.Model.Valid {
		t.Errorf("metadata %+v", s)
	}
	if s.BatteryMV != i64(4102) || s.UptimeSecs != i64(3600) || s.NoiseFloor != num(-112.5) || s.TxAirSecs != i64(12) {
		t.Errorf("stats %+v", s)
	}
	if s.PacketsRecv.Valid {
		t.Errorf("stats.packets_recv null must hide the top-level one: %+v", s.PacketsRecv)
	}
	if s.Repeat != (sql.NullBool{Bool: true, Valid: true}) || !s.HasMetadata || s.Status != text("online") {
		t.Errorf("repeat/metadata %+v", s)
	}
	for payload, want := range map[string]sql.NullBool{
		`{"repeat":false}`: {Valid: true}, `{"repeat":0}`: {Valid: true}, `{"repeat":2}`: {Bool: true, Valid: true},
		`{"repeat":"no"}`: {Valid: true}, `{"repeat":"maybe"}`: {}, `{"repeat":null}`: {},
	} {
		s, err := ParseStatusMessage([]byte(payload))
		if err != nil || s.Repeat != want || s.HasMetadata != want.Valid {
			t.Errorf("%s: %+v %v", payload, s.Repeat, err)
		}
	}
	// The real kpabap status carries nothing but names: no metrics row.
	s, err = ParseStatusMessage([]byte(`{"status": "online", "timestamp": "2026-03-17T21:27:59.015000+00:00", "origin": "kpabap", "origin_id": "kpabap"}`))
	if err != nil || s.HasMetadata || s.Origin != text("kpabap") {
		t.Errorf("kpabap: %+v %v", s, err)
	}
}

func TestParseCompanionMessage_ChannelAndDirect(t *testing.T) {
	ch := ParseTopic("meshcore/message/channel/2")
	m, err := ParseCompanionMessage(ch, []byte(`{"text":"Alice: hi <b>","channel_idx":5,"sender_timestamp":1700000000,"SNR":"6.25"}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.ChannelIdx != "5" || m.ChannelHash() != text("ch5") || m.PayloadType() != TypeGrpTxt || m.SNR != num(6.25) {
		t.Errorf("%+v", m)
	}
	if got := string(m.DecodedJSON()); got != `{"type":"CHAN","channel":"ch5","text":"Alice: hi \u003cb\u003e","sender":"Alice","sender_timestamp":1700000000}` {
		t.Errorf("decoded_json %s", got)
	}
	now := time.Date(2026, 3, 29, 15, 0, 0, 0, time.UTC)
	if h := m.ContentHash(now); len(h) != 16 || h == m.ContentHash(now.Add(time.Second)) {
		t.Errorf("hash %s", h)
	}
	m2, _ := ParseCompanionMessage(ch, []byte(`{"text":"x","channel_idx":"7"}`))
	m3, _ := ParseCompanionMessage(ch, []byte(`{"text":"x"}`))
	if m2.ChannelIdx != "7" || m3.ChannelIdx != "2" {
		t.Errorf("channel idx %q %q", m2.ChannelIdx, m3.ChannelIdx)
	}
	dm, err := ParseCompanionMessage(ParseTopic("meshcore/message/direct/ab12"), []byte(`{"text":"Bob: yo","channel_idx":1}`))
	if err != nil || !dm.Direct || dm.ChannelHash().Valid || dm.PayloadType() != TypeTxtMsg {
		t.Errorf("dm %+v %v", dm, err)
	}
	if got := string(dm.DecodedJSON()); got != `{"type":"DM","text":"Bob: yo","sender":"Bob"}` {
		t.Errorf("dm decoded_json %s", got)
	}
	if _, err := ParseCompanionMessage(ch, []byte(`{"text":""}`)); !errors.Is(err, ErrNoText) {
		t.Errorf("empty text: %v", err)
	}
}

// Hostile payloads are refused with a clear error after a bounded amount
// of work.
func TestParsePacketMessage_HostileInput(t *testing.T) {
	cases := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"1 MB", []byte(`{"raw":"` + strings.Repeat("A", 1<<20) + `"}`), ErrMessageTooLarge},
		{"100k-element array", []byte("[" + strings.Repeat("1,", 99999) + "1]"), ErrMessageTooLarge},
		{"small top-level array", []byte("[1,2,3]"), ErrNotObject},
		{"nested 10000 deep", []byte(`{"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + "}"), ErrTooDeep},
		{"nested 10000 deep, unterminated", []byte(`{"a":` + strings.Repeat("{\"a\":", 10000)), ErrTooDeep},
		{"plain text status", []byte("connected"), ErrNotJSON},
		{"empty", nil, ErrNotJSON},
		{"truncated", []byte(`{"raw":"AA`), ErrNotJSON},
		{"trailing garbage", []byte(`{"raw":"AA"} x`), ErrNotJSON},
		{"bad escape", []byte(`{"raw":"\q"}`), ErrNotJSON},
		{"control char", []byte("{\"raw\":\"a\x01\"}"), ErrNotJSON},
		{"bad number", []byte(`{"SNR":01}`), ErrNotJSON},
		{"no raw", []byte(`{"SNR":1}`), ErrNoRaw},
		{"raw not a string", []byte(`{"raw":12}`), ErrNoRaw},
	}
	for _, c := range cases {
		_, err := ParsePacketMessage(c.payload)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		var me *MessageError
		if !errors.As(err, &me) || me.Error() == "" {
			t.Errorf("%s: not a *MessageError: %T", c.name, err)
		}
	}
}

func TestDecodeFrame_HostileHex(t *testing.T) {
	_, err := DecodeFrame(strings.Repeat("AB", 50000))
	if !errors.Is(err, ErrTooLong) {
		t.Errorf("100 KB of hex: %v", err)
	}
	_, err = DecodeFrame(strings.Repeat("ZZ", 50000))
	if !errors.Is(err, ErrTooLong) {
		t.Errorf("100 KB of garbage: %v", err)
	}
	if _, err := DecodeFrame("15 00 11 C3 C1 ABABABABABABABABABABABABABABABABAB"); err != nil {
		t.Errorf("spaced hex: %v", err)
	}
}
