package receiver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

var testNonce = [nonceLen]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// encode serialises a paho packet as a broker would send it.
func encode(t testing.TB, cp packets.ControlPacket) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := cp.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testPublish(t testing.TB, topic string, qos byte, id uint16, retain, dup bool, payload []byte) []byte {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Retain, p.Dup, p.Payload = topic, qos, id, retain, dup, payload
	return encode(t, p)
}

// readAll reads packets through a guard with paho's own parser until the
// stream ends.
func readAll(t *testing.T, r io.Reader, limit int) ([]packets.ControlPacket, error) {
	t.Helper()
	g := newOversizeGuard(bufio.NewReaderSize(r, 64<<10), limit, testNonce)
	var out []packets.ControlPacket
	for {
		cp, err := packets.ReadPacket(g)
		if err != nil {
			return out, err
		}
		out = append(out, cp)
	}
}

// A stream of every packet type a broker sends, with oversized publishes
// (QoS 0 and 1, retained and DUP) among them, read whole and one byte at a
// time: everything else arrives as sent, and each oversized publish as the
// same packet with this connection's marker in place of its payload.
func TestOversizeGuard_Read_MixedStream(t *testing.T) {
	const limit = 1000
	big := bytes.Repeat([]byte{'x'}, 5000)
	edge := bytes.Repeat([]byte{'y'}, limit) // exactly at the limit: kept
	connack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
	suback := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
	suback.MessageID, suback.ReturnCodes = 7, []byte{0, 1}
	puback := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
	puback.MessageID = 9
	var stream []byte
	for _, p := range [][]byte{
		encode(t, connack),
		encode(t, suback),
		testPublish(t, "meshcore/SEA/a/packets", 0, 0, false, false, []byte("small")),
		testPublish(t, "meshcore/SEA/b/packets", 0, 0, false, false, big),
		testPublish(t, "meshcore/SEA/c/packets", 1, 42, true, true, big),
		testPublish(t, "meshcore/SEA/d/packets", 1, 43, false, false, edge),
		encode(t, packets.NewControlPacket(packets.Pingresp)),
		encode(t, puback),
		testPublish(t, "meshcore/SEA/e/packets", 1, 44, false, false, []byte("after")),
	} {
		stream = append(stream, p...)
	}
	for name, r := range map[string]func() io.Reader{
		"whole":      func() io.Reader { return bytes.NewReader(stream) },
		"1-byte":     func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half-reads": func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
	} {
		t.Run(name, func(t *testing.T) {
			got, err := readAll(t, r(), limit)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("stream ended with %v, want EOF", err)
			}
			if len(got) != 9 {
				t.Fatalf("%d packets, want 9", len(got))
			}
			pub := func(i int) *packets.PublishPacket { return got[i].(*packets.PublishPacket) }
			if string(pub(2).Payload) != "small" || string(pub(8).Payload) != "after" || pub(8).MessageID != 44 {
				t.Fatalf("small publishes changed: %v / %v", pub(2), pub(8))
			}
			if !bytes.Equal(pub(5).Payload, edge) {
				t.Fatalf("a payload of exactly the limit was not passed on (%d bytes)", len(pub(5).Payload))
			}
			for _, i := range []int{3, 4} {
				p := pub(i)
				size, ok := oversized(p.Payload, testNonce)
				if !ok || size != int64(len(big)) {
					t.Fatalf("packet %d: payload %q is not the marker for %d bytes", i, p.Payload, len(big))
				}
			}
			if p := pub(4); p.TopicName != "meshcore/SEA/c/packets" || p.Qos != 1 || p.MessageID != 42 || !p.Retain || !p.Dup {
				t.Fatalf("oversized QoS 1 publish lost its header: %+v", p.FixedHeader)
			}
			if got[1].(*packets.SubackPacket).MessageID != 7 || got[7].(*packets.PubackPacket).MessageID != 9 {
				t.Fatal("control packets changed")
			}
		})
	}
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// The largest publish MQTT can encode (remaining length 268,435,455, a
// four-byte varint) streams through in bounded memory and the packet after
// it is intact.
func TestOversizeGuard_Read_MaxRemainingLength(t *testing.T) {
	const remaining = 268_435_455
	topic := "meshcore/SEA/big/packets"
	hdr := []byte{0x30, 0xff, 0xff, 0xff, 0x7f, 0, byte(len(topic))}
	hdr = append(hdr, topic...)
	payload := remaining - 2 - len(topic)
	r := io.MultiReader(bytes.NewReader(hdr), io.LimitReader(zeros{}, int64(payload)),
		bytes.NewReader(testPublish(t, "meshcore/SEA/next/packets", 0, 0, false, false, []byte("next"))))
	got, err := readAll(t, r, 64<<10)
	if !errors.Is(err, io.EOF) || len(got) != 2 {
		t.Fatalf("%d packets, err %v; want 2 and EOF", len(got), err)
	}
	if size, ok := oversized(got[0].(*packets.PublishPacket).Payload, testNonce); !ok || size != int64(payload) {
		t.Fatalf("first packet is not the marker for %d bytes", payload)
	}
	if p := got[1].(*packets.PublishPacket); string(p.Payload) != "next" {
		t.Fatalf("the packet after the huge one is %+v", p)
	}
}

// Streams that are not MQTT close the connection with a clear error instead
// of desynchronising paho or making it allocate.
func TestOversizeGuard_Read_Malformed(t *testing.T) {
	topicTooLong := []byte{0x30, 0x90, 0x4e, 0xff, 0xff} // 10,000 bytes, topic 65,535
	cases := map[string]struct {
		stream []byte
		want   error
	}{
		"varint over 4 bytes": {[]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, errMalformed},
		"huge SUBACK":         {[]byte{0x90, 0x81, 0x80, 0x04}, errMalformed},
		"QoS 3 publish":       {append([]byte{0x36, 0x90, 0x4e, 0, 1, 'a'}, make([]byte, 10_000)...), errMalformed},
		"topic past the end":  {append(topicTooLong, make([]byte, 10_000)...), errMalformed},
		"cut in the header":   {[]byte{0x30, 0x80}, io.ErrUnexpectedEOF},
		"cut in the topic":    {[]byte{0x30, 0x90, 0x4e, 0, 10, 'a'}, io.ErrUnexpectedEOF},
		"cut in the payload":  {append([]byte{0x30, 0x90, 0x4e, 0, 1, 'a'}, make([]byte, 100)...), io.ErrUnexpectedEOF},
		"cut in a small one":  {[]byte{0x30, 0x10, 0, 1, 'a'}, io.ErrUnexpectedEOF},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			g := newOversizeGuard(bufio.NewReader(iotest.OneByteReader(bytes.NewReader(c.stream))), 1000, testNonce)
			_, err := io.Copy(io.Discard, g)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if _, again := g.Read(make([]byte, 1)); !errors.Is(again, c.want) {
				t.Fatalf("the next read returned %v: the error must stick", again)
			}
		})
	}
}

// A publisher cannot forge the marker: it is this connection's nonce.
func TestOversized_OtherNonce_NotAMarker(t *testing.T) {
	var other [nonceLen]byte
	marker := append(other[:], 0, 0, 0, 0, 0, 0, 1, 0)
	if _, ok := oversized(marker, testNonce); ok {
		t.Fatal("a payload with another nonce was taken for a marker")
	}
	if _, ok := oversized(append(testNonce[:], 0, 0, 0, 0, 0, 0, 1), testNonce); ok {
		t.Fatal("a payload one byte short was taken for a marker")
	}
}

// FuzzOversizeGuard_Read: whatever the broker sends, the guard never
// panics; with no packet over the limit it passes the bytes on unchanged
// (a prefix, up to where it finds the stream malformed); and how the bytes
// are split across reads changes nothing.
func FuzzOversizeGuard_Read(f *testing.F) {
	f.Add(testPublish(f, "meshcore/a", 1, 3, false, false, []byte("hello")), 1<<20)
	f.Add(append(testPublish(f, "t", 0, 0, false, false, make([]byte, 300)), 0xd0, 0), 100)
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, 10)
	f.Add([]byte{0x32, 0x0a, 0, 2, 'a', 'b', 0, 1, 'p', 'q', 'r', 's'}, 2)
	f.Fuzz(func(t *testing.T, stream []byte, limit int) {
		limit = max(limit, 0) % (1 << 20)
		read := func(r io.Reader) ([]byte, error) {
			g := newOversizeGuard(bufio.NewReaderSize(r, 16), limit, testNonce)
			return io.ReadAll(g)
		}
		whole, errWhole := read(bytes.NewReader(stream))
		split, errSplit := read(iotest.OneByteReader(bytes.NewReader(stream)))
		if !bytes.Equal(whole, split) || (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("split reads changed the result: %d bytes (%v) vs %d bytes (%v)", len(whole), errWhole, len(split), errSplit)
		}
		if !bytes.Contains(whole, testNonce[:]) && !bytes.HasPrefix(stream, whole) {
			t.Fatalf("with no marker made, the output is not a prefix of the input")
		}
	})
}
