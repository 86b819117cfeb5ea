package capture

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestReader_Demo_AllLines(t *testing.T) {
	r := Demo()
	var n, status, packets int
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		switch {
		case strings.HasSuffix(m.Topic, "/status"):
			status++
		case strings.HasSuffix(m.Topic, "/packets"):
			packets++
		}
		if m.ReceivedAt.IsZero() || m.Payload[0] != '{' {
			t.Fatalf("line %d: %+v", r.Line(), m)
		}
	}
	if n != 531 || status != 31 || packets != 500 {
		t.Fatalf("read %d lines (%d status, %d packets), want 531 (31, 500)", n, status, packets)
	}
}

func TestParseLine_PayloadBytesAsInTheLine(t *testing.T) {
	m, err := ParseLine([]byte(`{"topic": "meshcore/SJC/X/status", "payload": {"status": "online", "origin": "Jackrabbit🐰"}, "received_at": "2026-03-17T21:27:59.015Z", "fixture": {"a": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Payload) != `{"status": "online", "origin": "Jackrabbit🐰"}` {
		t.Fatalf("payload %q", m.Payload)
	}
	if !m.ReceivedAt.Equal(time.Date(2026, 3, 17, 21, 27, 59, 15e6, time.UTC)) {
		t.Fatalf("received_at %v", m.ReceivedAt)
	}
}

func TestAppendLine_RoundTripsEveryPayloadKind(t *testing.T) {
	at := time.Date(2026, 3, 29, 15, 30, 3, 123456789, time.UTC)
	payloads := [][]byte{
		[]byte(`{"raw": "AA", "SNR": "7.5dB"}`),
		[]byte(`[1, 2]`),
		[]byte("connected"),
		[]byte("{\n  \"pretty\": true\n}"),
		{0xff, 0x00, 0xfe},
		{},
	}
	for _, p := range payloads {
		in := Message{Topic: "meshcore/status", Payload: p, ReceivedAt: at, Source: "local", Retained: true}
		out, err := ParseLine(bytes.TrimSpace(AppendLine(nil, in)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Payload, p) || !out.ReceivedAt.Equal(at) || out.Source != "local" || !out.Retained || out.Topic != in.Topic {
			t.Fatalf("round trip of %q gave %+v", p, out)
		}
	}
}

func TestReader_Next_BadLinesNamed(t *testing.T) {
	r := NewReader(strings.NewReader("{\"topic\":\"a\",\"payload\":{}}\n\nnot json\n{\"payload\":{}}\n"))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	_, err := r.Next()
	if !errors.Is(err, ErrBadLine) || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err = %v", err)
	}
	if _, err = r.Next(); !errors.Is(err, ErrBadLine) || !strings.Contains(err.Error(), "no topic") {
		t.Fatalf("err = %v", err)
	}
	if _, err = r.Next(); err != io.EOF {
		t.Fatalf("err = %v, want EOF", err)
	}
}
