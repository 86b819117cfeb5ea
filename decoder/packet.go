package decoder

import (
	"crypto/ed25519"
	"database/sql"
	"encoding/binary"
	"strings"
	"time"
	"unicode/utf8"
)

// Options configure the full payload decode. Build them once.
type Options struct {
	// Keys decrypt GRP_TXT / GRP_DATA; nil means no keys (no_key).
	Keys *KeyRing
	// Regions name transport scopes (scope_name); nil means none.
	Regions *RegionSet
	// VerifySignatures checks ADVERT signatures (config validateSignatures,
	// default true). When false, adverts count as valid and decoded_json
	// has no signatureValid, as in CoreScope.
	VerifySignatures bool
}

// Packet is a frame with its payload fully decoded: channel decryption and
// the advert signature included. It costs a channel-key search or an
// Ed25519 verification, so the writer decodes once per new content hash
// and reuses the result for the other observations of that transmission.
//
// Exactly one of the type pointers is set, matching Frame.Type, unless
// PayloadErr is set (RAW_CUSTOM and reserved types have none: their payload
// is opaque).
type Packet struct {
	Frame Frame
	// PayloadErr (Code payload_too_short) means the payload is too short
	// for its type's handler. The frame is still valid and has a hash.
	PayloadErr *FrameError

	Peer      *PeerMessage // REQ, RESPONSE, TXT_MSG, PATH
	Ack       *Ack
	Advert    *Advert
	Group     *GroupMessage // GRP_TXT, GRP_DATA
	AnonReq   *AnonReq
	Trace     *Trace
	Multipart *Multipart
	Control   *Control

	// Scope is transmissions.scope_name: NULL unless the route is a
	// transport route and transport code 1 is not 0; then the first
	// configured region whose code matches, or "" when none does.
	Scope sql.NullString
}

// PeerMessage is REQ, RESPONSE, TXT_MSG or PATH: encrypted with the two
// nodes' shared secret, which an analyzer cannot know (the PATH path list
// is inside the ciphertext).
type PeerMessage struct {
	DestHash, SrcHash byte
	MAC               [2]byte
	Ciphertext        []byte
}

// Ack is an ACK: the CRC of the acknowledged message, and from firmware of
// 2026-05 on an attempt byte and a random byte (Extra).
type Ack struct {
	CRC   uint32 // u32 LE of payload bytes 0-3
	Extra []byte
}

// Advert is an ADVERT.
type Advert struct {
	PubKey    []byte // 32 bytes: the node id
	Timestamp uint32 // the sender's clock
	Signature []byte // 64 bytes
	Appdata   []byte // everything after the signature
	// Signed is appdata clamped to 32 bytes: what the firmware signs,
	// verifies and reads.
	Signed []byte

	HasFlags bool // appdata is not empty
	Flags    byte
	AdvType  int // flags & 0x0F

	HasLocation  bool
	LatE6, LonE6 int32
	HasFeat1     bool
	Feat1        uint16
	HasFeat2     bool
	Feat2        uint16
	HasName      bool
	// NameBytes are the appdata bytes after the optional fields (within the
	// signed 32); Name is them up to the first NUL, as the firmware's
	// C-string readers see it.
	NameBytes []byte
	Name      string
	// AppdataValid is false when the flags announce more optional fields
	// than the signed appdata holds.
	AppdataValid bool

	// SignatureChecked is false when Options.VerifySignatures was off.
	SignatureChecked bool
	// SignatureValid is the firmware's verdict: Ed25519 over pubkey ‖
	// timestamp ‖ Signed. An invalid advert is neither processed nor
	// forwarded by the firmware.
	SignatureValid bool
}

// Lat and Lon in degrees (only meaningful with HasLocation).
func (a *Advert) Lat() float64 { return float64(a.LatE6) / 1e6 }
func (a *Advert) Lon() float64 { return float64(a.LonE6) / 1e6 }

// Role is the nodes.role string CoreScope stores: none, companion,
// repeater, room, sensor, type-N for 5-15, and companion when the advert
// has no flags byte (mqtt-formats.md §5 step 6).
func (a *Advert) Role() string {
	if !a.HasFlags {
		return "companion"
	}
	if a.AdvType == 1 {
		return "companion"
	}
	return firmwareRole(a.AdvType)
}

// FirmwareRole is the firmware's name for adv_type: none, chat, repeater,
// room, sensor, type-N.
func (a *Advert) FirmwareRole() string { return firmwareRole(a.AdvType) }

func firmwareRole(t int) string {
	switch t {
	case 0:
		return "none"
	case 1:
		return "chat"
	case 2:
		return "repeater"
	case 3:
		return "room"
	case 4:
		return "sensor"
	}
	return "type-" + itoa(t)
}

// VerifyAdvertSignature checks an ADVERT payload's signature by the
// firmware rule: Ed25519 (RFC 8032) with the packet's own public key over
// pubkey(32) ‖ timestamp(4) ‖ appdata[0:min(len,32)]. A payload shorter
// than 100 bytes is not an advert and is not valid.
func VerifyAdvertSignature(payload []byte) bool {
	if len(payload) < 100 {
		return false
	}
	return verifyAdvert(payload, 32)
}

// verifyAdvert verifies with appdata clamped to limit bytes.
func verifyAdvert(payload []byte, limit int) bool {
	app := payload[100:]
	if len(app) > limit {
		app = app[:limit]
	}
	msg := make([]byte, 0, 36+len(app))
	msg = append(msg, payload[:36]...)
	msg = append(msg, app...)
	return ed25519.Verify(ed25519.PublicKey(payload[:32]), msg, payload[36:100])
}

// GroupMessage is GRP_TXT or GRP_DATA.
type GroupMessage struct {
	ChannelHash byte
	MAC         [2]byte
	Ciphertext  []byte
	Decryption  GroupDecryption

	// GRP_TXT plaintext, when decrypted.
	SenderTimestamp uint32
	TxtType         int // flags >> 2; the firmware drops anything but 0
	Attempt         int // flags & 3
	Text            string
	Sender, Message string

	// GRP_DATA plaintext, when decrypted.
	DataType uint16
	DataLen  int
	Data     []byte
	// DataErr is set when the plaintext is too short for its header or
	// data_len runs past it (the firmware drops such a message).
	DataErr string
}

// AnonReq is an ANON_REQ.
type AnonReq struct {
	DestHash byte
	// SenderPubKey is the sender's long-term public key (CoreScope calls it
	// ephemeralPubKey).
	SenderPubKey []byte
	MAC          [2]byte
	Ciphertext   []byte
}

// Trace is a TRACE.
type Trace struct {
	Tag, AuthCode uint32
	Flags         byte
	HashSize      int    // 1 << (Flags & 3)
	Route         []byte // route hashes, whole entries only
	// SNRs are the header path bytes read as int8 quarter-dB: the SNR at
	// which each completed hop heard the trace.
	SNRs []float64
}

// Multipart is a MULTIPART.
type Multipart struct {
	Remaining int // packets still to come
	InnerType PayloadType
	Inner     []byte
}

// Control is a CONTROL (not encrypted).
type Control struct {
	Flags   byte
	SubType int // Flags >> 4
	// DISCOVER_REQ
	PrefixOnly bool
	TypeFilter byte
	HasSince   bool
	Since      uint32
	// DISCOVER_RESP
	NodeType int  // Flags & 0x0F
	SNRRaw   int8 // the responder's SNR of the request, in quarter-dB
	PubKey   []byte
	// both
	Tag uint32
}

// SubTypeName is DISCOVER_REQ, DISCOVER_RESP or UNKNOWN.
func (c *Control) SubTypeName() string {
	switch c.SubType {
	case 0x8:
		return "DISCOVER_REQ"
	case 0x9:
		return "DISCOVER_RESP"
	}
	return "UNKNOWN"
}

// DecodePacket decodes the payload of a valid frame (one DecodeFrame
// accepted). It never fails: a short payload sets PayloadErr.
func DecodePacket(f Frame, opts Options) *Packet {
	p := &Packet{Frame: f}
	pl := f.Payload
	short := func(need int, what string) bool {
		if len(pl) >= need {
			return false
		}
		p.PayloadErr = &FrameError{Code: CodePayloadTooShort, Detail: f.Type.String() + " needs >= " + itoa(need) + " payload bytes (" + what + ")"}
		return true
	}
	if f.Route.HasTransportCodes() && f.TransportCodes[0] != 0 {
		name, _ := opts.Regions.Match(f.Type, pl, f.TransportCodes[0])
		p.Scope = sql.NullString{String: name, Valid: true}
	}
	switch f.Type {
	case TypeReq, TypeResponse, TypeTxtMsg, TypePath:
		if short(5, "dest 1 + src 1 + MAC 2 + ciphertext") {
			return p
		}
		p.Peer = &PeerMessage{DestHash: pl[0], SrcHash: pl[1], MAC: [2]byte{pl[2], pl[3]}, Ciphertext: pl[4:]}
	case TypeAck:
		if short(4, "ack crc 4") {
			return p
		}
		p.Ack = &Ack{CRC: binary.LittleEndian.Uint32(pl), Extra: pl[4:]}
	case TypeAdvert:
		if short(100, "pubkey 32 + timestamp 4 + signature 64") {
			return p
		}
		p.Advert = decodeAdvert(pl, opts.VerifySignatures)
	case TypeGrpTxt, TypeGrpData:
		if short(4, "channel hash 1 + MAC 2 + ciphertext") {
			return p
		}
		p.Group = decodeGroup(f.Type, pl, opts.Keys)
	case TypeAnonReq:
		if short(36, "dest 1 + sender pubkey 32 + MAC 2 + ciphertext") {
			return p
		}
		p.AnonReq = &AnonReq{DestHash: pl[0], SenderPubKey: pl[1:33], MAC: [2]byte{pl[33], pl[34]}, Ciphertext: pl[35:]}
	case TypeTrace:
		if short(9, "tag 4 + auth 4 + flags 1") {
			return p
		}
		route, size, _ := f.traceRoute()
		t := &Trace{Tag: binary.LittleEndian.Uint32(pl), AuthCode: binary.LittleEndian.Uint32(pl[4:]), Flags: pl[8], HashSize: size, Route: route}
		t.SNRs = make([]float64, len(f.Path))
		for i, b := range f.Path {
			t.SNRs[i] = float64(int8(b)) / 4
		}
		p.Trace = t
	case TypeMultipart:
		if short(1, "remaining/type 1") {
			return p
		}
		m := &Multipart{Remaining: int(pl[0] >> 4), InnerType: PayloadType(pl[0] & 0x0F), Inner: pl[1:]}
		if m.InnerType == TypeAck && short(5, "header 1 + ack crc 4") {
			return p
		}
		p.Multipart = m
	case TypeControl:
		if short(1, "flags 1") {
			return p
		}
		c := &Control{Flags: pl[0], SubType: int(pl[0] >> 4)}
		switch c.SubType {
		case 0x8:
			if short(6, "flags 1 + type filter 1 + tag 4") {
				return p
			}
			c.PrefixOnly = pl[0]&1 != 0
			c.TypeFilter = pl[1]
			c.Tag = binary.LittleEndian.Uint32(pl[2:])
			if len(pl) >= 10 {
				c.HasSince, c.Since = true, binary.LittleEndian.Uint32(pl[6:])
			}
		case 0x9:
			if short(6, "flags 1 + snr 1 + tag 4") {
				return p
			}
			c.NodeType = int(pl[0] & 0x0F)
			c.SNRRaw = int8(pl[1])
			c.Tag = binary.LittleEndian.Uint32(pl[2:])
			c.PubKey = pl[6:]
		}
		p.Control = c
	}
	return p
}

func decodeAdvert(pl []byte, verify bool) *Advert {
	a := &Advert{
		PubKey:    pl[:32],
		Timestamp: binary.LittleEndian.Uint32(pl[32:]),
		Signature: pl[36:100],
		Appdata:   pl[100:],
	}
	a.Signed = a.Appdata
	if len(a.Signed) > 32 {
		a.Signed = a.Signed[:32]
	}
	if verify {
		a.SignatureChecked = true
		a.SignatureValid = verifyAdvert(pl, 32)
	}
	app := a.Signed
	if len(app) == 0 {
		return a
	}
	a.HasFlags, a.Flags, a.AdvType = true, app[0], int(app[0]&0x0F)
	a.AppdataValid = true
	off := 1
	take := func(n int) []byte {
		if !a.AppdataValid || off+n > len(app) {
			a.AppdataValid = false
			return nil
		}
		b := app[off : off+n]
		off += n
		return b
	}
	if a.Flags&0x10 != 0 {
		if b := take(8); b != nil {
			a.HasLocation = true
			a.LatE6 = int32(binary.LittleEndian.Uint32(b))
			a.LonE6 = int32(binary.LittleEndian.Uint32(b[4:]))
		}
	}
	if a.Flags&0x20 != 0 {
		if b := take(2); b != nil {
			a.HasFeat1, a.Feat1 = true, binary.LittleEndian.Uint16(b)
		}
	}
	if a.Flags&0x40 != 0 {
		if b := take(2); b != nil {
			a.HasFeat2, a.Feat2 = true, binary.LittleEndian.Uint16(b)
		}
	}
	if a.Flags&0x80 != 0 && a.AppdataValid {
		a.HasName = true
		a.NameBytes = app[off:]
		a.Name = validUTF8(cString(a.NameBytes))
	}
	return a
}

func decodeGroup(t PayloadType, pl []byte, keys *KeyRing) *GroupMessage {
	g := &GroupMessage{ChannelHash: pl[0], MAC: [2]byte{pl[1], pl[2]}, Ciphertext: pl[3:]}
	g.Decryption = keys.DecryptGroup(pl, t == TypeGrpTxt)
	if g.Decryption.Status != StatusDecrypted {
		return g
	}
	plain := g.Decryption.Plaintext
	if t == TypeGrpTxt {
		// DecryptGroup guarantees at least 5 bytes and UTF-8 text.
		g.SenderTimestamp = binary.LittleEndian.Uint32(plain)
		g.TxtType, g.Attempt = int(plain[4]>>2), int(plain[4]&3)
		g.Text = string(cString(plain[5:]))
		g.Sender, g.Message = splitSender(g.Text)
		return g
	}
	if len(plain) < 3 {
		g.DataErr = "inner too short"
		return g
	}
	g.DataType = binary.LittleEndian.Uint16(plain)
	g.DataLen = int(plain[2])
	if 3+g.DataLen > len(plain) {
		g.DataErr = "inner data_len exceeds buffer"
		return g
	}
	g.Data = plain[3 : 3+g.DataLen]
	return g
}

// splitSender splits "<sender>: <message>" at the first ": ". Text without
// one (or starting with one) has no sender.
func splitSender(text string) (sender, message string) {
	if i := strings.Index(text, ": "); i > 0 {
		return text[:i], text[i+2:]
	}
	return "", text
}

func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// --- stored forms (mqtt-formats.md §6, §10) ---

// ChannelHash is transmissions.channel_hash: for GRP_TXT only, the channel
// name when decrypted, else "enc_" and the hash byte in uppercase hex
// ("enc_D9"); NULL for every other type, GRP_DATA included.
func (p *Packet) ChannelHash() sql.NullString {
	if p.Frame.Type != TypeGrpTxt {
		return sql.NullString{}
	}
	if p.Group == nil {
		if len(p.Frame.Payload) == 0 {
			return sql.NullString{}
		}
		return sql.NullString{String: "enc_" + hexUpperString(p.Frame.Payload[:1]), Valid: true}
	}
	if p.Group.Decryption.Status == StatusDecrypted {
		return sql.NullString{String: p.Group.Decryption.Channel, Valid: true}
	}
	return sql.NullString{String: "enc_" + hexUpperString([]byte{p.Group.ChannelHash}), Valid: true}
}

// FromPubkey is transmissions.from_pubkey: the advert's public key in
// lowercase hex, NULL for other types.
func (p *Packet) FromPubkey() sql.NullString {
	if p.Advert == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: hexLowerString(p.Advert.PubKey), Valid: true}
}

// Node is what an ADVERT contributes to its nodes row.
type Node struct {
	PublicKey string // 64 lowercase hex digits
	Name      string
	Role      string // see Advert.Role
	// Lat and Lon are set when the advert carries a location.
	Lat, Lon sql.NullFloat64
	// SignatureValid is false only when the signature was checked and
	// failed: CoreScope then writes one dropped_packets row and nothing
	// else.
	SignatureValid bool
	Timestamp      uint32
}

// Node returns the node row fields of an ADVERT; ok is false for other
// packets (and adverts too short to read).
func (p *Packet) Node() (n Node, ok bool) {
	a := p.Advert
	if a == nil {
		return n, false
	}
	n = Node{
		PublicKey:      hexLowerString(a.PubKey),
		Name:           a.Name,
		Role:           a.Role(),
		SignatureValid: !a.SignatureChecked || a.SignatureValid,
		Timestamp:      a.Timestamp,
	}
	if a.HasLocation {
		n.Lat = sql.NullFloat64{Float64: a.Lat(), Valid: true}
		n.Lon = sql.NullFloat64{Float64: a.Lon(), Valid: true}
	}
	return n, true
}

// csTypeName is the `type` CoreScope writes for a payload type.
func csTypeName(t PayloadType) string {
	if t >= 0x0C && t <= 0x0E {
		return "UNKNOWN"
	}
	return t.String()
}

// DecodedJSON is transmissions.decoded_json: CoreScope's payload object
// (mqtt-formats.md §10) with the firmware's values. See the package
// documentation for where it deliberately differs from CoreScope.
func (p *Packet) DecodedJSON() []byte {
	f := &p.Frame
	pl := f.Payload
	s := storedPayload{Type: csTypeName(f.Type)}
	if p.PayloadErr != nil && f.Type != TypeMultipart && f.Type != TypeControl {
		s.RawHex = hexLowerString(pl)
		s.Error = "too short"
		if f.Type == TypeAdvert {
			s.Error = "too short for advert"
		}
		return marshalStored(&s)
	}
	switch {
	case p.Peer != nil:
		m := p.Peer
		s.DestHash = hexLowerString([]byte{m.DestHash})
		s.MAC = hexLowerString(m.MAC[:])
		if f.Type == TypePath {
			s.SrcHash = hexLowerString([]byte{m.SrcHash})
			s.PathData = hexLowerString(m.Ciphertext)
		} else {
			s.SrcHash = hexLowerString([]byte{m.SrcHash})
			s.EncryptedData = hexLowerString(m.Ciphertext)
		}
	case p.Ack != nil:
		s.ExtraHash = hex8(p.Ack.CRC)
		s.AckLen = intp(4 + len(p.Ack.Extra))
		if len(p.Ack.Extra) >= 1 {
			s.AckAttempt = intp(int(p.Ack.Extra[0]))
		}
		if len(p.Ack.Extra) >= 2 {
			s.AckRand = intp(int(p.Ack.Extra[1]))
		}
	case p.Advert != nil:
		a := p.Advert
		s.PubKey = hexLowerString(a.PubKey)
		s.Timestamp = a.Timestamp
		s.TimestampISO = epochISO(a.Timestamp)
		s.Signature = hexLowerString(a.Signature)
		if a.SignatureChecked {
			s.SignatureValid = boolp(a.SignatureValid)
		}
		if a.HasFlags {
			s.Flags = &advertFlags{
				Raw: int(a.Flags), Type: a.AdvType,
				Chat: a.AdvType == 1, Repeater: a.AdvType == 2, Room: a.AdvType == 3, Sensor: a.AdvType == 4,
				HasLocation: a.Flags&0x10 != 0, HasFeat1: a.Flags&0x20 != 0, HasFeat2: a.Flags&0x40 != 0, HasName: a.Flags&0x80 != 0,
			}
		}
		if a.HasLocation {
			s.Lat, s.Lon = f64p(a.Lat()), f64p(a.Lon())
		}
		s.Name = a.Name
		if a.HasFeat1 {
			s.Feat1 = intp(int(a.Feat1))
		}
		if a.HasFeat2 {
			s.Feat2 = intp(int(a.Feat2))
		}
	case p.Group != nil:
		g := p.Group
		s.ChannelHash = int(g.ChannelHash)
		s.ChannelHashHex = hexUpperString([]byte{g.ChannelHash})
		s.DecryptionStatus = string(g.Decryption.Status)
		if g.Decryption.Status != StatusDecrypted {
			s.MAC = hexLowerString(g.MAC[:])
			s.EncryptedData = hexLowerString(g.Ciphertext)
			break
		}
		s.Channel = g.Decryption.Channel
		if f.Type == TypeGrpTxt {
			s.Type = "CHAN"
			s.Text, s.Sender, s.SenderTimestamp, s.TxtType = g.Text, g.Sender, g.SenderTimestamp, g.TxtType
			break
		}
		if g.DataErr == "inner too short" {
			s.Error = g.DataErr
			break
		}
		s.DataType, s.DataLen = intp(int(g.DataType)), intp(g.DataLen)
		if g.DataErr != "" {
			s.Error = g.DataErr
		} else {
			s.DecryptedBlob = hexLowerString(g.Data)
		}
	case p.AnonReq != nil:
		m := p.AnonReq
		s.DestHash = hexLowerString([]byte{m.DestHash})
		s.MAC = hexLowerString(m.MAC[:])
		s.EncryptedData = hexLowerString(m.Ciphertext)
		s.EphemeralPubKey = hexLowerString(m.SenderPubKey)
	case p.Trace != nil:
		t := p.Trace
		s.PathData = hexLowerString(pl[9:])
		if len(t.SNRs) > 0 {
			s.SNRValues = t.SNRs
		}
		s.Tag, s.AuthCode, s.TraceFlags = t.Tag, t.AuthCode, intp(int(t.Flags))
	case f.Type == TypeMultipart:
		if len(pl) == 0 {
			s.RawHex, s.Error = "", "too short"
			break
		}
		s.Remaining, s.InnerType = intp(int(pl[0]>>4)), intp(int(pl[0]&0x0F))
		inner := PayloadType(pl[0] & 0x0F)
		s.InnerTypeName = csTypeName(inner)
		if p.Multipart != nil && inner == TypeAck {
			s.InnerAckCrc = hex8(binary.LittleEndian.Uint32(pl[1:]))
			s.InnerAckLen = intp(len(pl) - 1)
			if len(pl) >= 6 {
				s.InnerAckAttempt = intp(int(pl[5]))
			}
			if len(pl) >= 7 {
				s.InnerAckRand = intp(int(pl[6]))
			}
		} else if len(pl) > 1 {
			s.InnerPayload = hexLowerString(pl[1:])
		}
		if p.PayloadErr != nil {
			s.Error = "too short"
		}
	case f.Type == TypeControl:
		if len(pl) == 0 {
			s.Error = "too short"
			break
		}
		s.RawHex = hexLowerString(pl)
		s.CtrlFlags = hexLowerString(pl[:1])
		s.CtrlZeroHop = boolp(pl[0]&0x80 != 0)
		s.CtrlLength = intp(len(pl))
		c := p.Control
		switch pl[0] >> 4 {
		case 0x8:
			s.CtrlSubtype = "DISCOVER_REQ"
			if c != nil {
				s.CtrlFilter, s.CtrlTag = intp(int(c.TypeFilter)), u32p(c.Tag)
				if c.HasSince {
					s.CtrlSince = u32p(c.Since)
				}
			}
		case 0x9:
			s.CtrlSubtype = "DISCOVER_RESP"
			s.CtrlNodeType = intp(int(pl[0] & 0x0F))
			if c != nil {
				// Raw int8 quarter-dB, as CoreScope stores it: its frontend
				// divides by 4 for display.
				s.CtrlSNR, s.CtrlTag = intp(int(c.SNRRaw)), u32p(c.Tag)
				if len(c.PubKey) > 0 {
					s.CtrlPubKey = hexLowerString(c.PubKey)
				}
			}
		default:
			s.CtrlSubtype = "UNKNOWN"
		}
		if p.PayloadErr != nil {
			s.Error = "too short"
		}
	case f.Type == TypeRawCustom:
		s.RawHex = hexLowerString(pl)
		s.RawLength = intp(len(pl))
		if len(pl) > 0 {
			s.FirstByteTag = hexUpperString(pl[:1])
		}
	default: // reserved 0x0C-0x0E
		s.RawHex = hexLowerString(pl)
	}
	return marshalStored(&s)
}

func hex8(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return hexLowerString(b[:])
}

// epochISO formats unix seconds as CoreScope's timestampISO.
func epochISO(sec uint32) string {
	return time.Unix(int64(sec), 0).UTC().Format("2006-01-02T15:04:05.000Z")
}
