package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
)

var fixedClock = func() time.Time { return time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) }

// decoded is what the decoder makes of one generated message.
type decoded struct {
	topic  decoder.Topic
	packet decoder.PacketMessage
	frame  decoder.Frame
	full   *decoder.Packet
	status decoder.StatusMessage
	err    error
}

func decodeAll(t *testing.T, g *Generator, n int) ([]Message, []decoded) {
	t.Helper()
	keys := g.Keys()
	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{ChannelKeys: keys.ChannelKeys, HashChannels: keys.HashChannels})
	if err != nil {
		t.Fatalf("the generator's channel keys do not make a key ring: %v", err)
	}
	opts := decoder.Options{Keys: ring, Regions: decoder.NewRegionSet(keys.HashRegions), VerifySignatures: true}
	msgs := make([]Message, n)
	out := make([]decoded, n)
	for i := range msgs {
		m := g.Next()
		msgs[i] = m
		d := &out[i]
		d.topic = decoder.ParseTopic(m.Topic)
		switch d.topic.Kind {
		case decoder.KindStatus:
			d.status, d.err = decoder.ParseStatusMessage(m.Payload)
		case decoder.KindPacket:
			d.packet, d.err = decoder.ParsePacketMessage(m.Payload)
			if d.err == nil {
				d.frame, d.err = decoder.DecodeFrame(d.packet.Raw)
			}
			if d.err == nil {
				d.full = decoder.DecodePacket(d.frame, opts)
			}
		}
	}
	return msgs, out
}

// TestGenerator_Next_DecodesAsPromised checks every generated message
// against the decoder package: the topic kind, the content hash, the
// path_json, the advert signature verdict, the channel decryption and
// channel_hash, the scope, and the reason of every undecodable message.
func TestGenerator_Next_DecodesAsPromised(t *testing.T) {
	g := New(Options{Seed: 1, Clock: fixedClock})
	msgs, dec := decodeAll(t, g, 12_000)
	names := map[string]string{}
	for _, o := range g.Observers() {
		names[o.ID] = o.Name
	}
	hashesByTx := map[int]map[string]bool{}
	for i, m := range msgs {
		d := dec[i]
		where := fmt.Sprintf("message %d (%s, tx %d, %s)", m.Seq, m.Topic, m.Tx, m.Outcome)
		if d.topic.ObserverID != m.ObserverID {
			t.Fatalf("%s: topic observer %q, want %q", where, d.topic.ObserverID, m.ObserverID)
		}
		switch m.Outcome {
		case OutcomeStatus:
			if d.topic.Kind != decoder.KindStatus || d.err != nil || !d.status.HasMetadata {
				t.Fatalf("%s: status kind %v err %v metadata %v", where, d.topic.Kind, d.err, d.status.HasMetadata)
			}
			continue
		case OutcomeUndecodable:
			if d.err == nil {
				t.Fatalf("%s: a message meant to be undecodable (%s) decoded", where, m.Reason)
			}
			want := map[string]error{
				"unsupported_version": decoder.ErrUnsupportedVersion, "truncated_path": decoder.ErrTruncatedPath,
				"not_json": decoder.ErrNotJSON, "no_raw": decoder.ErrNoRaw,
			}[m.Reason]
			if want == nil || !errors.Is(d.err, want) {
				t.Fatalf("%s: reason %q but the decoder says %v", where, m.Reason, d.err)
			}
			continue
		}
		if d.topic.Kind != decoder.KindPacket || d.err != nil {
			t.Fatalf("%s: kind %v, err %v", where, d.topic.Kind, d.err)
		}
		// Names with emoji and <&> survive both escaping styles.
		if d.packet.Origin.String != names[m.ObserverID] {
			t.Fatalf("%s: origin %q, want %q", where, d.packet.Origin.String, names[m.ObserverID])
		}
		f, p := d.frame, d.full
		if got := f.Hash.String(); got != m.Hash {
			t.Fatalf("%s: decoder hash %s, generator %s", where, got, m.Hash)
		}
		if got := f.PathJSON(); got != m.PathJSON {
			t.Fatalf("%s: decoder path_json %s, generator %s", where, got, m.PathJSON)
		}
		if int(f.Type) != m.PayloadType {
			t.Fatalf("%s: type %v, want %d", where, f.Type, m.PayloadType)
		}
		if p.PayloadErr != nil {
			t.Fatalf("%s: payload error %v", where, p.PayloadErr)
		}
		if hashesByTx[m.Tx] == nil {
			hashesByTx[m.Tx] = map[string]bool{}
		}
		hashesByTx[m.Tx][m.Hash] = true
		switch f.Type {
		case decoder.TypeAdvert:
			if valid := p.Advert.SignatureValid; valid != (m.Outcome != OutcomeBadSignature) {
				t.Fatalf("%s: signature valid %v", where, valid)
			}
			if got := p.FromPubkey().String; got != m.NodeKey {
				t.Fatalf("%s: advert key %s, want %s", where, got, m.NodeKey)
			}
		case decoder.TypeGrpTxt:
			if got := p.ChannelHash(); !got.Valid || got.String != m.ChannelHash {
				t.Fatalf("%s: channel_hash %v, want %s", where, got, m.ChannelHash)
			}
			if !strings.HasPrefix(m.ChannelHash, "enc_") && !strings.Contains(p.Group.Text, ": ") {
				t.Fatalf("%s: decrypted text %q has no sender", where, p.Group.Text)
			}
		case decoder.TypeGrpData:
			if p.Group.Decryption.Status != decoder.StatusDecrypted || p.Group.DataErr != "" {
				t.Fatalf("%s: GRP_DATA on a known channel: %s %s", where, p.Group.Decryption.Status, p.Group.DataErr)
			}
		}
		if p.Scope.Valid != m.Scoped || p.Scope.String != m.Scope {
			t.Fatalf("%s: scope %v, want %v %q", where, p.Scope, m.Scoped, m.Scope)
		}
	}
	// Every copy of a flooded or direct packet has one hash whatever its
	// path; only a TRACE's hash changes with the hops it has completed.
	for _, m := range msgs {
		if m.Tx >= 0 && m.PayloadType != int(decoder.TypeTrace) && len(hashesByTx[m.Tx]) > 1 {
			t.Fatalf("tx %d (type %d) has %d hashes across observers, want 1", m.Tx, m.PayloadType, len(hashesByTx[m.Tx]))
		}
	}
}

// TestGenerator_Accounting_MatchesDecodedStream recounts, from what the
// decoder makes of the stream, the rows a correct writer holds, and
// compares them with the generator's accounting.
func TestGenerator_Accounting_MatchesDecodedStream(t *testing.T) {
	g := New(Options{Seed: 7, Clock: fixedClock})
	msgs, dec := decodeAll(t, g, 10_000)
	type key struct{ hash, observer, path string }
	obs := map[key]bool{}
	tx := map[string]bool{}
	nodes := map[string]map[string]bool{} // pubkey → advert hashes
	dropped := 0
	packetCount := map[string]int{}
	channel := map[string]int{}
	for i, m := range msgs {
		d := dec[i]
		if d.topic.Kind == decoder.KindStatus {
			packetCount[d.topic.ObserverID]++
			continue
		}
		if d.err != nil || d.full.Advert != nil && !d.full.Advert.SignatureValid {
			dropped++
			continue
		}
		packetCount[d.topic.ObserverID]++
		h := d.frame.Hash.String()
		obs[key{h, d.topic.ObserverID, d.frame.PathJSON()}] = true
		if !tx[h] {
			tx[h] = true
			if ch := d.full.ChannelHash(); ch.Valid {
				channel[ch.String]++
			}
		}
		if n, ok := d.full.Node(); ok {
			if nodes[n.PublicKey] == nil {
				nodes[n.PublicKey] = map[string]bool{}
			}
			nodes[n.PublicKey][h] = true
		}
		_ = m
	}
	a := g.Accounting()
	if a.Messages != len(msgs) || a.Transmissions != len(tx) || a.Observations != len(obs) || a.Nodes != len(nodes) {
		t.Fatalf("accounting %d messages, %d transmissions, %d observations, %d nodes; decoded stream %d, %d, %d, %d",
			a.Messages, a.Transmissions, a.Observations, a.Nodes, len(msgs), len(tx), len(obs), len(nodes))
	}
	totalDropped := 0
	for _, n := range a.Dropped {
		totalDropped += n
	}
	if totalDropped != dropped || a.Dropped[ReasonInvalidSignature] == 0 {
		t.Fatalf("dropped: accounting %v, decoded stream %d", a.Dropped, dropped)
	}
	advertTotal := 0
	for k, hs := range nodes {
		if a.AdvertCount[k] != len(hs) {
			t.Fatalf("node %s: advert_count %d, decoded stream %d", k, a.AdvertCount[k], len(hs))
		}
		advertTotal += len(hs)
	}
	if a.AdvertTotal != advertTotal {
		t.Fatalf("advert total %d, decoded %d", a.AdvertTotal, advertTotal)
	}
	for id, n := range packetCount {
		if a.PacketCount[id] != n {
			t.Fatalf("observer %s packet_count %d, decoded %d", id, a.PacketCount[id], n)
		}
	}
	for name, n := range channel {
		if a.ChannelHashes[name] != n {
			t.Fatalf("channel_hash %s: %d, decoded %d", name, a.ChannelHashes[name], n)
		}
	}
	if len(g.Expected()) != a.Observations {
		t.Fatalf("Expected() has %d keys, accounting %d observations", len(g.Expected()), a.Observations)
	}
	if a.DuplicateMessages == 0 || a.Messages != a.Observations+a.DuplicateMessages+totalDropped+a.StatusMessages {
		t.Fatalf("messages %d != observations %d + duplicates %d + dropped %d + status %d",
			a.Messages, a.Observations, a.DuplicateMessages, totalDropped, a.StatusMessages)
	}
}

// TestGenerator_Next_Realism checks the shape of the traffic: about 27
// observations per transmission, every payload type, 1-, 2- and 3-byte
// path hashes, known and unknown channels (16- and 32-byte secrets among
// the known), transport scopes, and SNR/RSSI in every publisher format.
func TestGenerator_Next_Realism(t *testing.T) {
	g := New(Options{Seed: 3, Clock: fixedClock})
	msgs, dec := decodeAll(t, g, 15_000)
	a := g.Accounting()
	perTx := float64(a.Observations) / float64(a.Transmissions)
	if perTx < 22 || perTx > 30 {
		t.Errorf("%.1f observations per transmission, want about 27", perTx)
	}
	if a.ByType["GRP_TXT"] <= a.ByType["ADVERT"] || a.ByType["ADVERT"] <= a.ByType["REQ"] {
		t.Errorf("type mix %v does not follow the corpus (GRP_TXT > ADVERT > REQ)", a.ByType)
	}
	hashSizes := map[int]int{}
	snrNull, snrUnit, rssiSet, naiveSkew := 0, 0, 0, 0
	for i, m := range msgs {
		d := dec[i]
		if m.Kind != KindPacket || d.err != nil {
			continue
		}
		if d.frame.Type != decoder.TypeTrace && d.frame.PathHops > 0 {
			hashSizes[d.frame.PathHashSize]++
		}
		if !d.packet.SNR.Valid {
			snrNull++
		}
		if bytes.Contains(m.Payload, []byte(`dBm"`)) {
			snrUnit++
		}
		if d.packet.RSSI.Valid {
			rssiSet++
		}
		if _, rec := d.packet.Timestamp.NaiveSkew(fixedClock()); rec {
			naiveSkew++
		}
	}
	for _, s := range []int{1, 2, 3} {
		if hashSizes[s] == 0 {
			t.Errorf("no path with %d-byte hashes: %v", s, hashSizes)
		}
	}
	if snrNull == 0 || snrUnit == 0 || rssiSet == 0 || naiveSkew == 0 {
		t.Errorf("SNR NULL %d, with units %d, RSSI set %d, naive skewed %d: want all four", snrNull, snrUnit, rssiSet, naiveSkew)
	}
	known, _ := g.Channels()
	for _, c := range known {
		if c.Name != "harness-ops" && a.ChannelHashes[c.Name] == 0 { // harness-ops gets only GRP_DATA at times
			t.Errorf("no GRP_TXT decrypted on %s: %v", c.Name, a.ChannelHashes)
		}
	}
	enc := 0
	for name, n := range a.ChannelHashes {
		if strings.HasPrefix(name, "enc_") {
			enc += n
		}
	}
	if enc == 0 || a.Scopes[ScopeRegion] == 0 || a.Scopes[""] == 0 {
		t.Errorf("undecryptable GRP_TXT %d, scopes %v: want some of each", enc, a.Scopes)
	}

	// Every payload type, in a stream with small fanout so rare types come up.
	small := New(Options{Seed: 4, Observers: 6, Fanout: 2, Clock: fixedClock})
	for range 15_000 {
		small.Next()
	}
	for i, name := range PayloadTypeNames {
		if small.Accounting().ByType[name] == 0 && (i < 0x0C || i == 0x0F) {
			t.Errorf("payload type %s never generated: %v", name, small.Accounting().ByType)
		}
	}
	reserved := small.Accounting().ByType["RESERVED_C"] + small.Accounting().ByType["RESERVED_D"] + small.Accounting().ByType["RESERVED_E"]
	if reserved == 0 {
		t.Errorf("no reserved payload type generated")
	}
}

// TestGenerator_Next_Deterministic: the same seed gives the same stream,
// byte for byte under the same clock; another seed another stream.
func TestGenerator_Next_Deterministic(t *testing.T) {
	a, b, c := New(Options{Seed: 11, Clock: fixedClock}), New(Options{Seed: 11, Clock: fixedClock}), New(Options{Seed: 12, Clock: fixedClock})
	differ := false
	for i := 0; i < 5000; i++ {
		ma, mb, mc := a.Next(), b.Next(), c.Next()
		if ma.Topic != mb.Topic || !bytes.Equal(ma.Payload, mb.Payload) || ma.Hash != mb.Hash {
			t.Fatalf("message %d differs between two generators with seed 11", i)
		}
		if ma.Hash != mc.Hash || ma.Topic != mc.Topic {
			differ = true
		}
	}
	if !differ {
		t.Fatal("seeds 11 and 12 gave the same stream")
	}
	// The clock only moves the envelope: the observation keys stay.
	later := New(Options{Seed: 11, Clock: func() time.Time { return fixedClock().Add(time.Hour) }})
	ref := New(Options{Seed: 11, Clock: fixedClock})
	for i := 0; i < 2000; i++ {
		ml, mr := later.Next(), ref.Next()
		if ml.Hash != mr.Hash || ml.PathJSON != mr.PathJSON || ml.Topic != mr.Topic {
			t.Fatalf("message %d: the clock changed what is stored", i)
		}
	}
}

// BenchmarkGenerator_Next is how fast the generator makes messages: it
// must outpace the harness's bursts (tens of thousands per second) on one
// core. Adverts dominate (an Ed25519 signature each).
func BenchmarkGenerator_Next(b *testing.B) {
	g := New(Options{Seed: 1, Clock: fixedClock})
	bytes := 0
	b.ReportAllocs()
	for b.Loop() {
		bytes += len(g.Next().Payload)
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "payload-bytes/msg")
}

// ExpectedFrom is Expected from an index on, for a caller that keeps a
// running set: at the start, in the middle, at the end and past it.
func TestGenerator_ExpectedFrom_TailOfExpected(t *testing.T) {
	g := New(Options{Seed: 5, Clock: fixedClock})
	if got := g.ExpectedFrom(0); len(got) != 0 {
		t.Fatalf("before any message: %d keys", len(got))
	}
	for i := 0; i < 500; i++ {
		g.Next()
	}
	all := g.Expected()
	if len(all) < 10 {
		t.Fatalf("500 messages gave %d observation keys", len(all))
	}
	for _, i := range []int{0, 1, len(all) / 2, len(all) - 1, len(all), len(all) + 7} {
		got := g.ExpectedFrom(i)
		want := all[min(i, len(all)):]
		if len(got) != len(want) {
			t.Fatalf("ExpectedFrom(%d): %d keys, want %d", i, len(got), len(want))
		}
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("ExpectedFrom(%d)[%d] = %+v, want %+v", i, j, got[j], want[j])
			}
		}
	}
	// A copy: the caller's changes do not reach the generator.
	tail := g.ExpectedFrom(0)
	tail[0].Hash = "changed"
	if g.Expected()[0].Hash == "changed" {
		t.Fatal("ExpectedFrom returned the generator's own slice")
	}
}
