package loadgen

import "maps"

// Kind is what an MQTT message is.
type Kind int

const (
	KindPacket Kind = iota // meshcore/<IATA>/<ID>/packets
	KindStatus             // meshcore/<IATA>/<ID>/status
)

// Outcome is what a correct writer does with a message.
type Outcome int

const (
	// OutcomeStored: a new observation row (and a new transmission row
	// when First).
	OutcomeStored Outcome = iota
	// OutcomeDuplicate: the same observer published the same observation
	// again; no new row, but observers.packet_count counts it.
	OutcomeDuplicate
	// OutcomeBadSignature: an advert whose signature does not verify; one
	// dropped_packets row, nothing else.
	OutcomeBadSignature
	// OutcomeUndecodable: a message that can never be decoded (Reason
	// says why); dropped with a reason, no row.
	OutcomeUndecodable
	// OutcomeStatus: a status message; an observer upsert and an
	// observer_metrics row.
	OutcomeStatus
)

var outcomeNames = [...]string{"stored", "duplicate", "bad_signature", "undecodable", "status"}

func (o Outcome) String() string { return outcomeNames[o] }

// ReasonInvalidSignature is the drop reason of OutcomeBadSignature in
// Accounting.Dropped; undecodable messages use their Message.Reason.
const ReasonInvalidSignature = "invalid_signature"

// Message is one MQTT message with what the generator knows about it.
type Message struct {
	Topic   string
	Payload []byte
	Kind    Kind
	// Seq numbers the messages of the stream from 0.
	Seq        int
	ObserverID string // topic segment 2
	// Tx numbers the radio transmission the message observes (-1 for
	// status and malformed messages). A TRACE heard after different
	// numbers of hops has a different content hash per hop count, so one
	// Tx can have several hashes.
	Tx int
	// Hash is the frame's content hash (16 lowercase hex; "" when the
	// frame is invalid or absent), PathJSON the observation's path_json.
	Hash, PathJSON string
	PayloadType    int
	// First is set on the first message carrying Hash.
	First   bool
	Outcome Outcome
	// Reason says why an OutcomeUndecodable message cannot be decoded
	// (unsupported_version, truncated_path, not_json, no_raw).
	Reason string
	// ChannelHash is the expected channel_hash of a GRP_TXT, NodeKey the
	// advertised key of an ADVERT.
	ChannelHash, NodeKey string
	// Scoped is set for a transport-routed frame, whose scope_name is
	// Scope ("" for a region the configuration does not name); otherwise
	// scope_name is NULL.
	Scoped bool
	Scope  string
}

// Stored reports whether the message adds or repeats an observation row.
func (m *Message) Stored() bool {
	return m.Outcome == OutcomeStored || m.Outcome == OutcomeDuplicate
}

// ObservationKey identifies one observation row: the unique index on
// (transmission, observer, path_json), with the transmission by its hash
// and the observer by its id.
type ObservationKey struct {
	Hash, ObserverID, PathJSON string
	// FirstSeq is the Seq of the first message carrying the observation.
	FirstSeq    int
	PayloadType int
}

// Accounting is what a correct writer holds after a stream of messages.
type Accounting struct {
	Messages, PacketMessages, StatusMessages int
	// Transmissions and Observations are the rows expected.
	Transmissions, Observations int
	// DuplicateMessages repeat an observation already published.
	DuplicateMessages int
	// Dropped counts messages by drop reason (ReasonInvalidSignature and
	// the undecodable reasons).
	Dropped map[string]int
	// ByType counts transmissions by payload type name (PayloadTypeNames).
	ByType map[string]int
	// ChannelHashes counts GRP_TXT transmissions by channel_hash; Scopes
	// transport-routed transmissions by scope_name.
	ChannelHashes, Scopes map[string]int
	// Observers is the number of observer rows; PacketCount is each one's
	// observers.packet_count (CoreScope: +1 per status and per stored
	// packet message, duplicates included).
	Observers   int
	PacketCount map[string]int
	// Nodes is the number of node rows; AdvertCount each one's
	// advert_count (distinct valid advert transmissions), AdvertTotal
	// their sum.
	Nodes       int
	AdvertCount map[string]int
	AdvertTotal int
}

// ledger keeps the running expectations.
type ledger struct {
	acct    Accounting
	obs     map[obsKey]int // → index in rows
	rows    []ObservationKey
	hashes  map[string]bool
	adverts map[string]bool
}

type obsKey struct{ hash, observer, path string }

func newLedger() *ledger {
	return &ledger{
		acct: Accounting{
			Dropped: map[string]int{}, ByType: map[string]int{}, ChannelHashes: map[string]int{},
			Scopes: map[string]int{}, PacketCount: map[string]int{}, AdvertCount: map[string]int{},
		},
		obs: map[obsKey]int{}, hashes: map[string]bool{}, adverts: map[string]bool{},
	}
}

// record counts m and settles its outcome (a repeated observation becomes
// OutcomeDuplicate) and First.
func (l *ledger) record(m *Message) {
	a := &l.acct
	a.Messages++
	switch m.Outcome {
	case OutcomeStatus:
		a.StatusMessages++
		a.PacketCount[m.ObserverID]++
		return
	case OutcomeBadSignature:
		a.PacketMessages++
		a.Dropped[ReasonInvalidSignature]++
		return
	case OutcomeUndecodable:
		a.PacketMessages++
		a.Dropped[m.Reason]++
		return
	}
	a.PacketMessages++
	a.PacketCount[m.ObserverID]++
	k := obsKey{m.Hash, m.ObserverID, m.PathJSON}
	if _, seen := l.obs[k]; seen {
		m.Outcome = OutcomeDuplicate
		a.DuplicateMessages++
		return
	}
	l.obs[k] = len(l.rows)
	l.rows = append(l.rows, ObservationKey{Hash: m.Hash, ObserverID: m.ObserverID, PathJSON: m.PathJSON, FirstSeq: m.Seq, PayloadType: m.PayloadType})
	a.Observations++
	if l.hashes[m.Hash] {
		return
	}
	l.hashes[m.Hash] = true
	m.First = true
	a.Transmissions++
	a.ByType[PayloadTypeNames[m.PayloadType&0x0F]]++
	if m.PayloadType == typeGrpTxt {
		a.ChannelHashes[m.ChannelHash]++
	}
	if m.Scoped {
		a.Scopes[m.Scope]++
	}
	if m.PayloadType == typeAdvert {
		if !l.adverts[m.NodeKey] {
			l.adverts[m.NodeKey] = true
			a.Nodes++
		}
		a.AdvertCount[m.NodeKey]++
		a.AdvertTotal++
	}
}

func (l *ledger) snapshot() Accounting {
	a := l.acct
	a.Dropped = maps.Clone(a.Dropped)
	a.ByType = maps.Clone(a.ByType)
	a.ChannelHashes = maps.Clone(a.ChannelHashes)
	a.Scopes = maps.Clone(a.Scopes)
	a.PacketCount = maps.Clone(a.PacketCount)
	a.AdvertCount = maps.Clone(a.AdvertCount)
	a.Observers = len(a.PacketCount)
	return a
}

// keys returns the observation rows in FirstSeq order (the order record
// appended them).
func (l *ledger) keys() []ObservationKey {
	out := make([]ObservationKey, len(l.rows))
	copy(out, l.rows)
	return out
}

// keysFrom returns keys()[i:] (none when i is past the end).
func (l *ledger) keysFrom(i int) []ObservationKey {
	if i >= len(l.rows) {
		return nil
	}
	out := make([]ObservationKey, len(l.rows)-i)
	copy(out, l.rows[i:])
	return out
}
