// Package redelivery is the writer's memory of the QoS 1 deliveries it
// applied, so that a broker's redelivery of one changes nothing.
//
// A QoS 1 message the broker delivers again (the receiver died before its
// PUBACK) carries the DUP flag and, by MQTT's rule, the packet id of the
// first delivery. The first delivery may or may not have reached the
// spool: a redelivery whose first delivery was applied must change
// nothing, one whose first delivery was lost must count once.
//
// The database's rows alone cannot tell: an observer that publishes the
// same observation twice (real observers do; the second copy differs in
// its SNR, RSSI or timestamp) leaves one observation row, so "the row
// exists" also holds when the first copy was stored and the redelivered
// second one was not (docs/harness-findings.md, finding 5). The writer
// therefore remembers, per source and packet id, a digest of the payload
// of the last record it applied: a DUP record repeats a message already
// applied exactly when that digest equals its own.
//
// The memory is stored with the rows: each batch adds one row to
// meshingest_deliveries, in its own transaction, holding what it applied,
// so a writer restarted between the two deliveries still knows. Rows are
// deleted once newer ones hold Window deliveries: a redelivery
// follows its first delivery by the receiver's in-flight window and a
// restart, never by tens of thousands of messages (and a packet id is
// reused within 65,535 messages of a source anyway).
package redelivery

import (
	"encoding/binary"
	"errors"
	"hash/crc64"
)

// Window is how many of the latest QoS 1 deliveries the stored memory
// keeps at least.
const Window = 1 << 16

// Key names an MQTT delivery: the receiver's source and the packet id.
type Key struct {
	Source string
	ID     uint16
}

// Deliveries maps a delivery to the digest of the payload last applied
// under it: a batch's, and the form they are stored in.
type Deliveries map[Key]uint64

// sourceDigests holds, per packet id, the digest last applied under it
// by one source, 0 for none: 512 KiB a QoS 1 source, without the
// per-entry cost of a map (about 50 bytes) nor pointers for the GC to
// scan.
type sourceDigests [1 << 16]uint64

// Row is one stored row of meshingest_deliveries and how many deliveries
// its list holds.
type Row struct {
	Batch   int64
	Entries int
}

// Memory is the committed memory: what committed batches applied, and the
// stored rows that hold it.
type Memory struct {
	last map[string]*sourceDigests
	rows []Row // oldest first
	kept int   // deliveries in rows
}

// NewMemory is an empty memory.
func NewMemory() *Memory { return &Memory{last: map[string]*sourceDigests{}} }

// Put remembers digest as the payload last applied under key.
func (m *Memory) Put(key Key, digest uint64) {
	d := m.last[key.Source]
	if d == nil {
		d = new(sourceDigests)
		m.last[key.Source] = d
	}
	d[key.ID] = digest
}

// Get is the digest last applied under key.
func (m *Memory) Get(key Key) (uint64, bool) {
	if d := m.last[key.Source]; d != nil && d[key.ID] != 0 {
		return d[key.ID], true
	}
	return 0, false
}

// Loaded notes a stored row read back (its deliveries are Put already).
func (m *Memory) Loaded(r Row) {
	m.rows = append(m.rows, r)
	m.kept += r.Entries
}

// ToForget is how many of the oldest rows can go once a row of n more
// deliveries is stored, and the newest batch among them (delete the rows
// at or before it).
func (m *Memory) ToForget(n int) (drop int, upTo int64) {
	drop = rowsToForget(m.rows, m.kept+n, Window)
	if drop > 0 {
		upTo = m.rows[drop-1].Batch
	}
	return drop, upTo
}

// rowsToForget returns how many of the oldest rows can go while the rest
// still hold at least window deliveries; kept counts every delivery stored,
// the batch's own row included.
func rowsToForget(rows []Row, kept, window int) int {
	drop := 0
	for drop < len(rows) && kept-rows[drop].Entries >= window {
		kept -= rows[drop].Entries
		drop++
	}
	return drop
}

// Commit moves a committed batch's deliveries, stored as row, into the
// memory, and forgets the drop oldest rows it deleted (ToForget).
func (m *Memory) Commit(d Deliveries, drop int, row Row) {
	for key, digest := range d {
		m.Put(key, digest)
	}
	for _, r := range m.rows[:drop] {
		m.kept -= r.Entries
	}
	m.rows = append(m.rows[drop:], row)
	m.kept += row.Entries
}

// A digest must be the same in every process: it is stored.
var table = crc64.MakeTable(crc64.ECMA)

// Digest is a payload's digest. 0 marks "none" in the memory: a payload
// whose digest is 0 is remembered as 1 (a 2^-64 chance of taking another
// payload with digest 1 for it).
func Digest(payload []byte) uint64 { return max(crc64.Checksum(payload, table), 1) }

// Encode is the stored form of a batch's deliveries: for each source, its name
// (uvarint length and bytes), the uvarint number of its deliveries, then
// per delivery the packet id (2 bytes) and the digest (8 bytes), little
// endian.
func Encode(d Deliveries) []byte {
	bySource := map[string][]Key{}
	for k := range d {
		bySource[k.Source] = append(bySource[k.Source], k)
	}
	out := make([]byte, 0, len(d)*10+len(bySource)*16)
	for source, keys := range bySource {
		out = binary.AppendUvarint(out, uint64(len(source)))
		out = append(out, source...)
		out = binary.AppendUvarint(out, uint64(len(keys)))
		for _, k := range keys {
			out = binary.LittleEndian.AppendUint16(out, k.ID)
			out = binary.LittleEndian.AppendUint64(out, d[k])
		}
	}
	return out
}

// ErrDamaged is a stored list Decode cannot read.
var ErrDamaged = errors.New("damaged delivery list")

// Decode passes the deliveries of one stored row to put and returns how
// many it held.
func Decode(b []byte, put func(Key, uint64)) (int, error) {
	n := 0
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return n, ErrDamaged
		}
		source := string(b[k : k+int(l)])
		b = b[k+int(l):]
		count, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k)/10 < count {
			return n, ErrDamaged
		}
		b = b[k:]
		for range count {
			put(Key{source, binary.LittleEndian.Uint16(b)}, binary.LittleEndian.Uint64(b[2:]))
			b = b[10:]
		}
		n += int(count)
	}
	return n, nil
}
