package decoder

import "strings"

// TopicKind says what an MQTT topic carries (docs/reference/mqtt-formats.md §1).
type TopicKind uint8

const (
	// KindIgnored: nothing CoreScope stores: BR's `meshcore/status` and
	// `meshcore/events/connection`, `…/debug`, `…/raw`, `…/neighbors`,
	// serial topics, and anything unrecognised.
	KindIgnored TopicKind = iota
	// KindPacket: `<prefix>/<IATA>/<OBSERVER>/packets`, or PC's classic
	// `<prefix>/packets` (no region, no observer).
	KindPacket
	// KindStatus: `<prefix>/<IATA>/<OBSERVER>/status` (also the LWT topic).
	KindStatus
	// KindChannelMessage: BR's `meshcore/message/channel/<channel_idx>`.
	KindChannelMessage
	// KindDirectMessage: BR's `meshcore/message/direct/<pubkey_prefix>`.
	KindDirectMessage
	// KindClientPacket: a mobile companion's `meshcore/client/<PUBKEY>/packets`
	// (CoreScope's opt-in clientRxCoverage). ObserverID is the companion's
	// key as given; it is 2-64 hex digits, or the topic is KindIgnored.
	KindClientPacket
)

var kindNames = [...]string{"ignored", "packet", "status", "channel_message", "direct_message", "client_packet"}

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
	// upper-cases and trims it when storing). Empty for topics with fewer
	// than three segments and for companion topics.
	Region string
	// ObserverID is segment 2 verbatim: normally the observer's public key
	// in hex, but any string (one real observer is `kpabap`).
	ObserverID string
	// ChannelIdx is the last segment of a companion channel topic; a
	// `channel_idx` in the payload overrides it.
	ChannelIdx string
	// DirectPeer is the pubkey prefix segment of a companion direct topic.
	DirectPeer string
}

// ParseTopic classifies an MQTT topic the way CoreScope's ingestor does
// (mqtt-formats.md §5: BR status topics first, then companion and client
// topics, then segment 3). The topic prefix of observer topics is free (it
// is configurable in the publishers); the BR, companion and client topics
// are recognised under `meshcore/` only, as CoreScope does.
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
	case n == 2 && seg[1] == "packets":
		return Topic{Kind: KindPacket}
	case n == 4 && seg[0] == "meshcore" && seg[1] == "client" && seg[3] == "packets":
		if !isClientKey(seg[2]) {
			return Topic{Kind: KindIgnored}
		}
		return Topic{Kind: KindClientPacket, ObserverID: seg[2]}
	case n == 4 && seg[3] == "packets":
		return Topic{Kind: KindPacket, Region: seg[1], ObserverID: seg[2]}
	case n == 4 && seg[3] == "status":
		return Topic{Kind: KindStatus, Region: seg[1], ObserverID: seg[2]}
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
