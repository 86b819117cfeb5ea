// Package capture reads and writes MQTT captures in the corpus JSONL format:
// one message per line,
//
//	{"topic": "...", "payload": {...} | "text", "received_at": "RFC3339"}
//
// the format of the real traffic in testdata, of `meshingest spool export`
// and `import`, and of `meshingest replay`. A payload that is a JSON object
// or array stands for its own bytes exactly as they appear in the line; a
// JSON string stands for its UTF-8 bytes; a payload that is neither valid
// JSON nor UTF-8 is carried as base64 in payload_b64. Other keys (the
// corpus's "fixture" provenance) are ignored on read.
package capture

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// MaxLineBytes bounds one line, so a corrupt or hostile file cannot make a
// reader allocate without limit. MQTT payloads in the spool are capped well
// below it.
const MaxLineBytes = 4 << 20

// Message is one captured MQTT message.
type Message struct {
	Topic      string
	Payload    []byte
	ReceivedAt time.Time // zero when the line has none
	// Source is the receiver's source name, written by spool export; empty
	// in the corpus.
	Source string
	// Retained is the MQTT retained flag, when the capture knows it.
	Retained bool
	// Broker, QoS, Duplicate (the DUP flag) and MessageID (the packet id)
	// are what the receiver recorded of the delivery, written by spool
	// export so that an import keeps a broker's redelivery a redelivery.
	Broker    string
	QoS       byte
	Duplicate bool
	MessageID uint16
}

type line struct {
	Topic      string          `json:"topic"`
	Payload    json.RawMessage `json:"payload"`
	PayloadB64 string          `json:"payload_b64"`
	ReceivedAt string          `json:"received_at"`
	Source     string          `json:"source"`
	Retained   bool            `json:"retained"`
	Broker     string          `json:"broker"`
	QoS        byte            `json:"qos"`
	Duplicate  bool            `json:"dup"`
	MessageID  uint16          `json:"packet_id"`
}

// ErrBadLine marks a line that is not a capture message.
var ErrBadLine = errors.New("bad capture line")

// Reader reads messages one line at a time; memory does not grow with the
// file.
type Reader struct {
	sc   *bufio.Scanner
	line int
}

// NewReader reads the capture in r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
	return &Reader{sc: sc}
}

// Line is the number of the line last read, for error messages.
func (r *Reader) Line() int { return r.line }

// Next returns the next message, or io.EOF after the last one. Blank lines
// are skipped. A malformed line returns an error wrapping ErrBadLine that
// names the line; the reader can go on with the next one.
func (r *Reader) Next() (Message, error) {
	for r.sc.Scan() {
		r.line++
		text := bytes.TrimSpace(r.sc.Bytes())
		if len(text) == 0 {
			continue
		}
		m, err := ParseLine(text)
		if err != nil {
			return Message{}, fmt.Errorf("line %d: %w", r.line, err)
		}
		return m, nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Message{}, fmt.Errorf("line %d: %w: longer than %d bytes", r.line+1, ErrBadLine, MaxLineBytes)
		}
		return Message{}, err
	}
	return Message{}, io.EOF
}

// ParseLine decodes one capture line.
func ParseLine(text []byte) (Message, error) {
	var l line
	if err := json.Unmarshal(text, &l); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrBadLine, err)
	}
	if l.Topic == "" {
		return Message{}, fmt.Errorf("%w: no topic", ErrBadLine)
	}
	m := Message{Topic: l.Topic, Source: l.Source, Retained: l.Retained, Broker: l.Broker, QoS: l.QoS, Duplicate: l.Duplicate, MessageID: l.MessageID}
	switch {
	case l.PayloadB64 != "":
		p, err := base64.StdEncoding.DecodeString(l.PayloadB64)
		if err != nil {
			return Message{}, fmt.Errorf("%w: payload_b64: %v", ErrBadLine, err)
		}
		m.Payload = p
	case len(l.Payload) > 0 && l.Payload[0] == '"':
		var s string
		if err := json.Unmarshal(l.Payload, &s); err != nil {
			return Message{}, fmt.Errorf("%w: payload: %v", ErrBadLine, err)
		}
		m.Payload = []byte(s)
	case len(l.Payload) > 0 && string(l.Payload) != "null":
		m.Payload = []byte(l.Payload)
	default:
		m.Payload = []byte{}
	}
	if l.ReceivedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, l.ReceivedAt)
		if err != nil {
			return Message{}, fmt.Errorf("%w: received_at %q: %v", ErrBadLine, l.ReceivedAt, err)
		}
		m.ReceivedAt = t.UTC()
	}
	return m, nil
}

// AppendLine appends m as one capture line (with its newline) to dst. The
// line is assembled by hand because encoding/json compacts a RawMessage,
// which would change an inline payload's bytes.
func AppendLine(dst []byte, m Message) []byte {
	dst = append(dst, `{"topic":`...)
	dst = appendJSONString(dst, m.Topic)
	switch {
	case isInlineJSON(m.Payload):
		dst = append(dst, `,"payload":`...)
		dst = append(dst, m.Payload...)
	case utf8.Valid(m.Payload):
		dst = append(dst, `,"payload":`...)
		dst = appendJSONString(dst, string(m.Payload))
	default:
		dst = append(dst, `,"payload_b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Payload)
		dst = append(dst, '"')
	}
	if !m.ReceivedAt.IsZero() {
		dst = append(dst, `,"received_at":"`...)
		dst = m.ReceivedAt.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	if m.Source != "" {
		dst = append(dst, `,"source":`...)
		dst = appendJSONString(dst, m.Source)
	}
	if m.Retained {
		dst = append(dst, `,"retained":true`...)
	}
	if m.Broker != "" {
		dst = append(dst, `,"broker":`...)
		dst = appendJSONString(dst, m.Broker)
	}
	if m.QoS != 0 {
		dst = fmt.Appendf(dst, `,"qos":%d`, m.QoS)
	}
	if m.Duplicate {
		dst = append(dst, `,"dup":true`...)
	}
	if m.MessageID != 0 {
		dst = fmt.Appendf(dst, `,"packet_id":%d`, m.MessageID)
	}
	return append(dst, "}\n"...)
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// isInlineJSON reports whether p can be written into the line verbatim and
// read back byte for byte: a JSON object or array on one line.
func isInlineJSON(p []byte) bool {
	if len(p) == 0 || (p[0] != '{' && p[0] != '[') || bytes.ContainsAny(p, "\r\n") {
		return false
	}
	return json.Valid(p)
}
