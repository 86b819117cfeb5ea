package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// Record is one MQTT message as the receiver got it.
type Record struct {
	// Seq is assigned by the appender: strictly increasing across the whole
	// spool and across restarts (not necessarily contiguous).
	Seq        uint64
	ReceivedAt time.Time // wall clock at receipt, stored as UTC nanoseconds
	Source     string    // the receiver's name for the MQTT source
	Broker     string    // broker URL, password masked
	Topic      string
	QoS        byte
	Retained   bool
	Duplicate  bool   // MQTT DUP flag: the broker is redelivering
	MessageID  uint16 // MQTT packet id (0 for QoS 0)
	Payload    []byte
}

// Position is the last record a consumer has durably consumed in one
// spool. Seqs are only unique within a spool (a new folder starts again at
// 1), so a Position names its spool: a consumer keeps one per Spool. The
// Position with only Spool set means "nothing of that spool consumed
// yet"; a Position without Spool is one stored before spools had
// identities (see Reader.Cursor).
type Position struct {
	Spool   Identity `json:"spool,omitzero"`
	Segment uint64   `json:"segment"` // segment id holding the record
	Seq     uint64   `json:"seq"`     // the record's Seq
}

// IsZero reports whether p is at the start of its spool: no record
// consumed.
func (p Position) IsZero() bool { return p.Segment == 0 && p.Seq == 0 }

// String is "SEGMENT:SEQ", prefixed by "SPOOL/" (the identity's first 8
// hex digits) when p names a spool.
func (p Position) String() string {
	if p.Spool.IsZero() {
		return fmt.Sprintf("%d:%d", p.Segment, p.Seq)
	}
	return fmt.Sprintf("%s/%d:%d", p.Spool.Short(), p.Segment, p.Seq)
}

// Record encoding, version 1, little endian:
//
//	0  u8   version (1)
//	1  u8   flags: bit 0 retained, bit 1 duplicate
//	2  u8   QoS
//	3  u8   reserved (0)
//	4  u16  MQTT message id
//	6  u16  len(source)
//	8  u16  len(broker)
//	10 u16  len(topic)
//	12 u32  len(payload)
//	16 u64  seq
//	24 i64  receive time, Unix nanoseconds UTC
//	32      source, broker, topic, payload bytes
//	end u32 CRC-32C (Castagnoli) of every byte before it
//
// A new field means a new version; readers refuse versions they do not
// know (the record is quarantined, and can be requeued by a newer binary).
const (
	recordVersion    = 1
	recordHeaderSize = 32
	recordCRCSize    = 4
	// recordOverhead is the encoded size of a record with empty strings and
	// payload.
	recordOverhead = recordHeaderSize + recordCRCSize

	flagRetained  = 1 << 0
	flagDuplicate = 1 << 1

	maxStringLen = 1<<16 - 1
	// maxPayloadLen bounds the u32 payload length well inside it; compared
	// as uint64 so that the constant fits a 32-bit int's platforms too.
	maxPayloadLen = 1 << 31
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readableRecordVersion is the record version this build decodes. A
// variable so that a test can play the upgrade that reads a newer one.
var readableRecordVersion byte = recordVersion

// encodedSize is the size of rec's encoding.
func encodedSize(rec *Record) int {
	return recordOverhead + len(rec.Source) + len(rec.Broker) + len(rec.Topic) + len(rec.Payload)
}

func checkEncodable(rec *Record) error {
	switch {
	case len(rec.Source) > maxStringLen:
		return fmt.Errorf("%w: source name is %d bytes, over %d", ErrInvalidRecord, len(rec.Source), maxStringLen)
	case len(rec.Broker) > maxStringLen:
		return fmt.Errorf("%w: broker is %d bytes, over %d", ErrInvalidRecord, len(rec.Broker), maxStringLen)
	case len(rec.Topic) > maxStringLen:
		return fmt.Errorf("%w: topic is %d bytes, over %d", ErrInvalidRecord, len(rec.Topic), maxStringLen)
	case uint64(len(rec.Payload)) > maxPayloadLen:
		return fmt.Errorf("%w: payload is %d bytes", ErrInvalidRecord, len(rec.Payload))
	case rec.QoS > 2:
		return fmt.Errorf("%w: QoS %d", ErrInvalidRecord, rec.QoS)
	}
	return nil
}

// appendRecord appends the encoding of rec to dst. rec must have passed
// checkEncodable.
func appendRecord(dst []byte, rec *Record) []byte {
	start := len(dst)
	var h [recordHeaderSize]byte
	h[0] = recordVersion
	if rec.Retained {
		h[1] |= flagRetained
	}
	if rec.Duplicate {
		h[1] |= flagDuplicate
	}
	h[2] = rec.QoS
	le := binary.LittleEndian
	le.PutUint16(h[4:], rec.MessageID)
	le.PutUint16(h[6:], uint16(len(rec.Source)))
	le.PutUint16(h[8:], uint16(len(rec.Broker)))
	le.PutUint16(h[10:], uint16(len(rec.Topic)))
	le.PutUint32(h[12:], uint32(len(rec.Payload)))
	le.PutUint64(h[16:], rec.Seq)
	le.PutUint64(h[24:], uint64(rec.ReceivedAt.UnixNano()))
	dst = append(dst, h[:]...)
	dst = append(dst, rec.Source...)
	dst = append(dst, rec.Broker...)
	dst = append(dst, rec.Topic...)
	dst = append(dst, rec.Payload...)
	return le.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// decodeRecord decodes one encoded record. Strings and payload are copied,
// so the result does not alias b (which may be a bbolt mmap). Any damage
// returns an error wrapping ErrCorrupt that says what is wrong.
func decodeRecord(b []byte) (Record, error) {
	if err := checkRecord(b); err != nil {
		return Record{}, err
	}
	le := binary.LittleEndian
	ls, lb, lt := int(le.Uint16(b[6:])), int(le.Uint16(b[8:])), int(le.Uint16(b[10:]))
	lp := int(le.Uint32(b[12:]))
	rec := Record{
		Seq:        le.Uint64(b[16:]),
		ReceivedAt: time.Unix(0, int64(le.Uint64(b[24:]))).UTC(),
		QoS:        b[2],
		Retained:   b[1]&flagRetained != 0,
		Duplicate:  b[1]&flagDuplicate != 0,
		MessageID:  le.Uint16(b[4:]),
	}
	p := recordHeaderSize
	rec.Source = string(b[p : p+ls])
	p += ls
	rec.Broker = string(b[p : p+lb])
	p += lb
	rec.Topic = string(b[p : p+lt])
	p += lt
	rec.Payload = append(make([]byte, 0, lp), b[p:p+lp]...)
	return rec, nil
}

// checkRecord verifies version, lengths and checksum without decoding.
func checkRecord(b []byte) error {
	if len(b) < recordOverhead {
		return fmt.Errorf("%w: record of %d bytes is shorter than the %d-byte minimum", ErrCorrupt, len(b), recordOverhead)
	}
	if b[0] != readableRecordVersion {
		return fmt.Errorf("%w: unknown record version %d (this build reads version %d; a newer meshingest may read it: `spool quarantine requeue` after the upgrade)", ErrCorrupt, b[0], readableRecordVersion)
	}
	le := binary.LittleEndian
	want := recordOverhead + int(le.Uint16(b[6:])) + int(le.Uint16(b[8:])) + int(le.Uint16(b[10:])) + int(le.Uint32(b[12:]))
	if want != len(b) {
		return fmt.Errorf("%w: record lengths add up to %d bytes, the record has %d", ErrCorrupt, want, len(b))
	}
	n := len(b) - recordCRCSize
	if got, sum := le.Uint32(b[n:]), crc32.Checksum(b[:n], castagnoli); got != sum {
		return fmt.Errorf("%w: record checksum %08x, computed %08x", ErrCorrupt, got, sum)
	}
	return nil
}

// recordSeq reads the sequence number of an encoded record that passed
// checkRecord.
func recordSeq(b []byte) uint64 { return binary.LittleEndian.Uint64(b[16:]) }

// recordTime reads the receive time of an encoded record that passed
// checkRecord, in Unix nanoseconds.
func recordTime(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b[24:])) }

// seqKey is the bbolt key of a record: its Seq, big endian, so keys sort in
// Seq order.
func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }
