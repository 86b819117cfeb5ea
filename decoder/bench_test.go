package decoder_test

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/internal/capture"
)

// The benchmarks behind the figures in README.md. Run them with
//
//	go test -run '^$' -bench . -benchmem ./decoder/

// demoPackets returns the packet messages of the real capture.
func demoPackets(b *testing.B) []capture.Message {
	b.Helper()
	r := capture.Demo()
	var out []capture.Message
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if decoder.ParseTopic(m.Topic).Kind == decoder.KindPacket {
			out = append(out, m)
		}
	}
	if len(out) != 500 {
		b.Fatalf("%d packet messages in the demo capture, want 500", len(out))
	}
	return out
}

// observe is what the writer does for every observation: topic, payload,
// frame, content hash, path_json.
func observe(topic string, payload []byte) (string, string, error) {
	t := decoder.ParseTopic(topic)
	m, err := decoder.ParsePacketMessage(payload)
	if err != nil {
		return "", "", err
	}
	f, err := decoder.DecodeFrame(m.Raw)
	if err != nil {
		return "", "", err
	}
	_ = t
	return f.Hash.String(), f.PathJSON(), nil
}

// BenchmarkObservation_Typical: parse + frame decode + hash + path_json of
// one typical message (a 6-hop GRP_TXT from the real capture).
func BenchmarkObservation_Typical(b *testing.B) {
	msgs := demoPackets(b)
	m := msgs[0]
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := observe(m.Topic, m.Payload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkObservation_RealTraffic cycles through all 500 real packet
// messages (the one invalid frame included).
func BenchmarkObservation_RealTraffic(b *testing.B) {
	msgs := demoPackets(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m := msgs[i%len(msgs)]
		i++
		_, _, _ = observe(m.Topic, m.Payload)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

func rainbowRing(b *testing.B) *decoder.KeyRing {
	b.Helper()
	rainbow, err := os.ReadFile("testdata/channel-rainbow.json")
	if err != nil {
		b.Fatal(err)
	}
	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{Rainbow: rainbow})
	if err != nil {
		b.Fatal(err)
	}
	if ring.Len() < 300 {
		b.Fatalf("ring has %d keys, want at least 300", ring.Len())
	}
	return ring
}

// A #test message from the real capture, and a message on a channel none
// of the keys opens (meshcore-decoder's unknown-channel vector, hash 0x13).
const (
	grpTest    = "1546da2a28db852827d710004596d92f365eb798abcf98ade9ad5564c03150295eb15b8be1b388ebb7733d3112cabd42830928e0af222205834112ba9a47d6e344"
	grpUnknown = "150013752F15A1BF3C018EB1FC4F26B5FAEB417BB0F1AE8FF07655484EBAA05CB9A927D689"
)

// BenchmarkNewTransmission_GrpTxt: the once-per-content-hash work for a
// channel message with the 340-key rainbow ring: decryption, decoded_json,
// channel_hash.
func BenchmarkNewTransmission_GrpTxt(b *testing.B) {
	opts := decoder.Options{Keys: rainbowRing(b), VerifySignatures: true}
	f, err := decoder.DecodeFrame(grpTest)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		p := decoder.DecodePacket(f, opts)
		if p.ChannelHash().String != "#test" || len(p.DecodedJSON()) == 0 {
			b.Fatal("not decrypted")
		}
	}
}

// BenchmarkChannelKeySearch_300Keys: one channel-key search in a ring of
// 300+ keys. hit: a #test message (the keys with its hash byte are tried,
// MAC then AES). miss: a hash byte no key has. all-keys: the MAC checked
// against every key, as CoreScope does — what the hash-byte index saves.
func BenchmarkChannelKeySearch_300Keys(b *testing.B) {
	ring := rainbowRing(b)
	hit, _ := decoder.DecodeFrame(grpTest)
	miss, _ := decoder.DecodeFrame(grpUnknown)
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ring.DecryptGroup(hit.Payload, true).Status != decoder.StatusDecrypted {
				b.Fatal("no")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ring.DecryptGroup(miss.Payload, true).Status == decoder.StatusDecrypted {
				b.Fatal("decrypted")
			}
		}
	})
	b.Run("all-keys", func(b *testing.B) {
		// 300 rings of one key each, every one with the packet's hash byte
		// forced: the cost of trying 300 MACs.
		var rings []*decoder.KeyRing
		for i := 0; len(rings) < 300; i++ {
			name := "#bench" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26))
			k := decoder.HashtagKey(name)
			if sha256.Sum256(k[:])[0] != hit.Payload[0] {
				continue
			}
			r, _ := decoder.NewKeyRing(decoder.KeyRingConfig{HashChannels: []string{name}})
			rings = append(rings, r)
		}
		b.ReportAllocs()
		for b.Loop() {
			for _, r := range rings {
				r.DecryptGroup(hit.Payload, true)
			}
		}
	})
}

// BenchmarkAdvertSignature: one Ed25519 check of a real advert.
func BenchmarkAdvertSignature(b *testing.B) {
	f, err := decoder.DecodeFrame("11007E7662676F7F0850A8A355BAAFBFC1EB7B4174C340442D7D7161C9474A2C94006CE7CF682E58408DD8FCC51906ECA98EBF94A037886BDADE7ECD09FD92B839491DF3809C9454F5286D1D3370AC31A34593D569E9A042A3B41FD331DFFB7E18599CE1E60992A076D50238C5B8F85757375354522F50756765744D65736820436F75676172")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !decoder.VerifyAdvertSignature(f.Payload) {
			b.Fatal("invalid")
		}
	}
}
