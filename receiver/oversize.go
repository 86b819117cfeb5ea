package receiver

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// paho v3 reads every packet whole into memory before anyone can look at
// its size (twice: the packet, then a copy of the payload), and has no
// option to refuse large ones: three 100 MB publishes took the receiver to
// 484 MB, two 260 MB ones to 533 MB and off the broker for 11 s. So the
// size limit is enforced below paho, on the byte stream from the broker:
// oversizeGuard parses the fixed header of every incoming packet and
// streams the payload of a PUBLISH over the limit into the void, handing
// paho in its place the same PUBLISH (flags, topic, packet id) with a small
// marker payload. paho sees an intact stream and acknowledges a QoS 1
// marker like any message, so the broker does not resend it forever; the
// message handler recognises the marker and counts the drop as
// reasonOversized, and never hands it to the spool.
//
// The marker is a random nonce drawn per connection followed by the
// payload's real length: only this connection's guard can produce it, so
// no message a publisher can send is mistaken for one.

// Packet types (the high nibble of a fixed header's first byte).
const (
	packetPublish = 3
)

const (
	// maxControlPacket is the largest packet other than PUBLISH accepted
	// from a broker. Those are a few bytes (a SUBACK is two plus one per
	// topic filter); anything larger is a broken or hostile broker, and
	// paho would allocate it whole.
	maxControlPacket = 64 << 10
	nonceLen         = 16
	markerLen        = nonceLen + 8
)

// errMalformed marks a byte stream that is not MQTT: the connection is
// closed (paho reports it lost) and the source reconnects.
var errMalformed = errors.New("malformed MQTT packet from the broker")

// oversizeGuard filters one connection's incoming bytes; paho reads from
// Read. It is used by paho's one reading goroutine only.
type oversizeGuard struct {
	r     *bufio.Reader
	limit int // the largest payload passed on (spool.maxPayloadBytes)
	nonce [nonceLen]byte

	out  []byte // bytes ready for paho, taken before reading on
	keep []byte // out's backing array, reused
	body int    // bytes of the current packet still to be passed straight on
	err  error  // once set, every Read returns it
}

// newNonce draws the per-connection marker nonce.
func newNonce() [nonceLen]byte {
	var n [nonceLen]byte
	rand.Read(n[:]) // never fails (crypto/rand, Go 1.24+)
	return n
}

func newOversizeGuard(r *bufio.Reader, limit int, nonce [nonceLen]byte) *oversizeGuard {
	return &oversizeGuard{r: r, limit: limit, nonce: nonce}
}

// oversized reports whether payload is this connection's marker for a
// dropped publish, and the dropped payload's length.
func oversized(payload []byte, nonce [nonceLen]byte) (int64, bool) {
	if len(payload) != markerLen || !bytes.Equal(payload[:nonceLen], nonce[:]) {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(payload[nonceLen:])), true
}

func (g *oversizeGuard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(g.out) == 0 && g.body == 0 {
		if g.err != nil {
			return 0, g.err
		}
		if err := g.next(); err != nil {
			g.err = err
			g.out, g.body = nil, 0
		}
	}
	if len(g.out) > 0 {
		n := copy(p, g.out)
		g.out = g.out[n:]
		return n, nil
	}
	n, err := g.r.Read(p[:min(len(p), g.body)])
	g.body -= n
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // in the middle of a packet
		}
		g.err = err
		g.body = 0
	}
	return n, err
}

// next reads the next packet's fixed header and decides what paho gets:
// the header and a pass-through of the body, or, for an oversized PUBLISH,
// a marker packet once the payload has been discarded.
func (g *oversizeGuard) next() error {
	b0, err := g.r.ReadByte()
	if err != nil {
		return err // EOF here is a clean end between packets
	}
	out := append(g.keep[:0], b0)
	length := 0
	for i := 0; ; i++ {
		b, err := g.r.ReadByte()
		if err != nil {
			return unexpected(err)
		}
		out = append(out, b)
		length |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return fmt.Errorf("%w: the remaining length does not end within 4 bytes (header % x)", errMalformed, out)
		}
	}
	kind := b0 >> 4
	switch {
	case kind != packetPublish && length > maxControlPacket:
		return fmt.Errorf("%w: a packet of type %d with %d bytes (at most %d expected)", errMalformed, kind, length, maxControlPacket)
	case kind != packetPublish || length <= g.limit+2:
		// The payload is at most length-2 bytes (a topic length comes
		// first): it cannot be over the limit.
		g.keep, g.out, g.body = out, out, length
		return nil
	}

	// A PUBLISH that may be oversized: read its variable header, the
	// topic and (QoS 1 and 2) the packet id, to know the payload's size.
	qos := (b0 >> 1) & 3
	if qos == 3 {
		return fmt.Errorf("%w: PUBLISH with QoS 3", errMalformed)
	}
	hdrLen := len(out)
	if out, err = readN(g.r, out, 2); err != nil {
		return err
	}
	topicLen := int(binary.BigEndian.Uint16(out[hdrLen:]))
	vhLen := 2 + topicLen
	if qos > 0 {
		vhLen += 2
	}
	if vhLen > length {
		return fmt.Errorf("%w: PUBLISH of %d bytes with a %d-byte topic", errMalformed, length, topicLen)
	}
	if out, err = readN(g.r, out, vhLen-2); err != nil {
		return err
	}
	vh := out[hdrLen:]
	payload := length - vhLen
	if payload <= g.limit {
		g.keep, g.out, g.body = out, out, payload
		return nil
	}
	if _, err := g.r.Discard(payload); err != nil {
		return unexpected(err)
	}
	// The same packet, marker payload in place of the real one.
	msg := make([]byte, 0, 1+4+vhLen+markerLen)
	msg = append(msg, b0)
	msg = appendRemainingLength(msg, vhLen+markerLen)
	msg = append(msg, vh...)
	msg = append(msg, g.nonce[:]...)
	msg = binary.BigEndian.AppendUint64(msg, uint64(payload))
	g.keep, g.out, g.body = out[:0], msg, 0
	return nil
}

// readN appends n bytes from r to buf.
func readN(r *bufio.Reader, buf []byte, n int) ([]byte, error) {
	start := len(buf)
	buf = slices.Grow(buf, n)[:start+n]
	if _, err := io.ReadFull(r, buf[start:]); err != nil {
		return buf, unexpected(err)
	}
	return buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendRemainingLength encodes n as MQTT's remaining-length varint.
func appendRemainingLength(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}
