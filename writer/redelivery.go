package writer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"

	"github.com/meshingest/meshingest/spool"
)

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
// deleted once newer ones hold deliveryWindow deliveries: a redelivery
// follows its first delivery by the receiver's in-flight window and a
// restart, never by tens of thousands of messages (and a packet id is
// reused within 65,535 messages of a source anyway).

// deliveryWindow is how many of the latest QoS 1 deliveries the stored
// memory keeps at least.
const deliveryWindow = 1 << 16

// deliveryKey names an MQTT delivery: the receiver's source and the
// packet id.
type deliveryKey struct {
	source string
	id     uint16
}

// deliveries maps a delivery to the digest of the payload last applied
// under it: a batch's, and the form they are stored in.
type deliveries map[deliveryKey]uint64

// sourceDigests holds, per packet id, the digest last applied under it
// by one source, 0 for none: 512 KiB a QoS 1 source, without the
// per-entry cost of a map (about 50 bytes) nor pointers for the GC to
// scan.
type sourceDigests [1 << 16]uint64

// deliveryRow is one stored row of meshingest_deliveries and how many
// deliveries its list holds.
type deliveryRow struct {
	batch   int64
	entries int
}

// deliveryMemory is the committed memory: what committed batches applied,
// and the stored rows that hold it.
type deliveryMemory struct {
	last map[string]*sourceDigests
	rows []deliveryRow // oldest first
	kept int           // deliveries in rows
}

func (m *deliveryMemory) put(key deliveryKey, digest uint64) {
	d := m.last[key.source]
	if d == nil {
		d = new(sourceDigests)
		m.last[key.source] = d
	}
	d[key.id] = digest
}

func (m *deliveryMemory) get(key deliveryKey) (uint64, bool) {
	if d := m.last[key.source]; d != nil && d[key.id] != 0 {
		return d[key.id], true
	}
	return 0, false
}

// A digest must be the same in every process: it is stored.
var deliveryTable = crc64.MakeTable(crc64.ECMA)

// deliveryOf is rec's delivery. Receiver instances read one configuration,
// so their sources have the same names, but each has its own MQTT session
// and packet ids: when the writer drains several spools (b.copies set),
// the source is qualified by the spool ("<identity>/<source>").
func (b *batch) deliveryOf(rec *Record, sp spool.Identity) (deliveryKey, uint64, bool) {
	if rec.MessageID == 0 {
		return deliveryKey{}, 0, false // QoS 0: never redelivered
	}
	source := rec.Source
	if b.copies != nil {
		source = b.copies.m.qualifiedSource(sp, source)
	}
	// 0 marks "none" in sourceDigests: a payload whose digest is 0 is
	// remembered as 1 (a 2^-64 chance of taking another payload with
	// digest 1 for it).
	return deliveryKey{source, rec.MessageID}, max(crc64.Checksum(rec.Payload, deliveryTable), 1), true
}

// delivered notes that the batch applied rec, from spool sp (stored its
// rows or counted its drop); the store learns it when the batch commits.
func (b *batch) delivered(rec *Record, sp spool.Identity) {
	if key, digest, ok := b.deliveryOf(rec, sp); ok {
		b.deliveries[key] = digest
	}
}

// isRedelivery says whether rec, a message with the DUP flag, repeats one
// already applied. A DUP record without a packet id (no receiver spools
// one) is never a redelivery.
func (b *batch) isRedelivery(rec *Record, sp spool.Identity) bool {
	key, digest, ok := b.deliveryOf(rec, sp)
	if !ok {
		return false
	}
	last, known := b.deliveries[key]
	if !known {
		last, known = b.s.memory.get(key)
	}
	return known && last == digest
}

// loadDeliveries reads the stored memory, once per store and again after
// forget. Call it inside the batch's transaction.
func (s *store) loadDeliveries(ctx context.Context) error {
	if s.memory != nil {
		return nil
	}
	m := &deliveryMemory{last: map[string]*sourceDigests{}}
	rows, err := s.conn.QueryContext(ctx, `SELECT batch, digests FROM meshingest_deliveries ORDER BY batch`)
	if err != nil {
		return fmt.Errorf("read the QoS 1 delivery memory from meshingest_deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r deliveryRow
		var blob []byte
		if err := rows.Scan(&r.batch, &blob); err != nil {
			return fmt.Errorf("read the QoS 1 delivery memory from meshingest_deliveries: %w", err)
		}
		n, err := decodeDeliveries(blob, m.put)
		if err != nil {
			return fmt.Errorf("read row %d of meshingest_deliveries: %w; delete the row (a QoS 1 redelivery of what it lists would then count again)", r.batch, err)
		}
		r.entries = n
		m.rows = append(m.rows, r)
		m.kept += n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the QoS 1 delivery memory from meshingest_deliveries: %w", err)
	}
	s.memory = m
	return nil
}

// saveDeliveries stores what the batch applied as one row and deletes the
// rows no longer needed, in the batch's transaction.
func (b *batch) saveDeliveries() error {
	if len(b.deliveries) == 0 {
		return nil
	}
	res, err := b.s.stmt.insertDeliveries.ExecContext(b.ctx, encodeDeliveries(b.deliveries))
	if err != nil {
		return fmt.Errorf("store the batch's QoS 1 deliveries: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("store the batch's QoS 1 deliveries: %w", err)
	}
	b.deliveryRow = deliveryRow{batch: id, entries: len(b.deliveries)}
	m := b.s.memory
	drop := rowsToForget(m.rows, m.kept+len(b.deliveries), deliveryWindow)
	if drop > 0 {
		if _, err := b.s.stmt.pruneDeliveries.ExecContext(b.ctx, m.rows[drop-1].batch); err != nil {
			return fmt.Errorf("delete old QoS 1 deliveries: %w", err)
		}
	}
	b.deliveryDrop = drop
	return nil
}

// rowsToForget returns how many of the oldest rows can go while the rest
// still hold at least window deliveries; kept counts every delivery stored,
// the batch's own row included.
func rowsToForget(rows []deliveryRow, kept, window int) int {
	drop := 0
	for drop < len(rows) && kept-rows[drop].entries >= window {
		kept -= rows[drop].entries
		drop++
	}
	return drop
}

// commitDeliveries moves the batch's deliveries into the committed memory.
func (b *batch) commitDeliveries() {
	if len(b.deliveries) == 0 {
		return
	}
	m := b.s.memory
	for key, digest := range b.deliveries {
		m.put(key, digest)
	}
	for _, r := range m.rows[:b.deliveryDrop] {
		m.kept -= r.entries
	}
	m.rows = append(m.rows[b.deliveryDrop:], b.deliveryRow)
	m.kept += b.deliveryRow.entries
}

// The stored form of a batch's deliveries: for each source, its name
// (uvarint length and bytes), the uvarint number of its deliveries, then
// per delivery the packet id (2 bytes) and the digest (8 bytes), little
// endian.
func encodeDeliveries(d deliveries) []byte {
	bySource := map[string][]deliveryKey{}
	for k := range d {
		bySource[k.source] = append(bySource[k.source], k)
	}
	out := make([]byte, 0, len(d)*10+len(bySource)*16)
	for source, keys := range bySource {
		out = binary.AppendUvarint(out, uint64(len(source)))
		out = append(out, source...)
		out = binary.AppendUvarint(out, uint64(len(keys)))
		for _, k := range keys {
			out = binary.LittleEndian.AppendUint16(out, k.id)
			out = binary.LittleEndian.AppendUint64(out, d[k])
		}
	}
	return out
}

var errDeliveriesDamaged = errors.New("damaged delivery list")

// decodeDeliveries passes the deliveries of one stored row to put and
// returns how many it held.
func decodeDeliveries(b []byte, put func(deliveryKey, uint64)) (int, error) {
	n := 0
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return n, errDeliveriesDamaged
		}
		source := string(b[k : k+int(l)])
		b = b[k+int(l):]
		count, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k)/10 < count {
			return n, errDeliveriesDamaged
		}
		b = b[k:]
		for range count {
			put(deliveryKey{source, binary.LittleEndian.Uint16(b)}, binary.LittleEndian.Uint64(b[2:]))
			b = b[10:]
		}
		n += int(count)
	}
	return n, nil
}
