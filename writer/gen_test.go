package writer

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// trafficGen makes a realistic, deterministic stream of observer messages
// from the real corpus: every transmission is heard by several observers,
// each with a path of its own and a receive time a few seconds apart;
// observers send status messages with metadata now and then; some reports
// are repeated, some frames are invalid, some adverts have a bad signature.
// New transmissions are corpus frames with a counter written into their
// (encrypted, so meaningless) payload tail, hence a new content hash;
// adverts keep their bytes, so their signatures stay valid and they come
// back as the same transmissions again and again, like re-heard adverts.
type trafficGen struct {
	rng       *rand.Rand
	frames    []decoder.Frame // mutable templates
	adverts   []decoder.Frame
	observers []string
	regions   []string
	fanoutMin int
	fanoutMax int
	at        time.Time
	counter   uint32
	pending   []Record
	n         int
}

func newTrafficGen(t testing.TB, seed uint64, observers, fanoutMin, fanoutMax int, start time.Time) *trafficGen {
	t.Helper()
	g := &trafficGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), fanoutMin: fanoutMin, fanoutMax: fanoutMax, at: start}
	seen := map[decoder.ContentHash]bool{}
	for _, r := range writertest.CorpusRecords(t) {
		if !strings.HasSuffix(r.Topic, "/packets") {
			continue
		}
		var p struct{ Raw string }
		json.Unmarshal(r.Payload, &p)
		f, err := decoder.DecodeFrame(p.Raw)
		if err != nil || seen[f.Hash] {
			continue
		}
		seen[f.Hash] = true
		switch f.Type {
		case decoder.TypeAdvert:
			g.adverts = append(g.adverts, f)
		case decoder.TypeReq, decoder.TypeResponse, decoder.TypeTxtMsg, decoder.TypePath, decoder.TypeGrpTxt, decoder.TypeAnonReq:
			if len(f.Payload) >= 12 {
				g.frames = append(g.frames, f)
			}
		}
	}
	for i := 0; i < observers; i++ {
		g.observers = append(g.observers, fmt.Sprintf("%016X%048X", g.rng.Uint64(), i))
	}
	g.regions = []string{"SJC", "OAK", "SFO", "MRY"}
	return g
}

// next returns the next message.
func (g *trafficGen) next() Record {
	if len(g.pending) == 0 {
		g.transmission()
	}
	r := g.pending[0]
	g.pending = g.pending[1:]
	g.n++
	return r
}

// records returns the next n messages.
func (g *trafficGen) records(n int) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = g.next()
	}
	return out
}

func (g *trafficGen) transmission() {
	g.at = g.at.Add(time.Duration(20+g.rng.IntN(60)) * time.Millisecond)
	// A status message from some observer every few hundred messages.
	if g.rng.IntN(40) == 0 {
		g.pending = append(g.pending, g.status())
	}
	var body []byte
	switch k := g.rng.IntN(100); {
	case k < 18:
		body = g.adverts[g.rng.IntN(len(g.adverts))].Bytes
	case k == 18:
		body = g.badAdvert()
	default:
		f := g.frames[g.rng.IntN(len(g.frames))]
		body = append([]byte(nil), f.Bytes...)
		g.counter++
		binary.BigEndian.PutUint32(body[len(body)-4:], g.counter)
	}
	f, err := decoder.DecodeFrameBytes(body)
	if err != nil {
		panic(err)
	}
	fanout := g.fanoutMin + g.rng.IntN(g.fanoutMax-g.fanoutMin+1)
	picked := g.rng.Perm(len(g.observers))[:fanout]
	t := g.at
	for _, oi := range picked {
		t = t.Add(time.Duration(g.rng.IntN(400)) * time.Millisecond)
		raw := g.withPath(&f)
		if g.rng.IntN(500) == 0 {
			raw[0] |= 0x40 // payload version 1: the firmware drops it
		}
		g.pending = append(g.pending, g.packet(oi, raw, t))
		if g.rng.IntN(100) == 0 {
			g.pending = append(g.pending, g.packet(oi, raw, t.Add(time.Second))) // reported twice
		}
	}
}

// withPath rebuilds a frame with a random path of the frame's hop size.
func (g *trafficGen) withPath(f *decoder.Frame) []byte {
	size := f.PathHashSize
	hops := g.rng.IntN(min(7, 64/size) + 1)
	out := make([]byte, 0, len(f.Bytes)+hops*size)
	out = append(out, f.Header)
	if f.HasTransportCodes {
		out = binary.LittleEndian.AppendUint16(out, f.TransportCodes[0])
		out = binary.LittleEndian.AppendUint16(out, f.TransportCodes[1])
	}
	out = append(out, byte((size-1)<<6|hops))
	for i := 0; i < hops*size; i++ {
		out = append(out, byte(g.rng.IntN(256)))
	}
	return append(out, f.Payload...)
}

func (g *trafficGen) badAdvert() []byte {
	f := g.adverts[g.rng.IntN(len(g.adverts))]
	b := append([]byte(nil), f.Bytes...)
	b[len(b)-len(f.Payload)+36+g.rng.IntN(64)] ^= byte(1 + g.rng.IntN(255))
	return b
}

func (g *trafficGen) packet(observer int, raw []byte, t time.Time) Record {
	h := hex.EncodeToString(raw)
	if g.rng.IntN(3) > 0 {
		h = strings.ToUpper(h)
	}
	id := g.observers[observer]
	p, _ := json.Marshal(map[string]string{
		"origin": fmt.Sprintf("Observer %d", observer), "origin_id": id,
		"timestamp": t.Format("2006-01-02T15:04:05.000000+00:00"), "type": "PACKET", "direction": "rx",
		"len": fmt.Sprint(len(raw)), "raw": h,
		"SNR": fmt.Sprintf("%.2f", float64(g.rng.IntN(80)-40)/4), "RSSI": fmt.Sprint(-60 - g.rng.IntN(60)), "score": "1000",
	})
	return Record{ReceivedAt: t, Source: "gen", Topic: "meshcore/" + g.regions[observer%len(g.regions)] + "/" + id + "/packets", Payload: p}
}

func (g *trafficGen) status() Record {
	oi := g.rng.IntN(len(g.observers))
	id := g.observers[oi]
	p, _ := json.Marshal(map[string]any{
		"status": "online", "origin": fmt.Sprintf("Observer %d", oi), "origin_id": id,
		"timestamp": g.at.Format(time.RFC3339), "model": "Heltec V3", "firmware_version": "1.9.1",
		"radio": "910.525,62.5,7,5", "client_version": "meshcoretomqtt/1.1",
		"stats": map[string]any{"battery_mv": 3900 + g.rng.IntN(300), "uptime_secs": g.n, "noise_floor": -110 + g.rng.IntN(10)},
	})
	return Record{ReceivedAt: g.at, Source: "gen", Topic: "meshcore/" + g.regions[oi%len(g.regions)] + "/" + id + "/status", Payload: p}
}
