package decoder

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// corpusOptions is the key ring the corpus was computed with: the five
// channels vectors.jsonl names (Public, #test, #bot, #wardriving, #chat) and
// the vectors' 32-byte synthetic channel; with rainbow, CoreScope's
// channel-rainbow.json as well (about 340 hashtag channels, the five among
// them), the ring expected.jsonl's channel counts assume.
func corpusOptions(t testing.TB, rainbow bool) Options {
	t.Helper()
	cfg := KeyRingConfig{
		HashChannels: []string{"#test", "#bot", "wardriving", "#chat"},
		ChannelKeys:  map[string]string{"corpus-256bit": "23d748af8c6218a0bda0eb8deae7107ae1d3a38f3bd9e4c759379d4c0b507448"},
	}
	if rainbow {
		var err error
		if cfg.Rainbow, err = os.ReadFile("testdata/channel-rainbow.json"); err != nil {
			t.Fatal(err)
		}
	}
	ring, err := NewKeyRing(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return Options{Keys: ring, Regions: NewRegionSet([]string{"#ottawa"}), VerifySignatures: true}
}

func readJSONL(t testing.TB, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

// checkDescribe compares Describe's output with an expected corpus object,
// field by field, and returns the decoded_json Describe produced.
func checkDescribe(t *testing.T, name string, raw string, want map[string]any, opts Options) map[string]any {
	t.Helper()
	out, valid := Describe(raw, opts)
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: Describe output is not JSON: %v\n%s", name, err, out)
	}
	stored, _ := got["decoded_json"].(map[string]any)
	delete(got, "decoded_json")
	if valid != (want["valid"] == true) {
		t.Errorf("%s: valid = %v, want %v", name, valid, want["valid"])
	}
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if !reflect.DeepEqual(got[k], want[k]) {
			g, _ := json.Marshal(got[k])
			w, _ := json.Marshal(want[k])
			t.Errorf("%s: field %q\n got  %s\n want %s", name, k, g, w)
		}
	}
	return stored
}

func TestDescribe_ExpectedCorpus_AllFieldsMatch(t *testing.T) {
	t.Run("five channels", func(t *testing.T) { checkExpectedCorpus(t, corpusOptions(t, false)) })
	t.Run("rainbow file", func(t *testing.T) { checkExpectedCorpus(t, corpusOptions(t, true)) })
}

func checkExpectedCorpus(t *testing.T, opts Options) {
	lines := readJSONL(t, "testdata/expected.jsonl")
	if len(lines) != 864 {
		t.Fatalf("expected.jsonl has %d lines, want 864", len(lines))
	}
	// channel_hash per transmission of the real traffic (corpus.md).
	channels := map[string]int{}
	seen := map[ContentHash]bool{}
	for i, want := range lines {
		fixture, _ := want["fixture"].(map[string]any)
		delete(want, "fixture")
		delete(want, "corescope")
		raw := want["raw"].(string)
		stored := checkDescribe(t, "expected.jsonl line "+itoa(i+1), raw, want, opts)
		if want["valid"] == true && stored == nil {
			t.Errorf("line %d: valid frame without decoded_json", i+1)
		}
		f, err := DecodeFrame(raw)
		if err != nil || f.Type != TypeGrpTxt || fixture["in_real_packets"] != true || seen[f.Hash] {
			continue
		}
		seen[f.Hash] = true
		channels[DecodePacket(f, opts).ChannelHash().String]++
	}
	want := map[string]int{
		"#test": 35, "#wardriving": 17, "#bot": 14, "Public": 13, "#chat": 2,
		"enc_C3": 26, "enc_6E": 14, "enc_93": 10, "enc_F0": 9, "enc_66": 7, "enc_39": 4, "enc_5F": 3,
		"enc_37": 2, "enc_D9": 2, "enc_55": 1, "enc_18": 1, "enc_CA": 1, "enc_95": 1, "enc_2D": 1,
		"enc_11": 1, "enc_CC": 1,
	}
	if !reflect.DeepEqual(channels, want) {
		t.Errorf("channel_hash counts over the 165 GRP_TXT transmissions:\n got  %v\n want %v", channels, want)
	}
}

func TestDescribe_Vectors_AllFieldsMatch(t *testing.T) {
	opts := corpusOptions(t, false)
	vectors := readJSONL(t, "testdata/vectors.jsonl")
	if len(vectors) != 93 {
		t.Fatalf("vectors.jsonl has %d lines, want 93", len(vectors))
	}
	framed := 0
	dialects := map[string]map[string]any{}
	for _, v := range vectors {
		id := v["id"].(string)
		switch v["category"] {
		case "channel_key":
			checkKeyVector(t, v)
			continue
		case "dialect":
			dialects[id] = v
			continue
		}
		want, ok := v["expect"].(map[string]any)
		if !ok {
			t.Fatalf("%s: no expect", id)
		}
		raw := v["raw"].(string)
		want["raw"] = raw
		checkDescribe(t, id, raw, want, opts)
		framed++
		if region, ok := v["region"].(string); ok {
			f, err := DecodeFrame(raw)
			if err != nil {
				t.Fatal(err)
			}
			wantCode := uint16(v["expected_transport_code_1"].(float64))
			k := HashtagKey(region)
			if got := TransportCode(k, f.Type, f.Payload); got != wantCode {
				t.Errorf("%s: transport code = %d, want %d", id, got, wantCode)
			}
			if got := DecodePacket(f, opts).Scope; !got.Valid || got.String != region {
				t.Errorf("%s: scope_name = %+v, want %q", id, got, region)
			}
		}
	}
	if framed != 74 {
		t.Errorf("checked %d frame vectors, want 74", framed)
	}
	if len(dialects) != 12 {
		t.Errorf("%d dialect vectors, want 12", len(dialects))
	}
	for id, v := range dialects {
		checkDialectVector(t, id, v, dialects)
	}
}

// dialectPayload is a dialect vector's payload: `payload` as text, or
// `payload_hex` for a binary one.
func dialectPayload(t *testing.T, v map[string]any) []byte {
	if p, ok := v["payload"].(string); ok {
		return []byte(p)
	}
	b, err := hex.DecodeString(v["payload_hex"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialectOutcome is what the writer takes from one message: its kind, and
// for a frame-carrying one its form, observer, frame and reception fields,
// or the drop reason. The writer's own rules (the packets+raw pair, own
// transmissions) are applied as doc.go specifies them.
type dialectOutcome struct {
	kind, form, observer, drop string
	frame                      Frame
	msg                        PacketMessage
	status                     StatusMessage
	neighbors                  NeighborsMessage
}

func dialectOutcomeOf(t *testing.T, v map[string]any) dialectOutcome {
	tp := ParseTopic(v["topic"].(string))
	payload := dialectPayload(t, v)
	o := dialectOutcome{kind: tp.Kind.String()}
	var origin sql.NullString
	var err error
	switch tp.Kind {
	case KindStatus:
		o.status, err = ParseStatusMessage(payload)
		origin = o.status.OriginID
	case KindNeighbors:
		o.neighbors, err = ParseNeighborsMessage(payload)
		origin = o.neighbors.OriginID
	default:
		o.msg, err = ParseObservation(tp, payload)
		o.form = o.msg.Form.String()
		origin = o.msg.OriginID()
		if err == nil {
			o.frame, err = DecodeFrame(o.msg.Raw)
		}
	}
	if err == nil {
		o.observer, err = ResolveObserver(tp, origin)
	}
	o.drop = DropReason(err)
	if err == nil && o.frame.Bytes != nil && IsOwnTransmission(&o.frame, o.observer) {
		o.drop = ReasonOwnTransmission
	}
	return o
}

func checkDialectVector(t *testing.T, id string, v map[string]any, all map[string]map[string]any) {
	want := v["expect"].(map[string]any)
	o := dialectOutcomeOf(t, v)
	str := func(k string) string { s, _ := want[k].(string); return s }
	if o.kind != str("kind") || o.drop != str("drop") {
		t.Errorf("%s: kind %s drop %q, want %s %q", id, o.kind, o.drop, str("kind"), str("drop"))
	}
	if f := str("form"); f != "" && o.form != f {
		t.Errorf("%s: form %s, want %s", id, o.form, f)
	}
	if w := str("observer"); w != "" && o.observer != w {
		t.Errorf("%s: observer %q, want %q", id, o.observer, w)
	}
	if w := str("content_hash"); w != "" && o.frame.Hash.String() != w {
		t.Errorf("%s: content hash %s, want %s", id, o.frame.Hash, w)
	}
	for k, got := range map[string]sql.NullFloat64{"snr": o.msg.SNR, "rssi": o.msg.RSSI} {
		w, present := want[k]
		if !present {
			continue
		}
		if f, ok := w.(float64); (ok && got != num(f)) || (!ok && got.Valid) {
			t.Errorf("%s: %s %+v, want %v", id, k, got, w)
		}
	}
	for k, got := range map[string]sql.NullInt64{"battery_mv": o.status.BatteryMV, "uptime_secs": o.status.UptimeSecs} {
		if w, ok := want[k].(float64); ok && got != (sql.NullInt64{Int64: int64(w), Valid: true}) {
			t.Errorf("%s: %s %+v, want %v", id, k, got, w)
		}
	}
	if w, ok := want["noise_floor"].(float64); ok && o.status.NoiseFloor != num(w) {
		t.Errorf("%s: noise_floor %+v", id, o.status.NoiseFloor)
	}
	if w, ok := want["can_relay"].(bool); ok && o.status.Repeat != (sql.NullBool{Bool: w, Valid: true}) {
		t.Errorf("%s: repeat %+v", id, o.status.Repeat)
	}
	if w, ok := want["neighbors"].(float64); ok {
		confirmed := 0
		for i := range o.neighbors.Neighbors {
			if o.neighbors.Neighbors[i].ScopesConfirmed() {
				confirmed++
			}
		}
		if len(o.neighbors.Neighbors) != int(w) || float64(confirmed) != want["confirmed"] {
			t.Errorf("%s: %d neighbours, %d confirmed", id, len(o.neighbors.Neighbors), confirmed)
		}
	}
	if pair := str("same_reception_as"); pair != "" {
		p := dialectOutcomeOf(t, all[pair])
		if p.observer != o.observer || p.frame.Fingerprint() != o.frame.Fingerprint() || p.form == o.form {
			t.Errorf("%s and %s: not one reception in two forms (%s/%x/%s, %s/%x/%s)", id, pair,
				o.observer, o.frame.Fingerprint(), o.form, p.observer, p.frame.Fingerprint(), p.form)
		}
	}
}

func checkKeyVector(t *testing.T, v map[string]any) {
	id := v["id"].(string)
	name := v["channel_name"].(string)
	keyHex := v["key_hex"].(string)
	secret, _ := hex.DecodeString(keyHex)
	if strings.HasPrefix(name, "#") {
		k := HashtagKey(name)
		if hex.EncodeToString(k[:]) != keyHex {
			t.Errorf("%s: HashtagKey(%q) = %x, want %s", id, name, k, keyHex)
		}
	}
	if got := hexUpperString([]byte{ChannelHash(secret)}); got != v["channel_hash"] {
		t.Errorf("%s: channel hash %s, want %s", id, got, v["channel_hash"])
	}
}
