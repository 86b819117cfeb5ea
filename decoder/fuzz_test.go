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
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		tp := decoder.ParseTopic(topic)
		if !strings.Contains(topic, tp.ObserverID) || !strings.Contains(topic, tp.Region) {
			t.Fatalf("topic parts not from the topic: %+v", tp)
		}
		m, perr := decoder.ParsePacketMessage(payload)
		_, serr := decoder.ParseStatusMessage(payload)
		_, cerr := decoder.ParseCompanionMessage(tp, payload)
		for _, err := range []error{perr, serr, cerr} {
			var me *decoder.MessageError
			if err != nil && !errors.As(err, &me) {
				t.Fatalf("error of type %T: %v", err, err)
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
