package loadgen

import (
	"crypto/aes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// Payload types (meshcore-packets.md §2).
const (
	typeReq       = 0x00
	typeResponse  = 0x01
	typeTxtMsg    = 0x02
	typeAck       = 0x03
	typeAdvert    = 0x04
	typeGrpTxt    = 0x05
	typeGrpData   = 0x06
	typeAnonReq   = 0x07
	typePath      = 0x08
	typeTrace     = 0x09
	typeMultipart = 0x0A
	typeControl   = 0x0B
	typeReserved  = 0x0C
	typeRawCustom = 0x0F
)

// Route types.
const (
	routeTransportFlood  = 0
	routeFlood           = 1
	routeDirect          = 2
	routeTransportDirect = 3
)

// PayloadTypeNames are the firmware names of the 16 payload types, as
// CoreScope's transmissions.payload_type reports are usually labelled.
var PayloadTypeNames = [16]string{"REQ", "RESPONSE", "TXT_MSG", "ACK", "ADVERT", "GRP_TXT", "GRP_DATA", "ANON_REQ", "PATH", "TRACE", "MULTIPART", "CONTROL", "RESERVED_C", "RESERVED_D", "RESERVED_E", "RAW_CUSTOM"}

// limits of a valid frame (meshcore-packets.md §1).
const (
	maxPathBytes    = 64
	maxPayloadBytes = 184
)

// frame is one over-the-air packet as an observer heard it.
type frame struct {
	route, ptype int
	transport    [2]uint16
	hashSize     int    // 1-3 bytes per hop (TRACE: 1, the SNR bytes)
	path         []byte // hop hashes (TRACE: SNR bytes)
	payload      []byte
}

func (f *frame) bytes() []byte {
	b := make([]byte, 0, 6+len(f.path)+len(f.payload))
	b = append(b, byte(f.route)|byte(f.ptype)<<2)
	if f.route == routeTransportFlood || f.route == routeTransportDirect {
		b = binary.LittleEndian.AppendUint16(b, f.transport[0])
		b = binary.LittleEndian.AppendUint16(b, f.transport[1])
	}
	b = append(b, f.pathLenByte())
	b = append(b, f.path...)
	return append(b, f.payload...)
}

// pathLenByte packs hop count and hash size (§3); a TRACE's is a plain
// count of SNR bytes.
func (f *frame) pathLenByte() byte {
	if f.ptype == typeTrace {
		return byte(len(f.path))
	}
	return byte(f.hashSize-1)<<6 | byte(len(f.path)/f.hashSize)
}

// contentHash is the firmware's packet hash (§7), 16 lowercase hex digits.
func (f *frame) contentHash() string {
	h := sha256.New()
	h.Write([]byte{byte(f.ptype)})
	if f.ptype == typeTrace {
		h.Write([]byte{f.pathLenByte(), 0})
	}
	h.Write(f.payload)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// pathJSON is observations.path_json: compact JSON of uppercase hop hex;
// for TRACE the route hashes inside the payload (1 << (flags & 3) bytes).
func (f *frame) pathJSON() string {
	span, size := f.path, f.hashSize
	if f.ptype == typeTrace {
		size = 1 << (f.payload[8] & 3)
		span = f.payload[9:]
		span = span[:len(span)/size*size]
	}
	var sb strings.Builder
	sb.WriteByte('[')
	for i := 0; i+size <= len(span); i += size {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('"')
		sb.WriteString(strings.ToUpper(hex.EncodeToString(span[i : i+size])))
		sb.WriteByte('"')
	}
	sb.WriteByte(']')
	return sb.String()
}

// advertPayload builds a signed ADVERT (§5.3): the signature covers
// pubkey ‖ timestamp ‖ appdata[:32]; badSignature flips one bit of it.
func advertPayload(n *Node, ts uint32, badSignature bool) []byte {
	app := []byte{byte(n.AdvType) | 0x80}
	if n.HasLocation {
		app[0] |= 0x10
		app = binary.LittleEndian.AppendUint32(app, uint32(n.LatE6))
		app = binary.LittleEndian.AppendUint32(app, uint32(n.LonE6))
	}
	app = append(app, n.Name...)
	signed := app[:min(len(app), 32)]
	msg := make([]byte, 0, 36+len(signed))
	msg = append(msg, n.PubKey...)
	msg = binary.LittleEndian.AppendUint32(msg, ts)
	msg = append(msg, signed...)
	sig := ed25519.Sign(n.priv, msg)
	if badSignature {
		sig[5] ^= 0x10
	}
	p := make([]byte, 0, 100+len(app))
	p = append(p, msg[:36]...)
	p = append(p, sig...)
	return append(p, app...)
}

// channelMAC is the firmware's MAC: HMAC-SHA256 keyed with the secret
// zero-extended to 32 bytes, over the ciphertext, first 2 bytes.
func channelMAC(secret, ct []byte) [2]byte {
	var key [32]byte
	copy(key[:], secret)
	m := hmac.New(sha256.New, key[:])
	m.Write(ct)
	sum := m.Sum(nil)
	return [2]byte{sum[0], sum[1]}
}

// groupPayload encrypts plain under the channel (§6): AES-128-ECB with
// secret[0:16] over the zero-padded plaintext, then the MAC.
func groupPayload(ch *Channel, plain []byte) []byte {
	padded := make([]byte, (len(plain)+15)/16*16)
	copy(padded, plain)
	block, err := aes.NewCipher(ch.Secret[:16])
	if err != nil {
		panic(err) // a 16-byte key never fails
	}
	for i := 0; i < len(padded); i += 16 {
		block.Encrypt(padded[i:i+16], padded[i:i+16])
	}
	mac := channelMAC(ch.Secret, padded)
	p := make([]byte, 0, 3+len(padded))
	p = append(p, ch.Hash, mac[0], mac[1])
	return append(p, padded...)
}

// grpTxtPlain is a GRP_TXT plaintext: timestamp, flags (txt_type 0, the
// attempt in the low bits), "sender: text".
func grpTxtPlain(ts uint32, attempt int, sender, text string) []byte {
	p := binary.LittleEndian.AppendUint32(nil, ts)
	p = append(p, byte(attempt&3))
	return append(p, sender+": "+text...)
}

// grpDataPlain is a GRP_DATA plaintext: data_type u16, data_len u8, data.
func grpDataPlain(dataType uint16, data []byte) []byte {
	p := binary.LittleEndian.AppendUint16(nil, dataType)
	p = append(p, byte(len(data)))
	return append(p, data...)
}

// transportCode is transport_code_1 for a region (§4): HMAC-SHA256 keyed
// with SHA256("#region")[0:16] over type ‖ payload, first 2 bytes as u16
// LE, 0 and 0xFFFF avoided.
func transportCode(region string, ptype int, payload []byte) uint16 {
	key := sha256.Sum256([]byte(region))
	m := hmac.New(sha256.New, key[:16])
	m.Write([]byte{byte(ptype)})
	m.Write(payload)
	c := binary.LittleEndian.Uint16(m.Sum(nil))
	switch c {
	case 0:
		return 1
	case 0xFFFF:
		return 0xFFFE
	}
	return c
}
