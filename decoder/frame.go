package decoder

import (
	"crypto/sha256"
	"encoding/binary"
)

// Firmware limits (FW src/MeshCore.h).
const (
	MaxFrameBytes   = 255 // MAX_TRANS_UNIT: the radio cannot deliver more
	MaxPathBytes    = 64  // MAX_PATH_SIZE
	MaxPayloadBytes = 184 // MAX_PACKET_PAYLOAD
	// MaxFrameHexChars bounds the text DecodeFrame looks at: longer input is
	// refused as too_long before a single digit is read. Twice the longest
	// frame, leaving room for whitespace between the digits.
	MaxFrameHexChars = 4 * MaxFrameBytes
)

// RouteType is header bits 0-1.
type RouteType uint8

const (
	RouteTransportFlood  RouteType = 0
	RouteFlood           RouteType = 1
	RouteDirect          RouteType = 2
	RouteTransportDirect RouteType = 3
)

var routeNames = [4]string{"TRANSPORT_FLOOD", "FLOOD", "DIRECT", "TRANSPORT_DIRECT"}

func (r RouteType) String() string { return routeNames[r&3] }

// HasTransportCodes reports whether frames of this route carry the two
// transport codes after the header (routes 0 and 3).
func (r RouteType) HasTransportCodes() bool {
	return r == RouteTransportFlood || r == RouteTransportDirect
}

// PayloadType is header bits 2-5.
type PayloadType uint8

const (
	TypeReq       PayloadType = 0x00
	TypeResponse  PayloadType = 0x01
	TypeTxtMsg    PayloadType = 0x02
	TypeAck       PayloadType = 0x03
	TypeAdvert    PayloadType = 0x04
	TypeGrpTxt    PayloadType = 0x05
	TypeGrpData   PayloadType = 0x06
	TypeAnonReq   PayloadType = 0x07
	TypePath      PayloadType = 0x08
	TypeTrace     PayloadType = 0x09
	TypeMultipart PayloadType = 0x0A
	TypeControl   PayloadType = 0x0B
	TypeRawCustom PayloadType = 0x0F
)

var payloadNames = [16]string{
	"REQ", "RESPONSE", "TXT_MSG", "ACK", "ADVERT", "GRP_TXT", "GRP_DATA", "ANON_REQ",
	"PATH", "TRACE", "MULTIPART", "CONTROL", "RESERVED_12", "RESERVED_13", "RESERVED_14", "RAW_CUSTOM",
}

// String is the firmware name; 0x0C-0x0E are RESERVED_12 … RESERVED_14.
func (t PayloadType) String() string { return payloadNames[t&0x0F] }

// ContentHash is the firmware packet hash (Packet::calculatePacketHash):
// the first 8 bytes of SHA-256 over the payload type, the path_len for
// TRACE only, and the payload.
type ContentHash [8]byte

// String is the 16 lowercase hex digits CoreScope stores in
// transmissions.hash.
func (h ContentHash) String() string { return string(h.AppendHex(make([]byte, 0, 16))) }

// AppendHex appends the 16 lowercase hex digits to dst.
func (h ContentHash) AppendHex(dst []byte) []byte { return appendHexLower(dst, h[:]) }

// Frame is one MeshCore frame taken apart by the firmware's receive rules
// (FW Dispatcher::tryParsePacket), without any cryptography: what every
// observation of a packet costs, duplicates included.
//
// Path and Payload are slices of Bytes.
type Frame struct {
	Bytes   []byte // the whole frame
	Header  byte
	Route   RouteType
	Type    PayloadType
	Version uint8 // header bits 6-7; only 0 is valid

	HasTransportCodes bool
	TransportCodes    [2]uint16 // u16 LE values, as the firmware computes them

	PathLenByte  byte
	PathHashSize int // 1-3 bytes per hop (from path_len bits 6-7)
	PathHops     int // path_len bits 0-5; for TRACE the number of SNR bytes
	Path         []byte
	Payload      []byte

	Hash ContentHash
}

// Fingerprint identifies the exact frame bytes (header, transport codes,
// path, payload: more than Hash, which leaves the route and path out): the
// key, with the observer, under which the writer recognises one reception
// published in two forms. 64-bit FNV-1a: no allocation, and a collision
// between two frames one observer reports within seconds of each other is
// a 1 in 2^64 event.
func (f *Frame) Fingerprint() uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for _, c := range f.Bytes {
		h ^= uint64(c)
		h *= prime64
	}
	return h
}

// HeaderKnown reports whether at least the header byte was decoded, so
// Route, Type and Version mean something even for a refused frame.
func (f *Frame) HeaderKnown() bool { return len(f.Bytes) > 0 }

// DecodeFrame takes a frame apart from its hex text (either case;
// whitespace between digits is ignored) and computes its content hash. The
// error is a *FrameError whose Code is one of the frame classes; on error
// the Frame holds what was read before the failing check (see HeaderKnown).
// Text longer than MaxFrameHexChars is refused without being read.
func DecodeFrame(rawHex string) (Frame, error) {
	if len(rawHex) > MaxFrameHexChars {
		return Frame{}, &FrameError{Code: CodeTooLong, Detail: "hex text of " + itoa(len(rawHex)) + " characters is longer than any frame (255 bytes)"}
	}
	digits := 0
	for i := 0; i < len(rawHex); i++ {
		c := rawHex[i]
		switch {
		case unhex(c) < 16:
			digits++
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			return Frame{}, &FrameError{Code: CodeBadHex, Detail: "non-hex character"}
		}
	}
	if digits%2 != 0 {
		return Frame{}, &FrameError{Code: CodeBadHex, Detail: "odd number of hex digits"}
	}
	buf := make([]byte, digits/2)
	n, hi := 0, -1
	for i := 0; i < len(rawHex); i++ {
		v := unhex(rawHex[i])
		if v >= 16 {
			continue
		}
		if hi < 0 {
			hi = int(v)
			continue
		}
		buf[n] = byte(hi<<4) | v
		n++
		hi = -1
	}
	return DecodeFrameBytes(buf)
}

// DecodeFrameBytes is DecodeFrame for a frame already in binary. The Frame
// keeps b (it is not copied).
func DecodeFrameBytes(b []byte) (Frame, error) {
	f := Frame{Bytes: b}
	if len(b) > 0 {
		f.Header = b[0]
		f.Route = RouteType(b[0] & 0x03)
		f.Type = PayloadType((b[0] >> 2) & 0x0F)
		f.Version = b[0] >> 6
	}
	if len(b) < 2 {
		return f, &FrameError{Code: CodeTooShort, Detail: "need at least header + path_len byte"}
	}
	if len(b) > MaxFrameBytes {
		return f, &FrameError{Code: CodeTooLong, Detail: "packet longer than 255 bytes"}
	}
	if f.Version != 0 {
		return f, &FrameError{Code: CodeUnsupportedVersion, Detail: "payload version " + itoa(int(f.Version)) + " (firmware accepts only 0 = v1)"}
	}
	off := 1
	if f.Route.HasTransportCodes() {
		if len(b) < off+4+1 {
			return f, &FrameError{Code: CodeTooShort, Detail: "transport route needs 4 transport-code bytes + path_len byte"}
		}
		f.HasTransportCodes = true
		f.TransportCodes[0] = binary.LittleEndian.Uint16(b[off:])
		f.TransportCodes[1] = binary.LittleEndian.Uint16(b[off+2:])
		off += 4
	}
	f.PathLenByte = b[off]
	off++
	sizeCode := int(f.PathLenByte >> 6)
	if sizeCode == 3 {
		return f, &FrameError{Code: CodePathHashSizeReserved, Detail: "path_len bits 6-7 = 0b11 (4-byte hashes) are reserved"}
	}
	f.PathHashSize = sizeCode + 1
	f.PathHops = int(f.PathLenByte & 0x3F)
	pathBytes := f.PathHops * f.PathHashSize
	if pathBytes > MaxPathBytes {
		return f, &FrameError{Code: CodePathTooLong, Detail: "path bytes " + itoa(pathBytes) + " > 64"}
	}
	if off+pathBytes > len(b) {
		return f, &FrameError{Code: CodeTruncatedPath, Detail: "path needs " + itoa(pathBytes) + " bytes, only " + itoa(len(b)-off) + " left"}
	}
	f.Path = b[off : off+pathBytes]
	f.Payload = b[off+pathBytes:]
	if len(f.Payload) > MaxPayloadBytes {
		return f, &FrameError{Code: CodePayloadTooLong, Detail: "payload " + itoa(len(f.Payload)) + " > 184 bytes"}
	}
	f.Hash = contentHash(f.Type, f.PathLenByte, f.Payload)
	return f, nil
}

// contentHash is FW Packet::calculatePacketHash. path_len is a uint16 in
// the firmware, so TRACE hashes it as two bytes, little-endian.
func contentHash(t PayloadType, pathLen byte, payload []byte) ContentHash {
	var in [1 + 2 + MaxPayloadBytes]byte
	in[0] = byte(t)
	n := 1
	if t == TypeTrace {
		in[1], in[2] = pathLen, 0
		n = 3
	}
	n += copy(in[n:], payload)
	sum := sha256.Sum256(in[:n])
	var h ContentHash
	copy(h[:], sum[:8])
	return h
}

// traceRoute returns the TRACE route hashes (payload bytes 9 on, each
// 1 << (flags & 3) bytes) and the hash size; ok is false when the payload
// is too short to have a flags byte.
func (f *Frame) traceRoute() (route []byte, size int, ok bool) {
	if f.Type != TypeTrace || len(f.Payload) < 9 {
		return nil, 0, false
	}
	size = 1 << (f.Payload[8] & 3)
	route = f.Payload[9:]
	return route[:len(route)/size*size], size, true
}

// hopSpan is the byte string whose hops make up path_json: the header path,
// or for TRACE the payload route (the header path of a TRACE holds SNRs).
func (f *Frame) hopSpan() ([]byte, int) {
	if f.Type == TypeTrace {
		route, size, ok := f.traceRoute()
		if !ok {
			return nil, 1
		}
		return route, size
	}
	return f.Path, f.PathHashSize
}

// HopCount is the number of entries in path_json (and in Hops).
func (f *Frame) HopCount() int {
	span, size := f.hopSpan()
	return len(span) / size
}

// Hops are the path entries as uppercase hex, the values of path_json and
// what resolved_path resolves to node keys: the header path's hashes, or
// for TRACE the route hashes from the payload.
func (f *Frame) Hops() []string {
	span, size := f.hopSpan()
	return splitHex(span, size)
}

// HeaderPathHex is the header path split into entries of PathHashSize
// bytes, as uppercase hex. For TRACE these are the SNR bytes.
func (f *Frame) HeaderPathHex() []string { return splitHex(f.Path, f.PathHashSize) }

func splitHex(span []byte, size int) []string {
	if size <= 0 {
		return []string{}
	}
	n := len(span) / size
	hops := make([]string, n)
	if n == 0 {
		return hops
	}
	// One backing string for all hops: one allocation instead of n.
	all := string(appendHexUpper(make([]byte, 0, 2*n*size), span[:n*size]))
	for i := range hops {
		hops[i] = all[2*i*size : 2*(i+1)*size]
	}
	return hops
}

// AppendPathJSON appends path_json, the compact JSON array of the Hops
// (`["7D1D","DA2A"]`, or `[]`), to dst.
func (f *Frame) AppendPathJSON(dst []byte) []byte {
	span, size := f.hopSpan()
	dst = append(dst, '[')
	for i := 0; i+size <= len(span); i += size {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = appendHexUpper(dst, span[i:i+size])
		dst = append(dst, '"')
	}
	return append(dst, ']')
}

// PathJSON is AppendPathJSON as a string.
func (f *Frame) PathJSON() string {
	span, _ := f.hopSpan()
	return string(f.AppendPathJSON(make([]byte, 0, 2+4*len(span)+2)))
}

const hexLower = "0123456789abcdef"
const hexUpper = "0123456789ABCDEF"

func appendHexLower(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexLower[c>>4], hexLower[c&15])
	}
	return dst
}

func appendHexUpper(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexUpper[c>>4], hexUpper[c&15])
	}
	return dst
}

func hexLowerString(b []byte) string { return string(appendHexLower(make([]byte, 0, 2*len(b)), b)) }
func hexUpperString(b []byte) string { return string(appendHexUpper(make([]byte, 0, 2*len(b)), b)) }

// unhex returns the value of a hex digit, or 16 for anything else.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 16
}
