package decoder

import "strings"

// TopicKind says what an MQTT topic carries (docs/reference/mqtt-formats.md §1).
type TopicKind uint8

const (
	// KindIgnored: nothing meshingest reads: BR's `meshcore/status` and
	// `meshcore/events/connection`, `…/debug`, serial topics, and anything
	// unrecognised.
	KindIgnored TopicKind = iota
	// KindPacket: `<prefix>/<IATA>/<OBSERVER>/packets`; PC's classic
	// `<prefix>/packets` (no region, no observer); or a custom template's
	// three segments, `<prefix>/<OBSERVER>/packets` when the middle
	// segment is a public key, else `<prefix>/<IATA>/packets`.
	KindPacket
	// KindStatus: `<prefix>/<IATA>/<OBSERVER>/status` (also the LWT topic),
	// or the three-segment forms as for KindPacket.
	KindStatus
	// KindChannelMessage: BR's `meshcore/message/channel/<channel_idx>`.
	KindChannelMessage
	// KindDirectMessage: BR's `meshcore/message/direct/<pubkey_prefix>`.
	KindDirectMessage
	// KindClientPacket: a mobile companion's `meshcore/client/<PUBKEY>/packets`
	// (CoreScope's opt-in clientRxCoverage). ObserverID is the companion's
	// key as given; it is 2-64 hex digits, or the topic is KindIgnored.
	KindClientPacket
	// KindRawPacket: `…/raw` in the same topic shapes as KindPacket: the
	// frame hex under `data`, no reception fields (PC, PY, OffbandMesh and
	// agessaman firmware). OffbandMesh publishes every packet on both
	// `…/packets` and `…/raw` (ParseObservation, PacketMessage.Form).
	KindRawPacket
	// KindBinaryPacket: `binary/<GATEWAY>`: the payload is the frame's
	// bytes. ObserverID is the gateway segment as given; it identifies
	// the observer only if it is a public key (ResolveObserver).
	KindBinaryPacket
	// KindNeighbors: `…/neighbors` in the same topic shapes as KindStatus:
	// an observer's zero-hop neighbour table with each neighbour's region
	// scopes (agessaman observer firmware, PC), ParseNeighborsMessage.
	KindNeighbors
)

var kindNames = [...]string{"ignored", "packet", "status", "channel_message", "direct_message", "client_packet", "raw_packet", "binary_packet", "neighbors"}

func (k TopicKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Topic is an MQTT topic taken apart. Region and ObserverID are substrings
// of the topic (no allocation).
type Topic struct {
	Kind TopicKind
	// Region is segment 1, the IATA code, exactly as published (CoreScope
	// upper-cases and trims it when storing). Empty for topics without a
	// region segment and for companion topics.
	Region string
	// ObserverID is the observer segment verbatim (segment 2 of the
	// four-segment forms): normally the observer's public key in hex, but
	// any string (one real observer is `kpabap`). For KindBinaryPacket it
	// is the gateway segment. Empty when the topic has no observer
	// segment: ResolveObserver then looks at the payload's origin_id.
	ObserverID string
	// ChannelIdx is the last segment of a companion channel topic; a
	// `channel_idx` in the payload overrides it.
	ChannelIdx string
	// DirectPeer is the pubkey prefix segment of a companion direct topic.
	DirectPeer string
}

// observerKind maps the last segment of an observer topic to its kind.
func observerKind(leaf string) TopicKind {
	switch leaf {
	case "packets":
		return KindPacket
	case "status":
		return KindStatus
	case "raw":
		return KindRawPacket
	case "neighbors":
		return KindNeighbors
	}
	return KindIgnored
}

// ParseTopic classifies an MQTT topic the way CoreScope's ingestor does
// (mqtt-formats.md §5: BR status topics first, then companion and client
// topics, then segment 3), plus the dialects CoreScope does not read
// (mqtt-formats.md §1): `…/raw`, `…/neighbors`, `binary/<GATEWAY>` and the
// three-segment custom templates. The topic prefix of observer topics is
// free (it is configurable in the publishers); the BR, companion and client
// topics are recognised under `meshcore/` only, as CoreScope does.
func ParseTopic(topic string) Topic {
	if topic == "meshcore/status" || topic == "meshcore/events/connection" {
		return Topic{Kind: KindIgnored}
	}
	if rest, ok := strings.CutPrefix(topic, "meshcore/message/channel/"); ok {
		return Topic{Kind: KindChannelMessage, ChannelIdx: rest}
	}
	if rest, ok := strings.CutPrefix(topic, "meshcore/message/direct/"); ok {
		return Topic{Kind: KindDirectMessage, DirectPeer: rest}
	}
	var seg [5]string
	n := 0
	rest := topic
	for n < len(seg) {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			seg[n] = rest
			n++
			rest = ""
			break
		}
		seg[n] = rest[:i]
		n++
		rest = rest[i+1:]
	}
	if rest != "" {
		n++ // more than five segments
	}
	switch {
	case n == 2 && seg[0] == "binary":
		return Topic{Kind: KindBinaryPacket, ObserverID: seg[1]}
	case n == 2 && (seg[1] == "packets" || seg[1] == "raw"):
		// PC's classic flat topics; `<prefix>/status` is BR's plain
		// text (handled above) or ambiguous, and stays ignored.
		return Topic{Kind: observerKind(seg[1])}
	case n == 3:
		// A custom template without one of {iata} and {device}
		// (agessaman firmware, PC): the middle segment is the observer
		// when it is a public key, else the region.
		k := observerKind(seg[2])
		if k == KindIgnored {
			return Topic{Kind: KindIgnored}
		}
		if IsPublicKeyHex(seg[1]) {
			return Topic{Kind: k, ObserverID: seg[1]}
		}
		return Topic{Kind: k, Region: seg[1]}
	case n == 4 && seg[0] == "meshcore" && seg[1] == "client" && seg[3] == "packets":
		if !isClientKey(seg[2]) {
			return Topic{Kind: KindIgnored}
		}
		return Topic{Kind: KindClientPacket, ObserverID: seg[2]}
	case n == 4:
		if k := observerKind(seg[3]); k != KindIgnored {
			return Topic{Kind: k, Region: seg[1], ObserverID: seg[2]}
		}
	}
	return Topic{Kind: KindIgnored}
}

// isClientKey is CoreScope's check on a client topic key: lower-cased, it
// must be 2-64 hex digits.
func isClientKey(s string) bool {
	if len(s) < 2 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if unhex(s[i]) >= 16 {
			return false
		}
	}
	return true
}
