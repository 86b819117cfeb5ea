package decoder

import (
	"crypto/sha256"
	"database/sql"
	"math"
	"strconv"
	"strings"
	"time"
)

// Optional values use database/sql's Null types: Valid is false when the
// observer did not send the field or sent something that does not parse
// ("Unknown", "", null), and the writer can bind them directly (NULL).

// PacketForm says how a message carried its frame. One reception can
// arrive in two forms (OffbandMesh and PC publish `…/packets` and `…/raw`
// for every packet): the same observer and the same frame (Fingerprint)
// in a FormPacket and a FormRaw/FormBinary message close together in time
// are one observation (doc.go, "One reception, two forms").
type PacketForm uint8

const (
	// FormPacket: a `…/packets` JSON message, the frame hex under `raw`,
	// with the reception fields (SNR, RSSI, score, direction).
	FormPacket PacketForm = iota
	// FormRaw: a `…/raw` JSON message, the frame hex under `data`; real
	// publishers send no reception fields there.
	FormRaw
	// FormBinary: a `binary/<GATEWAY>` message, the payload is the frame.
	FormBinary
)

var formNames = [...]string{"packet", "raw", "binary"}

func (f PacketForm) String() string {
	if int(f) < len(formNames) {
		return formNames[f]
	}
	return "unknown"
}

// PacketMessage is one reception of a frame: a `…/packets` message
// (mqtt-formats.md §2), a mobile companion's client packet (then GPS is set
// too), a `…/raw` message or a `binary/<GATEWAY>` payload (ParseObservation).
type PacketMessage struct {
	// Form is how the frame came (FormPacket for ParsePacketMessage).
	Form PacketForm
	// Raw is the frame as hex, exactly as published (case kept; CoreScope
	// stores it verbatim); for FormBinary the bytes in upper-case hex, the
	// publishers' usual case.
	Raw string
	// SNR (dB), RSSI (dBm) and Score (the firmware's score × 1000). The
	// upper-case key (`SNR`, `RSSI`) wins when both are present, even if
	// its value does not parse, as in CoreScope; then `score` over `Score`.
	SNR, RSSI, Score sql.NullFloat64
	// Direction is `direction` (else `Direction`): "rx", or "tx" from
	// meshcoretomqtt (whose tx messages carry a stale raw) and agessaman
	// firmware (its own transmissions).
	Direction sql.NullString
	// Origin is the observer's display name.
	Origin sql.NullString
	// Region is the optional payload `region`, which CoreScope prefers to
	// the topic's IATA for the observer row.
	Region sql.NullString
	// Timestamp is the envelope `timestamp`: the publisher's clock.
	Timestamp EnvelopeTime
	// GPS is the `gps` object of a client packet.
	GPS GPS

	// originID is `origin_id`, left undecoded (a slice of the payload):
	// only a topic without an observer segment needs it, and decoding it
	// for every message would cost an allocation each (OriginID).
	originID jsonValue
}

// OriginID is the payload's `origin_id`: normally the observer's key, but
// `DEVICE`, `UNKNOWN` or a hash of the name exist. CoreScope never reads it;
// Observer uses it when the topic names no observer. It is decoded on each
// call.
func (m *PacketMessage) OriginID() sql.NullString { return nonEmptyText(m.originID) }

// Observer is ResolveObserver for this message: the observers.id of the
// observer that heard it, or ErrNoObserver / ErrGatewayNotKey.
func (m *PacketMessage) Observer(t Topic) (string, error) {
	if t.Kind != KindBinaryPacket && t.ObserverID != "" {
		return t.ObserverID, nil // the common case, without decoding origin_id
	}
	return ResolveObserver(t, m.OriginID())
}

// GPS is a mobile companion's position in a client packet.
type GPS struct {
	Lat, Lon, AccM sql.NullFloat64
}

// ParsePacketMessage reads a packet message payload. It fails with a
// *MessageError wrapping ErrMessageTooLarge, ErrNotJSON, ErrNotObject,
// ErrTooDeep or ErrNoRaw; the frame in Raw is not checked (DecodeFrame).
func ParsePacketMessage(payload []byte) (PacketMessage, error) {
	return parseEnvelope(payload, FormPacket)
}

// ParseRawMessage reads a `…/raw` payload: the frame hex under `data`
// (PC, PY, OffbandMesh, agessaman firmware), or under `raw` if there is no
// `data`. Every other field is read as in ParsePacketMessage (a viamatt
// gateway sends lower-case `snr`/`rssi` there). Errors as ParsePacketMessage.
func ParseRawMessage(payload []byte) (PacketMessage, error) {
	return parseEnvelope(payload, FormRaw)
}

// ParseBinaryPacket reads a `binary/<GATEWAY>` payload, which is the frame
// itself. An empty payload fails with ErrNoRaw (a *MessageError), one longer
// than any frame with a *FrameError of class too_long, before it is
// converted to hex.
func ParseBinaryPacket(payload []byte) (PacketMessage, error) {
	m := PacketMessage{Form: FormBinary}
	if len(payload) == 0 {
		return m, &MessageError{Err: ErrNoRaw, Offset: -1, Detail: "empty binary payload"}
	}
	if len(payload) > MaxFrameBytes {
		return m, &FrameError{Code: CodeTooLong, Detail: "binary payload of " + itoa(len(payload)) + " bytes is longer than any frame (255 bytes)"}
	}
	m.Raw = hexUpperString(payload)
	return m, nil
}

// ParseObservation reads the payload of any topic kind that carries one
// reception of a frame: KindPacket and KindClientPacket (ParsePacketMessage),
// KindRawPacket (ParseRawMessage), KindBinaryPacket (ParseBinaryPacket).
// Other kinds fail with a *MessageError wrapping ErrNoRaw.
func ParseObservation(t Topic, payload []byte) (PacketMessage, error) {
	switch t.Kind {
	case KindPacket, KindClientPacket:
		return ParsePacketMessage(payload)
	case KindRawPacket:
		return ParseRawMessage(payload)
	case KindBinaryPacket:
		return ParseBinaryPacket(payload)
	}
	return PacketMessage{}, &MessageError{Err: ErrNoRaw, Offset: -1, Detail: "topic kind " + t.Kind.String() + " carries no frame"}
}

func parseEnvelope(payload []byte, form PacketForm) (PacketMessage, error) {
	m := PacketMessage{Form: form}
	s, err := openTopObject(payload)
	if err != nil {
		return m, err
	}
	var raw, data, gps jsonValue
	var radio radioFields
	// readObject's loop written out: this runs for every observation,
	// and its callback is an indirect call per member that the compiler
	// cannot inline.
	it := objectIter{depth: 1}
	for {
		key, val, done, err := s.next(&it)
		if err != nil {
			return m, err
		}
		if done {
			break
		}
		var kb [32]byte
		k := keyBytes(key, kb[:0])
		if radio.take(k, val) {
			continue
		}
		switch string(k) {
		case "raw":
			raw = val
		case "data":
			data = val
		case "origin":
			m.Origin = nullText(val)
		case "origin_id":
			m.originID = val
		case "region":
			if r := nullText(val); r.Valid && r.String != "" {
				m.Region = r
			}
		case "timestamp":
			m.Timestamp = parseEnvelopeTime(val)
		case "gps":
			gps = val
		}
	}
	if err := s.end(); err != nil {
		return m, err
	}
	frame := raw
	if form == FormRaw && data.kind != kindNone {
		frame = data
	}
	r, ok := frame.text()
	if !ok || r == "" {
		return m, &MessageError{Err: ErrNoRaw, Offset: -1}
	}
	m.Raw = r
	m.SNR, m.RSSI, m.Score, m.Direction = radio.resolve()
	if gps.kind == kindObject {
		if err := parseGPS(gps, &m.GPS); err != nil {
			return m, err
		}
	}
	return m, nil
}

func parseGPS(obj jsonValue, g *GPS) error {
	return eachMember(obj, 2, func(k []byte, val jsonValue) {
		switch string(k) {
		case "lat":
			g.Lat = nullNumber(val)
		case "lon":
			g.Lon = nullNumber(val)
		case "acc_m":
			g.AccM = nullNumber(val)
		}
	})
}

// Envelope is what every observer message says about itself.
type Envelope struct {
	Origin sql.NullString // the observer's display name
	// OriginID is the payload's `origin_id` (see PacketMessage.OriginID).
	OriginID sql.NullString
	// Timestamp is the envelope `timestamp`: the publisher's clock.
	Timestamp EnvelopeTime
}

// take keeps val when key is an envelope field and says whether it did.
func (e *Envelope) take(key []byte, val jsonValue) bool {
	switch string(key) {
	case "origin":
		e.Origin = nullText(val)
	case "origin_id":
		e.OriginID = nonEmptyText(val)
	case "timestamp":
		e.Timestamp = parseEnvelopeTime(val)
	default:
		return false
	}
	return true
}

// StatusMessage is a `…/status` message (mqtt-formats.md §3).
type StatusMessage struct {
	Envelope
	Status sql.NullString // "online", or "offline" from a last will
	// Observer metadata; empty strings count as absent. firmware_version
	// wins over firmware and clientVersion over client_version, in
	// CoreScope's order.
	Radio, Model, Firmware, ClientVersion sql.NullString
	// Repeat is the `repeat` flag of firmware with built-in MQTT: a bool,
	// on/off/true/false/1/0/yes/no, or a number (non-zero is true).
	Repeat sql.NullBool
	// Stats, from the `stats` object or, for each key it lacks, the top
	// level. Counts are rounded to whole numbers as CoreScope stores them.
	BatteryMV, UptimeSecs                                      sql.NullInt64
	NoiseFloor                                                 sql.NullFloat64
	TxAirSecs, RxAirSecs, RecvErrors, PacketsSent, PacketsRecv sql.NullInt64
	// HasMetadata is true when any of the metadata above was present:
	// CoreScope then also writes an observer_metrics row.
	HasMetadata bool
}

// ParseStatusMessage reads a status message payload.
func ParseStatusMessage(payload []byte) (StatusMessage, error) {
	var m StatusMessage
	var top, nested statFields
	var firmware, firmwareVersion, clientVersion, clientVersionCamel, stats jsonValue
	err := readObject(payload, func(name []byte, val jsonValue) {
		if m.take(name, val) {
			return
		}
		switch string(name) {
		case "status":
			m.Status = nullText(val)
		case "radio":
			m.Radio = nonEmptyText(val)
		case "model":
			m.Model = nonEmptyText(val)
		case "firmware":
			firmware = val
		case "firmware_version":
			firmwareVersion = val
		case "client_version":
			clientVersion = val
		case "clientVersion":
			clientVersionCamel = val
		case "repeat":
			m.Repeat = parseFlag(val)
		case "stats":
			stats = val
		default:
			top.set(name, val)
		}
	})
	if err != nil {
		return m, err
	}
	if stats.kind == kindObject {
		if err := eachMember(stats, 2, nested.set); err != nil {
			return m, err
		}
	}
	m.Firmware = nonEmptyText(firmware)
	if v := nonEmptyText(firmwareVersion); v.Valid {
		m.Firmware = v
	}
	m.ClientVersion = nonEmptyText(clientVersion)
	if v := nonEmptyText(clientVersionCamel); v.Valid {
		m.ClientVersion = v
	}
	pick := func(i int) jsonValue {
		if nested.v[i].kind != kindNone {
			return nested.v[i]
		}
		return top.v[i]
	}
	m.BatteryMV = roundedNumber(pick(statBattery))
	m.UptimeSecs = roundedNumber(pick(statUptime))
	m.NoiseFloor = nullNumber(pick(statNoise))
	m.TxAirSecs = roundedNumber(pick(statTxAir))
	m.RxAirSecs = roundedNumber(pick(statRxAir))
	m.RecvErrors = roundedNumber(pick(statRecvErrors))
	m.PacketsSent = roundedNumber(pick(statPacketsSent))
	m.PacketsRecv = roundedNumber(pick(statPacketsRecv))
	m.HasMetadata = m.Radio.Valid || m.Model.Valid || m.Firmware.Valid || m.ClientVersion.Valid ||
		m.Repeat.Valid || m.BatteryMV.Valid || m.UptimeSecs.Valid || m.NoiseFloor.Valid ||
		m.TxAirSecs.Valid || m.RxAirSecs.Valid || m.RecvErrors.Valid || m.PacketsSent.Valid || m.PacketsRecv.Valid
	return m, nil
}

const (
	statBattery = iota
	statUptime
	statNoise
	statTxAir
	statRxAir
	statRecvErrors
	statPacketsSent
	statPacketsRecv
	statCount
)

// statFields holds the stats keys of one object level.
type statFields struct{ v [statCount]jsonValue }

func (f *statFields) set(name []byte, val jsonValue) {
	switch string(name) {
	case "battery_mv":
		f.v[statBattery] = val
	case "uptime_secs":
		f.v[statUptime] = val
	case "noise_floor":
		f.v[statNoise] = val
	case "tx_air_secs":
		f.v[statTxAir] = val
	case "rx_air_secs":
		f.v[statRxAir] = val
	case "recv_errors":
		f.v[statRecvErrors] = val
	case "packets_sent":
		f.v[statPacketsSent] = val
	case "packets_recv":
		f.v[statPacketsRecv] = val
	}
}

// parseFlag reads a flag the way CoreScope reads `repeat`: a bool,
// on/off/true/false/1/0/yes/no in any case, or a number (non-zero is true).
func parseFlag(v jsonValue) sql.NullBool {
	switch v.kind {
	case kindTrue:
		return sql.NullBool{Bool: true, Valid: true}
	case kindFalse:
		return sql.NullBool{Valid: true}
	case kindNumber:
		f, ok := v.number()
		return sql.NullBool{Bool: f != 0, Valid: ok}
	case kindString:
		t, _ := v.text()
		switch strings.ToLower(strings.TrimSpace(t)) {
		case "on", "true", "1", "yes":
			return sql.NullBool{Bool: true, Valid: true}
		case "off", "false", "0", "no":
			return sql.NullBool{Valid: true}
		}
	}
	return sql.NullBool{}
}

// CompanionMessage is a companion-bridge channel or direct message
// (mqtt-formats.md §4). It carries no MeshCore frame: no content hash from
// the firmware, no path.
type CompanionMessage struct {
	Direct bool // a `meshcore/message/direct/…` message
	// Text is `text`, normally "Sender: message".
	Text string
	// ChannelIdx is the payload's `channel_idx` (a number or a string),
	// else the topic's last segment. Empty for direct messages.
	ChannelIdx      string
	SenderTimestamp sql.NullInt64
	SNR, RSSI       sql.NullFloat64
	Score           sql.NullFloat64
	Direction       sql.NullString
}

// ParseCompanionMessage reads the payload of a KindChannelMessage or
// KindDirectMessage topic. A message without text fails with ErrNoText
// (CoreScope ignores it).
func ParseCompanionMessage(t Topic, payload []byte) (CompanionMessage, error) {
	m := CompanionMessage{Direct: t.Kind == KindDirectMessage}
	if !m.Direct {
		m.ChannelIdx = t.ChannelIdx
	}
	var text jsonValue
	var radio radioFields
	err := readObject(payload, func(k []byte, val jsonValue) {
		if radio.take(k, val) {
			return
		}
		switch string(k) {
		case "text":
			text = val
		case "channel_idx":
			if m.Direct {
				return
			}
			if val.kind == kindNumber {
				if f, ok := val.number(); ok {
					m.ChannelIdx = strconv.FormatFloat(f, 'f', -1, 64)
				}
			} else if t, ok := val.text(); ok {
				m.ChannelIdx = t
			}
		case "sender_timestamp":
			if f, ok := val.number(); ok && f >= 0 && f < 1<<53 {
				m.SenderTimestamp = sql.NullInt64{Int64: int64(f), Valid: true}
			}
		}
	})
	if err != nil {
		return m, err
	}
	m.Text, _ = text.text()
	if m.Text == "" {
		return m, &MessageError{Err: ErrNoText, Offset: -1}
	}
	m.SNR, m.RSSI, m.Score, m.Direction = radio.resolve()
	return m, nil
}

// SenderAndMessage splits Text at the first ": " (see splitSender).
func (m *CompanionMessage) SenderAndMessage() (sender, message string) { return splitSender(m.Text) }

// PayloadType is the payload_type CoreScope stores for the row: 5 (GRP_TXT)
// for a channel message, 2 (TXT_MSG) for a direct one. The route is 1.
func (m *CompanionMessage) PayloadType() PayloadType {
	if m.Direct {
		return TypeTxtMsg
	}
	return TypeGrpTxt
}

// ChannelHash is the transmissions.channel_hash value: "ch<idx>" for a
// channel message, NULL for a direct one.
func (m *CompanionMessage) ChannelHash() sql.NullString {
	if m.Direct {
		return sql.NullString{}
	}
	return sql.NullString{String: "ch" + m.ChannelIdx, Valid: true}
}

// ContentHash is CoreScope's hash for companion rows: the first 16 hex
// digits of SHA-256 over "ch:<idx>:<text>:<now>" (direct: "dm:<text>:<now>"),
// now being the receive time in RFC 3339. The same text at another second is
// another row, as in CoreScope.
func (m *CompanionMessage) ContentHash(now time.Time) string {
	var in string
	stamp := now.UTC().Format(time.RFC3339)
	if m.Direct {
		in = "dm:" + m.Text + ":" + stamp
	} else {
		in = "ch:" + m.ChannelIdx + ":" + m.Text + ":" + stamp
	}
	sum := sha256.Sum256([]byte(in))
	return hexLowerString(sum[:8])
}

// DecodedJSON is the decoded_json CoreScope stores for a companion row:
// {"type":"CHAN","channel":"ch<idx>","text","sender","sender_timestamp"}, or
// "type":"DM" without channel.
func (m *CompanionMessage) DecodedJSON() []byte {
	sender, _ := m.SenderAndMessage()
	p := storedPayload{Type: "CHAN", Text: m.Text, Sender: sender}
	if m.Direct {
		p.Type = "DM"
	} else {
		p.Channel = "ch" + m.ChannelIdx
	}
	if m.SenderTimestamp.Valid && m.SenderTimestamp.Int64 <= math.MaxUint32 {
		p.SenderTimestamp = uint32(m.SenderTimestamp.Int64)
	}
	return marshalStored(&p)
}

// keyBytes is the member name with escapes decoded, appended to buf; names
// longer than buf never match anything the decoder looks for.
func keyBytes(key jsonValue, buf []byte) []byte {
	if !key.escaped {
		return key.raw
	}
	if len(key.raw) > 6*cap(buf) {
		return nil
	}
	out := unescape(buf, key.raw)
	if len(out) > cap(buf) {
		return nil
	}
	return out
}

func nullText(v jsonValue) sql.NullString {
	t, ok := v.text()
	return sql.NullString{String: t, Valid: ok}
}

func nonEmptyText(v jsonValue) sql.NullString {
	t, ok := v.text()
	return sql.NullString{String: t, Valid: ok && t != ""}
}

func nullNumber(v jsonValue) sql.NullFloat64 {
	f, ok := v.number()
	return sql.NullFloat64{Float64: f, Valid: ok}
}

func roundedNumber(v jsonValue) sql.NullInt64 {
	f, ok := v.number()
	if !ok {
		return sql.NullInt64{}
	}
	r := math.Round(f)
	if r < -(1<<63) || r >= 1<<63 {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(r), Valid: true}
}

// radioFields gathers the reception fields packet and companion messages
// both carry, each spelled two ways by different observer bridges; which
// spelling wins is CoreScope's rule (SNR before snr, RSSI before rssi,
// score before Score, direction before Direction).
type radioFields struct {
	snrU, snrL, rssiU, rssiL, scoreL, scoreU, dirL, dirU jsonValue
}

// take keeps val when key names one of the fields and says whether it did.
func (r *radioFields) take(key []byte, val jsonValue) bool {
	switch string(key) {
	case "SNR":
		r.snrU = val
	case "snr":
		r.snrL = val
	case "RSSI":
		r.rssiU = val
	case "rssi":
		r.rssiL = val
	case "score":
		r.scoreL = val
	case "Score":
		r.scoreU = val
	case "direction":
		r.dirL = val
	case "Direction":
		r.dirU = val
	default:
		return false
	}
	return true
}

func (r *radioFields) resolve() (snr, rssi, score sql.NullFloat64, direction sql.NullString) {
	return firstNumber(r.snrU, r.snrL), firstNumber(r.rssiU, r.rssiL), firstNumber(r.scoreL, r.scoreU), firstText(r.dirL, r.dirU)
}

// firstNumber reads primary when the key was present, else fallback: a
// present but unparseable primary gives NULL, as in CoreScope.
func firstNumber(primary, fallback jsonValue) sql.NullFloat64 {
	if primary.kind != kindNone {
		return nullNumber(primary)
	}
	return nullNumber(fallback)
}

func firstText(primary, fallback jsonValue) sql.NullString {
	v := primary
	if v.kind == kindNone {
		v = fallback
	}
	return nonEmptyText(v)
}
