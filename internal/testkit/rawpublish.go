package testkit

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// RawPublisher speaks just enough MQTT 3.1.1 to stream a payload of any size
// without holding it in memory (paho builds the whole packet first): a test
// or the harness can send a broker a publish of hundreds of megabytes.
type RawPublisher struct {
	conn net.Conn
	r    *bufio.Reader
	id   uint16
}

// DialRawPublisher connects to the broker at addr (host:port) with a clean
// session and a client id starting with idPrefix.
func DialRawPublisher(addr, idPrefix string) (*RawPublisher, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raw publisher: %w", err)
	}
	clientID := fmt.Sprintf("%s-%d", idPrefix, time.Now().UnixNano())
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(clientID))}
	pkt := appendRemainingLength([]byte{0x10}, len(vh)+len(clientID))
	pkt = append(append(pkt, vh...), clientID...)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(pkt); err != nil {
		conn.Close()
		return nil, fmt.Errorf("raw publisher: CONNECT: %w", err)
	}
	p := &RawPublisher{conn: conn, r: bufio.NewReader(conn)}
	var connack [4]byte
	if _, err := io.ReadFull(p.r, connack[:]); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		conn.Close()
		return nil, fmt.Errorf("raw publisher: CONNACK % x: %v", connack, err)
	}
	return p, nil
}

// Close closes the connection.
func (p *RawPublisher) Close() { p.conn.Close() }

// Publish streams size zero bytes to topic; at QoS 1 it waits for the
// broker's PUBACK.
func (p *RawPublisher) Publish(topic string, qos byte, size int) error {
	vh := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
	vh = append(vh, topic...)
	if qos > 0 {
		p.id++
		vh = binary.BigEndian.AppendUint16(vh, p.id)
	}
	hdr := appendRemainingLength([]byte{0x30 | qos<<1}, len(vh)+size)
	p.conn.SetDeadline(time.Now().Add(5 * time.Minute))
	if _, err := p.conn.Write(append(hdr, vh...)); err != nil {
		return fmt.Errorf("raw publisher: %w", err)
	}
	if _, err := io.CopyN(p.conn, zeros{}, int64(size)); err != nil {
		return fmt.Errorf("raw publisher: payload: %w", err)
	}
	if qos > 0 {
		var ack [4]byte
		if _, err := io.ReadFull(p.r, ack[:]); err != nil || ack[0] != 0x40 || binary.BigEndian.Uint16(ack[2:]) != p.id {
			return fmt.Errorf("raw publisher: PUBACK % x for id %d: %v", ack, p.id, err)
		}
	}
	return nil
}

// appendRemainingLength appends MQTT's variable-length encoding of n.
func appendRemainingLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
