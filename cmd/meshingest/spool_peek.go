package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/spool"
)

func spoolPeek(args []string, stdout, stderr io.Writer) int {
	return spoolRecords("peek", args, stdout, stderr)
}

func spoolDump(args []string, stdout, stderr io.Writer) int {
	return spoolRecords("dump", args, stdout, stderr)
}

// spoolRecords prints records: peek the next -n the writer will read (after
// its position), dump every sealed record (or those after --after).
func spoolRecords(name string, args []string, stdout, stderr io.Writer) int {
	f := newSpoolFlags(name, name+" [--dir DIR | --config FILE] [--json] [--decode] [-n N] [--after SEGMENT:SEQ]", stdout, stderr, jsonLines)
	n := f.fs.Int("n", 10, "records to print (0: all)")
	if name == "dump" {
		f.fs.Lookup("n").DefValue = "0"
		*n = 0
	}
	after := f.fs.String("after", "", "start after this position, `SEGMENT:SEQ` (peek: default the writer's position)")
	decode := f.fs.Bool("decode", false, "add a one-line decode of each MeshCore packet")
	if code := f.parse(args); code >= 0 {
		return code
	}
	var pos spool.Position
	switch {
	case *after != "":
		seg, seq, ok := strings.Cut(*after, ":")
		a, err1 := strconv.ParseUint(seg, 10, 64)
		b, err2 := strconv.ParseUint(seq, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			fmt.Fprintf(stderr, "meshingest spool %s: --after %q: want SEGMENT:SEQ, e.g. 42:57\n", name, *after)
			return 2
		}
		pos = spool.Position{Segment: a, Seq: b}
	case name == "peek":
		pos, _ = spool.ReadWriterPosition(f.dir)
	}
	var opts decoder.Options
	if *decode {
		var err error
		if opts, err = decodeOptions(f.config); err != nil {
			return f.fail(err)
		}
	}
	damaged := 0
	r, err := openInspectReader(f, func(e spool.QuarantineEvent) {
		damaged++
		fmt.Fprintf(stderr, "meshingest spool %s: damaged %s\n", name, e)
	})
	if err != nil {
		return f.fail(err)
	}
	c, err := r.Cursor(pos)
	if err != nil {
		return f.fail(err)
	}
	defer c.Close()
	for i := 0; *n == 0 || i < *n; i++ {
		rec, p, err := c.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return f.fail(err)
		}
		summary := ""
		if *decode {
			summary = decodeSummary(rec, opts)
		}
		if f.json {
			writeJSON(stdout, recordJSON(rec, p, summary))
			continue
		}
		fmt.Fprintf(stdout, "%d:%d %s %s %s qos=%d%s %s\n", p.Segment, rec.Seq, rec.ReceivedAt.Format(time.RFC3339Nano),
			rec.Source, rec.Topic, rec.QoS, flags(rec), printable(rec.Payload, 200))
		if summary != "" {
			fmt.Fprintf(stdout, "    %s\n", summary)
		}
	}
	if damaged > 0 {
		return 1
	}
	return 0
}

type recordOut struct {
	Segment    uint64    `json:"segment"`
	Seq        uint64    `json:"seq"`
	ReceivedAt time.Time `json:"received_at"`
	Source     string    `json:"source"`
	Broker     string    `json:"broker"`
	Topic      string    `json:"topic"`
	QoS        byte      `json:"qos"`
	Retained   bool      `json:"retained"`
	Duplicate  bool      `json:"duplicate"`
	MessageID  uint16    `json:"message_id"`
	Payload    string    `json:"payload"`
	PayloadB64 []byte    `json:"payload_b64,omitempty"`
	Decoded    string    `json:"decoded,omitempty"`
}

func recordJSON(rec spool.Record, p spool.Position, summary string) recordOut {
	o := recordOut{Segment: p.Segment, Seq: rec.Seq, ReceivedAt: rec.ReceivedAt, Source: rec.Source, Broker: rec.Broker,
		Topic: rec.Topic, QoS: rec.QoS, Retained: rec.Retained, Duplicate: rec.Duplicate, MessageID: rec.MessageID, Decoded: summary}
	if utf8.Valid(rec.Payload) {
		o.Payload = string(rec.Payload)
	} else {
		o.PayloadB64 = rec.Payload
	}
	return o
}

func flags(rec spool.Record) string {
	s := ""
	if rec.Retained {
		s += " retained"
	}
	if rec.Duplicate {
		s += " dup"
	}
	return s
}

// printable shows a payload on one line, cut at max bytes.
func printable(p []byte, max int) string {
	cut := ""
	if len(p) > max {
		p, cut = p[:max], "…"
	}
	if !utf8.Valid(p) {
		return fmt.Sprintf("(%d bytes, not UTF-8) %x%s", len(p), p, cut)
	}
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(string(p)) + cut
}

// decodeSummary is the one-line decode of a record: what the writer would
// make of it.
func decodeSummary(rec spool.Record, opts decoder.Options) string {
	t := decoder.ParseTopic(rec.Topic)
	switch t.Kind {
	case decoder.KindPacket, decoder.KindClientPacket:
		m, err := decoder.ParsePacketMessage(rec.Payload)
		if err != nil {
			return fmt.Sprintf("%s: %v", t.Kind, err)
		}
		fr, err := decoder.DecodeFrame(m.Raw)
		if err != nil {
			return fmt.Sprintf("%s region=%s observer=%s: frame refused: %v", t.Kind, t.Region, t.ObserverID, err)
		}
		p := decoder.DecodePacket(fr, opts)
		s := fmt.Sprintf("%s region=%s observer=%s %s %s hash=%s hops=%d", t.Kind, t.Region, t.ObserverID, fr.Type, fr.Route, fr.Hash, fr.PathHops)
		if ch := p.ChannelHash(); ch.Valid {
			s += " channel=" + ch.String
		}
		if n, ok := p.Node(); ok && n.Name != "" {
			s += " node=" + strconv.Quote(n.Name)
		}
		return s
	case decoder.KindStatus:
		st, err := decoder.ParseStatusMessage(rec.Payload)
		if err != nil {
			return fmt.Sprintf("status: %v", err)
		}
		return fmt.Sprintf("status region=%s observer=%s %s", t.Region, t.ObserverID, st.Status.String)
	}
	return t.Kind.String()
}
