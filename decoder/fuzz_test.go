package decoder_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/internal/capture"
)

// Run one at a time, e.g.
//
//	go test -run '^$' -fuzz FuzzParseMessage -fuzztime 10m -parallel 1 ./decoder/
//	go test -run '^$' -fuzz FuzzDecodeFrame -fuzztime 10m -parallel 1 ./decoder/

// FuzzParseMessage feeds arbitrary topics and payloads to the message
// parsers, seeded with the real capture. Besides not panicking, a payload
// the scanner accepts must be JSON to encoding/json, and one it calls "not
// JSON" must not be.
func FuzzParseMessage(f *testing.F) {
	r := capture.Demo()
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Topic, m.Payload)
	}
	f.Add("meshcore/message/channel/1", []byte(`{"text":"a: b","channel_idx":"2","SNR":"-3dB"}`))
	f.Add("meshcore/status", []byte("connected"))
	f.Add("meshcore/X/Y/status", []byte(`{"stats":{"battery_mv":"4000mV"},"repeat":"on"}`))
	f.Add("meshcore/client/ab/packets", []byte(`{"raw":"0100","gps":{"lat":1,"lon":2}}`))
	f.Add("a/b/c/packets", []byte(`{"raw":"\u0030\u0031","origin":"\ud83d"}`))
	// One seed per publisher dialect (the dialect lines of vectors.jsonl).
	for _, v := range dialectVectors(f) {
		f.Add(v.Topic, v.Payload)
	}
	f.Add("binary/"+strings.Repeat("ab", 32), []byte{0x11, 0x00, 0x7e})
	f.Add("meshcore/X/Y/neighbors", []byte(`{"neighbors":[{"pubkey":"0a"},{},[],7],"self":{"scopes":1},"truncated":"yes"}`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		tp := decoder.ParseTopic(topic)
		if !strings.Contains(topic, tp.ObserverID) || !strings.Contains(topic, tp.Region) {
			t.Fatalf("topic parts not from the topic: %+v", tp)
		}
		m, perr := decoder.ParsePacketMessage(payload)
		_, serr := decoder.ParseStatusMessage(payload)
		_, cerr := decoder.ParseCompanionMessage(tp, payload)
		n, nerr := decoder.ParseNeighborsMessage(payload)
		for _, err := range []error{perr, serr, cerr, nerr} {
			var me *decoder.MessageError
			if err != nil && (!errors.As(err, &me) || decoder.DropReason(err) == "") {
				t.Fatalf("error of type %T without a reason: %v", err, err)
			}
		}
		if nerr == nil {
			if !json.Valid(payload) {
				t.Fatalf("neighbors accepted non-JSON %q", payload)
			}
			for _, nb := range n.Neighbors {
				if len(nb.PublicKey) < 2 || len(nb.PublicKey)%2 != 0 || strings.ToUpper(nb.PublicKey) != nb.PublicKey {
					t.Fatalf("neighbour key %q", nb.PublicKey)
				}
			}
		}
		o, oerr := decoder.ParseObservation(tp, payload)
		var fe *decoder.FrameError
		var me *decoder.MessageError
		if oerr != nil && !errors.As(oerr, &me) && !errors.As(oerr, &fe) {
			t.Fatalf("observation error of type %T: %v", oerr, oerr)
		}
		if oerr == nil {
			if tp.Kind == decoder.KindBinaryPacket {
				fr, _ := decoder.DecodeFrame(o.Raw)
				if !bytes.Equal(fr.Bytes, payload) && len(fr.Bytes) != 0 {
					t.Fatalf("binary frame %x from payload %x", fr.Bytes, payload)
				}
			}
			id, err := o.Observer(tp)
			switch {
			case err != nil && decoder.DropReason(err) == "":
				t.Fatalf("observer error without a reason: %v", err)
			case err == nil && !strings.Contains(topic, id) && !decoder.IsPublicKeyHex(id):
				t.Fatalf("observer %q neither from the topic nor a key", id)
			case err == nil:
				if fr, ferr := decoder.DecodeFrame(o.Raw); ferr == nil {
					_ = decoder.IsOwnTransmission(&fr, id)
					_ = fr.Fingerprint()
				}
			}
		}
		if len(payload) <= decoder.MaxMessageBytes {
			valid := json.Valid(payload)
			if serr == nil && !valid {
				t.Fatalf("accepted non-JSON %q", payload)
			}
			if errors.Is(serr, decoder.ErrNotJSON) && valid {
				t.Fatalf("refused valid JSON %q: %v", payload, serr)
			}
		}
		if perr == nil {
			if fr, err := decoder.DecodeFrame(m.Raw); err == nil {
				_ = fr.PathJSON()
			}
		}
	})
}

// FuzzDecodeFrame feeds arbitrary bytes to the frame decoder and the full
// payload decode, seeded with every frame of the corpus. A valid frame's
// stored forms must be valid JSON, and the hex and binary entry points must
// agree.
func FuzzDecodeFrame(f *testing.F) {
	for _, path := range []string{"testdata/expected.jsonl", "testdata/vectors.jsonl"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			var v struct{ Raw string }
			if json.Unmarshal(line, &v) == nil {
				if b, err := hex.DecodeString(v.Raw); err == nil {
					f.Add(b)
				}
			}
		}
	}
	rainbow, err := os.ReadFile("testdata/channel-rainbow.json")
	if err != nil {
		f.Fatal(err)
	}
	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{Rainbow: rainbow, ChannelKeys: map[string]string{"x": strings.Repeat("ab", 32)}})
	if err != nil {
		f.Fatal(err)
	}
	opts := decoder.Options{Keys: ring, Regions: decoder.NewRegionSet([]string{"#ottawa"}), VerifySignatures: true}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decoder.DecodeFrameBytes(b)
		fh, herr := decoder.DecodeFrame(strings.ToLower(hex.EncodeToString(b)))
		if (err == nil) != (herr == nil) || fr.Hash != fh.Hash {
			t.Fatalf("hex and binary disagree: %v / %v", err, herr)
		}
		out, valid := decoder.Describe(hex.EncodeToString(b), opts)
		if !json.Valid(out) || valid != (err == nil) {
			t.Fatalf("Describe: valid %v, output %s", valid, out)
		}
		if err != nil {
			var fe *decoder.FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		p := decoder.DecodePacket(fr, opts)
		if !json.Valid(p.DecodedJSON()) {
			t.Fatalf("decoded_json not JSON: %s", p.DecodedJSON())
		}
		var hops []string
		if err := json.Unmarshal([]byte(fr.PathJSON()), &hops); err != nil || len(hops) != fr.HopCount() {
			t.Fatalf("path_json %s: %v", fr.PathJSON(), err)
		}
		for i, h := range fr.Hops() {
			if hops[i] != h {
				t.Fatalf("hop %d: %s vs %s", i, hops[i], h)
			}
		}
		_ = p.ChannelHash()
		_ = p.FromPubkey()
		_, _ = p.Node()
	})
}

// dialectVector is a dialect line of vectors.jsonl: a topic and its
// payload (`payload`, or `payload_hex` for a binary one).
type dialectVector struct {
	Topic   string
	Payload []byte
}

func dialectVectors(f *testing.F) []dialectVector {
	data, err := os.ReadFile("testdata/vectors.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	var out []dialectVector
	for _, line := range bytes.Split(data, []byte("\n")) {
		var v struct {
			Category, Topic, Payload string
			PayloadHex               string `json:"payload_hex"`
		}
		if json.Unmarshal(line, &v) != nil || v.Category != "dialect" {
			continue
		}
		p := []byte(v.Payload)
		if v.PayloadHex != "" {
			if p, err = hex.DecodeString(v.PayloadHex); err != nil {
				f.Fatal(err)
			}
		}
		out = append(out, dialectVector{Topic: v.Topic, Payload: p})
	}
	if len(out) == 0 {
		f.Fatal("no dialect vectors")
	}
	return out
}
