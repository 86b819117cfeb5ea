package loadgen

import (
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"time"
)

// Options configure a Generator. Zero values take the defaults in brackets.
type Options struct {
	// Seed fixes everything that reaches the database.
	Seed uint64
	// Nodes is the size of the simulated mesh [300]; about a quarter are
	// repeaters, whose key prefixes form the paths.
	Nodes int
	// Observers publishing to MQTT [40].
	Observers int
	// Fanout is the mean number of observers hearing one transmission
	// [27, capped at Observers]; each hears it over its own path.
	Fanout int
	// Regions are the observers' IATA codes [SJC OAK SFO MRY].
	Regions []string
	// StatusEvery emits one status message (observers in turn) after every
	// StatusEvery transmissions [5]; a negative value emits none after the
	// initial round.
	StatusEvery int
	// NoInitialStatus skips the round of status messages, one per observer,
	// that opens the stream (as in the real corpus).
	NoInitialStatus bool
	// UnknownChannelShare is the share of GRP_TXT sent on channels the
	// analyzer has no key for [0.45, about the real corpus's 84 of 165].
	UnknownChannelShare float64
	// BadSignatureShare is the share of adverts with a broken signature
	// [0.02]: each of their messages is a dropped packet.
	BadSignatureShare float64
	// MalformedShare is the share of packet messages that cannot be
	// decoded [0.001]: a frame the firmware drops, a payload that is not
	// JSON, a payload without raw. Each is published by one observer.
	MalformedShare float64
	// DuplicateShare is the share of observations an observer publishes
	// twice [0.003] (real: the corpus's observations 85 and 294). The second
	// copy adds no observation row but counts in observers.packet_count.
	DuplicateShare float64
	// TransportShare is the share of flooded transmissions sent on a
	// transport route with a region code [0.05].
	TransportShare float64
	// Clock gives the envelope timestamps [time.Now].
	Clock func() time.Time
	// Stream, when set, is appended to the names that are not random: the
	// generator's own channels (harness-256-<Stream>) and its observer
	// whose id is not a key (harnessobs-<Stream>), so that generators with
	// different seeds can feed one database under one configuration
	// without a channel name with two keys or an observer in two streams.
	Stream string
}

func (o *Options) defaults() {
	if o.Nodes <= 0 {
		o.Nodes = 300
	}
	if o.Observers <= 0 {
		o.Observers = 40
	}
	if o.Fanout <= 0 {
		o.Fanout = 27
	}
	o.Fanout = min(o.Fanout, o.Observers)
	if len(o.Regions) == 0 {
		o.Regions = regionsDef
	}
	if o.StatusEvery == 0 {
		o.StatusEvery = 5
	}
	if o.UnknownChannelShare == 0 {
		o.UnknownChannelShare = 0.45
	}
	if o.BadSignatureShare == 0 {
		o.BadSignatureShare = 0.02
	}
	if o.MalformedShare == 0 {
		o.MalformedShare = 0.001
	}
	if o.DuplicateShare == 0 {
		o.DuplicateShare = 0.003
	}
	if o.TransportShare == 0 {
		o.TransportShare = 0.05
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
}

// Region names for transport codes: ScopeRegion is in the configuration
// (hashRegions), so its packets get scope_name "#bayarea"; the other is not,
// so its packets get scope_name "".
const (
	ScopeRegion   = "#bayarea"
	foreignRegion = "#elsewhere"
)

// typeMix is the real corpus's payload-type mix per transmission
// (docs/reference/corpus.md), plus the types the corpus lacks at small
// weights so every payload type is exercised.
var typeMix = []struct{ ptype, weight int }{
	{typeGrpTxt, 165}, {typeAdvert, 102}, {typeResponse, 78}, {typeReq, 60},
	{typeTxtMsg, 44}, {typePath, 20}, {typeAnonReq, 17}, {typeTrace, 8},
	{typeControl, 4}, {typeAck, 10}, {typeGrpData, 3}, {typeMultipart, 2},
	{typeRawCustom, 1}, {typeReserved, 1},
}

var typeMixTotal = func() int {
	n := 0
	for _, t := range typeMix {
		n += t.weight
	}
	return n
}()

// Generator produces the message stream. See the package documentation.
type Generator struct {
	opts      Options
	rng       *rand.Rand
	nodes     []*Node
	repeaters []*Node
	chatters  []*Node
	observers []*Observer
	known     []*Channel
	unknown   []*Channel

	pending    []pending
	nextStatus int
	tx         int
	seq        int
	acct       *ledger
}

// pending is a message decided but not yet handed out: its envelope is
// rendered at Next, with the clock of that moment.
type pending struct {
	msg    Message
	render func(now time.Time) []byte
}

// New builds the population and channels from opts.Seed.
func New(opts Options) *Generator {
	opts.defaults()
	g := &Generator{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)), acct: newLedger()}
	for i := 0; i < opts.Nodes; i++ {
		t := advChat
		switch r := g.rng.IntN(100); {
		case r < 25:
			t = advRepeater
		case r < 33:
			t = advRoom
		case r < 40:
			t = advSensor
		}
		if i < 8 { // paths need repeaters even in a tiny mesh
			t = advRepeater
		}
		n := newNode(g.rng, i, t)
		g.nodes = append(g.nodes, n)
		if t == advRepeater {
			g.repeaters = append(g.repeaters, n)
		} else {
			g.chatters = append(g.chatters, n)
		}
	}
	for i := 0; i < opts.Observers; i++ {
		o := newObserver(g.rng, i, opts.Regions)
		if i == 3 {
			// Real meshes have an observer whose id is not a key (`kpabap`).
			o.ID = g.streamName("harnessobs")
		}
		if i == 5 && (o.Publisher == PyMCRepeater || o.Publisher == MeshcoreHA) {
			o.LocalOffsetHours = -7 // naive Pacific time: the writer records clock skew
		}
		g.observers = append(g.observers, o)
	}
	g.known = []*Channel{
		newChannel("Public", PublicSecret, true, false),
		newChannel("#test", hashtagSecret("#test"), true, true),
		newChannel("#wardriving", hashtagSecret("#wardriving"), true, true),
		newChannel("#bot", hashtagSecret("#bot"), true, true),
		newChannel("#chat", hashtagSecret("#chat"), true, true),
		newChannel(g.streamName("harness-256"), g.randBytes(32), true, false),
		newChannel(g.streamName("harness-ops"), g.randBytes(16), true, false),
	}
	for i := 0; i < 6; i++ {
		g.unknown = append(g.unknown, newChannel("", g.randBytes(16), false, false))
	}
	if !opts.NoInitialStatus {
		for _, o := range g.observers {
			g.queueStatus(o)
		}
	}
	return g
}

// streamName is name, made the Stream's own when Options.Stream is set.
func (g *Generator) streamName(name string) string {
	if g.opts.Stream == "" {
		return name
	}
	return name + "-" + g.opts.Stream
}

// KeyConfig is what the harness writes into config.json so the writer has
// the known channels and regions: channelKeys, hashChannels, hashRegions.
type KeyConfig struct {
	ChannelKeys  map[string]string
	HashChannels []string
	HashRegions  []string
}

// Keys returns the configuration for the known channels and the scope
// region.
func (g *Generator) Keys() KeyConfig {
	k := KeyConfig{ChannelKeys: map[string]string{}, HashRegions: []string{ScopeRegion}}
	for _, c := range g.known {
		if c.Hashtag {
			k.HashChannels = append(k.HashChannels, c.Name)
		} else {
			k.ChannelKeys[c.Name] = hex.EncodeToString(c.Secret)
		}
	}
	return k
}

// Channels returns the known and the unknown channels.
func (g *Generator) Channels() (known, unknown []Channel) {
	for _, c := range g.known {
		known = append(known, *c)
	}
	for _, c := range g.unknown {
		unknown = append(unknown, *c)
	}
	return known, unknown
}

// Observers returns the observers.
func (g *Generator) Observers() []Observer {
	out := make([]Observer, len(g.observers))
	for i, o := range g.observers {
		out[i] = *o
	}
	return out
}

// Next hands out the next message.
func (g *Generator) Next() Message {
	for len(g.pending) == 0 {
		g.transmission()
	}
	p := g.pending[0]
	g.pending = g.pending[1:]
	m := p.msg
	m.Seq = g.seq
	g.seq++
	m.Payload = p.render(g.opts.Clock())
	g.acct.record(&m)
	return m
}

// Accounting returns what a correct writer holds after the messages handed
// out so far.
func (g *Generator) Accounting() Accounting { return g.acct.snapshot() }

// Expected returns one entry per observation row a correct writer holds,
// with the Seq of the first message that carries it.
func (g *Generator) Expected() []ObservationKey { return g.acct.keys() }

// ExpectedFrom returns the entries of Expected from index i on: the rows
// added since a caller that keeps its own running set last asked, without
// copying the whole list every time.
func (g *Generator) ExpectedFrom(i int) []ObservationKey { return g.acct.keysFrom(i) }

func (g *Generator) randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	return b
}

func (g *Generator) chance(p float64) bool { return g.rng.Float64() < p }

func (g *Generator) queueStatus(o *Observer) {
	g.pending = append(g.pending, pending{
		msg:    Message{Topic: "meshcore/" + o.Region + "/" + o.ID + "/status", Kind: KindStatus, ObserverID: o.ID, Tx: -1, Outcome: OutcomeStatus},
		render: o.statusJSON,
	})
}

// transmission decides one transmission and queues its observations, a
// status message when one is due, and now and then a malformed message.
func (g *Generator) transmission() {
	g.tx++
	ptype := g.pickType()
	base, outcome := g.content(ptype)
	hearers := g.rng.Perm(len(g.observers))[:g.fanout()]
	var direct []byte // the route still to travel, for DIRECT packets
	if base.route == routeDirect || base.route == routeTransportDirect {
		direct = g.route(base.hashSize, g.rng.IntN(4))
		if ptype == typeControl || ptype == typeRawCustom || ptype == typeReserved || ptype == typeAdvert {
			direct = nil // zero-hop: the firmware sends these direct with no path
		}
	}
	for _, i := range hearers {
		o := g.observers[i]
		f := base
		switch {
		case ptype == typeTrace:
			// Each hop appends int8(SNR×4) to the header path; an observer
			// hears the trace after some of the route's hops.
			hops := len(f.payload[9:]) >> (f.payload[8] & 3)
			f.path = nil
			for j := g.rng.IntN(hops + 1); j > 0; j-- {
				f.path = append(f.path, byte(int8(g.rng.IntN(64)-24)))
			}
		case direct != nil || f.route == routeDirect || f.route == routeTransportDirect:
			stage := g.rng.IntN(len(direct)/f.hashSize + 1)
			f.path = direct[stage*f.hashSize:]
		default:
			f.path = g.route(f.hashSize, g.floodHops())
		}
		g.queuePacket(o, f, outcome)
		if outcome == OutcomeStored && g.chance(g.opts.DuplicateShare) {
			g.queuePacket(o, f, OutcomeStored) // the ledger marks the repeat
		}
	}
	if g.chance(g.opts.MalformedShare * float64(len(hearers))) {
		g.queueMalformed(g.observers[g.rng.IntN(len(g.observers))])
	}
	if g.opts.StatusEvery > 0 && g.tx%g.opts.StatusEvery == 0 {
		g.queueStatus(g.observers[g.nextStatus%len(g.observers)])
		g.nextStatus++
	}
}

func (g *Generator) queuePacket(o *Observer, f frame, outcome Outcome) {
	raw := f.bytes()
	hash := f.contentHash()
	rx := radio{snr: float64(g.rng.IntN(128)-80) / 4, rssi: -125 + g.rng.IntN(66)}
	m := Message{
		Topic: "meshcore/" + o.Region + "/" + o.ID + "/packets", Kind: KindPacket,
		ObserverID: o.ID, Tx: g.tx, Hash: hash, PathJSON: f.pathJSON(),
		PayloadType: f.ptype, Outcome: outcome,
	}
	if f.ptype == typeGrpTxt {
		m.ChannelHash = g.channelHashOf(f.payload)
	}
	if f.ptype == typeAdvert {
		m.NodeKey = hex.EncodeToString(f.payload[:32])
	}
	if f.route == routeTransportFlood || f.route == routeTransportDirect {
		m.Scoped, m.Scope = true, g.scopeOf(f)
	}
	g.pending = append(g.pending, pending{msg: m, render: func(now time.Time) []byte {
		return o.packetJSON(now, &f, raw, rx, hash)
	}})
}

// queueMalformed queues one message a writer cannot store: a frame the
// firmware drops, a payload that is not JSON, or one without raw.
func (g *Generator) queueMalformed(o *Observer) {
	m := Message{Topic: "meshcore/" + o.Region + "/" + o.ID + "/packets", Kind: KindPacket, ObserverID: o.ID, Tx: -1, Outcome: OutcomeUndecodable}
	var render func(time.Time) []byte
	switch g.rng.IntN(4) {
	case 0: // payload version 1: the firmware drops it
		f := frame{route: routeFlood, ptype: typeTxtMsg, hashSize: 1, path: g.route(1, 2), payload: g.randBytes(20)}
		raw := f.bytes()
		raw[0] |= 0x40
		m.Reason = "unsupported_version"
		render = func(now time.Time) []byte { return o.packetJSON(now, &f, raw, radio{snr: 1, rssi: -100}, "") }
	case 1: // path_len promises more path than the frame has
		f := frame{route: routeFlood, ptype: typeReq, hashSize: 2, payload: nil}
		raw := append(f.bytes()[:1], 0x45, 0xAA, 0xBB)
		m.Reason = "truncated_path"
		render = func(now time.Time) []byte { return o.packetJSON(now, &f, raw, radio{snr: 1, rssi: -100}, "") }
	case 2:
		m.Reason = "not_json"
		render = func(time.Time) []byte { return []byte("RX 12:00:01 len=40 SNR=4 <garbled>") }
	default:
		m.Reason = "no_raw"
		render = func(now time.Time) []byte {
			b := o.newJSON()
			b.field("origin", o.Name)
			b.field("origin_id", o.ID)
			b.field("timestamp", o.envelopeTime(now))
			b.field("type", "PACKET")
			b.field("direction", "rx")
			return b.close()
		}
	}
	g.pending = append(g.pending, pending{msg: m, render: render})
}

func (g *Generator) pickType() int {
	r := g.rng.IntN(typeMixTotal)
	for _, t := range typeMix {
		if r < t.weight {
			return t.ptype
		}
		r -= t.weight
	}
	panic("unreachable")
}

func (g *Generator) fanout() int {
	f := g.opts.Fanout - 8 + g.rng.IntN(17)
	return max(1, min(f, len(g.observers)))
}

// floodHops is how many repeaters a flooded packet passed before an
// observer heard it.
func (g *Generator) floodHops() int {
	return []int{0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6}[g.rng.IntN(11)]
}

// route is hops repeater hashes of size bytes each.
func (g *Generator) route(size, hops int) []byte {
	p := make([]byte, 0, size*hops)
	for i := 0; i < hops; i++ {
		p = append(p, pick(g.rng, g.repeaters).PubKey[:size]...)
	}
	return p
}

// hashSize is the originator's path hash size: mostly 1 byte, some 2 and 3
// (firmware from v1.13 on).
func (g *Generator) hashSize() int {
	switch r := g.rng.IntN(100); {
	case r < 80:
		return 1
	case r < 95:
		return 2
	}
	return 3
}

// content decides the payload and route of a transmission (the path is
// per observer) and whether a writer stores it.
func (g *Generator) content(ptype int) (frame, Outcome) {
	f := frame{ptype: ptype, hashSize: g.hashSize(), route: routeFlood}
	outcome := OutcomeStored
	direct := func(p int) {
		if g.chance(float64(p) / 100) {
			f.route = routeDirect
		}
	}
	switch ptype {
	case typeAdvert:
		n := pick(g.rng, g.nodes)
		n.clock += 300 + uint32(g.rng.IntN(3600))
		bad := g.chance(g.opts.BadSignatureShare)
		if bad {
			outcome = OutcomeBadSignature
		}
		f.payload = advertPayload(n, n.clock, bad)
		direct(20) // zero-hop adverts
	case typeGrpTxt, typeGrpData:
		f.payload = g.groupMessage(ptype)
	case typeReq, typeResponse, typeTxtMsg, typePath:
		a, b := pick(g.rng, g.nodes), pick(g.rng, g.nodes)
		f.payload = append([]byte{a.PubKey[0], b.PubKey[0]}, g.randBytes(2+16*(1+g.rng.IntN(4)))...)
		direct(map[int]int{typeReq: 40, typeResponse: 70, typeTxtMsg: 30, typePath: 60}[ptype])
	case typeAnonReq:
		sender := pick(g.rng, g.chatters)
		f.payload = append([]byte{pick(g.rng, g.repeaters).PubKey[0]}, sender.PubKey...)
		f.payload = append(f.payload, g.randBytes(2+16*(1+g.rng.IntN(2)))...)
		direct(10)
	case typeAck:
		f.payload = g.randBytes([]int{4, 6}[g.rng.IntN(2)])
		direct(50)
	case typeMultipart:
		f.payload = append([]byte{byte(1+g.rng.IntN(3))<<4 | typeAck}, g.randBytes(4)...)
		f.route = routeDirect
	case typeTrace:
		f.route, f.hashSize = routeDirect, 1
		flags := byte(g.rng.IntN(2)) // 1- or 2-byte route hashes
		f.payload = append(g.randBytes(8), flags)
		f.payload = append(f.payload, g.route(1<<flags, 2+g.rng.IntN(4))...)
	case typeControl:
		f.route = routeDirect
		if g.chance(0.75) {
			r := pick(g.rng, g.repeaters)
			f.payload = append([]byte{0x90 | advRepeater, byte(int8(g.rng.IntN(80) - 40))}, g.randBytes(4)...)
			f.payload = append(f.payload, r.PubKey...)
		} else {
			f.payload = append([]byte{0x80, 0x04}, g.randBytes(8)...)
		}
	case typeRawCustom, typeReserved:
		f.route = routeDirect
		f.payload = g.randBytes(5 + g.rng.IntN(30))
		if ptype == typeReserved {
			f.ptype = typeReserved + g.rng.IntN(3)
		}
	}
	if f.route == routeFlood && ptype != typeAdvert && g.chance(g.opts.TransportShare) {
		f.route = routeTransportFlood
		region := ScopeRegion
		if g.chance(0.3) {
			region = foreignRegion
		}
		f.transport = [2]uint16{transportCode(region, f.ptype, f.payload), 0}
	}
	return f, outcome
}

// groupMessage is a GRP_TXT or GRP_DATA payload on a known channel, or on
// an unknown one (GRP_TXT only). An unknown channel's message whose MAC
// happens to verify under a known key with the same hash byte would decrypt
// to garbage; such a message is drawn again, so expectations stay exact.
func (g *Generator) groupMessage(ptype int) []byte {
	for {
		ts := 1_774_000_000 + uint32(g.tx)*7
		if ptype == typeGrpData {
			ch := pick(g.rng, g.known)
			return groupPayload(ch, grpDataPlain(0xFF00+uint16(g.rng.IntN(16)), g.randBytes(1+g.rng.IntN(40))))
		}
		ch := pick(g.rng, g.known)
		if g.chance(g.opts.UnknownChannelShare) {
			ch = pick(g.rng, g.unknown)
		}
		sender := pick(g.rng, g.chatters).Name
		words := make([]string, 1+g.rng.IntN(12))
		for i := range words {
			words[i] = pick(g.rng, chatWords)
		}
		p := groupPayload(ch, grpTxtPlain(ts, g.rng.IntN(3), sender, strings.Join(words, " ")))
		if ch.Known || !g.collidesWithKnown(p) {
			return p
		}
	}
}

func (g *Generator) collidesWithKnown(p []byte) bool {
	for _, k := range g.known {
		if k.Hash == p[0] {
			if mac := channelMAC(k.Secret, p[3:]); mac[0] == p[1] && mac[1] == p[2] {
				return true
			}
		}
	}
	return false
}

// channelHashOf is the expected transmissions.channel_hash of a GRP_TXT.
func (g *Generator) channelHashOf(p []byte) string {
	for _, k := range g.known {
		if k.Hash == p[0] {
			if mac := channelMAC(k.Secret, p[3:]); mac[0] == p[1] && mac[1] == p[2] {
				return k.Name
			}
		}
	}
	return "enc_" + strings.ToUpper(hex.EncodeToString(p[:1]))
}

// scopeOf is the expected scope_name of a transport-routed frame.
func (g *Generator) scopeOf(f frame) string {
	if f.transport[0] == transportCode(ScopeRegion, f.ptype, f.payload) {
		return ScopeRegion
	}
	return ""
}
