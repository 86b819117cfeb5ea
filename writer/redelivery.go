package writer

import (
	"context"
	"fmt"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/redelivery"
)

// QoS 1 redeliveries: the writer remembers, per source and packet id, a
// digest of the payload it last applied (package redelivery says why),
// stored with the rows in meshingest_deliveries, one row a batch.

// deliveryOf is rec's delivery. Receiver instances read one configuration,
// so their sources have the same names, but each has its own MQTT session
// and packet ids: when the writer drains several spools (b.copies set),
// the source is qualified by the spool ("<identity>/<source>").
func (b *batch) deliveryOf(rec *Record, sp spool.Identity) (redelivery.Key, uint64, bool) {
	if rec.MessageID == 0 {
		return redelivery.Key{}, 0, false // QoS 0: never redelivered
	}
	source := rec.Source
	if b.copies != nil {
		source = b.copies.QualifiedSource(sp, source)
	}
	return redelivery.Key{Source: source, ID: rec.MessageID}, redelivery.Digest(rec.Payload), true
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
		last, known = b.s.memory.Get(key)
	}
	return known && last == digest
}

// loadDeliveries reads the stored memory, once per store and again after
// forget. Call it inside the batch's transaction.
func (s *store) loadDeliveries(ctx context.Context) error {
	if s.memory != nil {
		return nil
	}
	m := redelivery.NewMemory()
	rows, err := s.conn.QueryContext(ctx, `SELECT batch, digests FROM meshingest_deliveries ORDER BY batch`)
	if err != nil {
		return fmt.Errorf("read the QoS 1 delivery memory from meshingest_deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r redelivery.Row
		var blob []byte
		if err := rows.Scan(&r.Batch, &blob); err != nil {
			return fmt.Errorf("read the QoS 1 delivery memory from meshingest_deliveries: %w", err)
		}
		n, err := redelivery.Decode(blob, m.Put)
		if err != nil {
			return fmt.Errorf("read row %d of meshingest_deliveries: %w; delete the row (a QoS 1 redelivery of what it lists would then count again)", r.Batch, err)
		}
		r.Entries = n
		m.Loaded(r)
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
	res, err := b.s.stmt.insertDeliveries.ExecContext(b.ctx, redelivery.Encode(b.deliveries))
	if err != nil {
		return fmt.Errorf("store the batch's QoS 1 deliveries: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("store the batch's QoS 1 deliveries: %w", err)
	}
	b.deliveryRow = redelivery.Row{Batch: id, Entries: len(b.deliveries)}
	drop, upTo := b.s.memory.ToForget(len(b.deliveries))
	if drop > 0 {
		if _, err := b.s.stmt.pruneDeliveries.ExecContext(b.ctx, upTo); err != nil {
			return fmt.Errorf("delete old QoS 1 deliveries: %w", err)
		}
	}
	b.deliveryDrop = drop
	return nil
}

// commitDeliveries moves the batch's deliveries into the committed memory.
func (b *batch) commitDeliveries() {
	if len(b.deliveries) > 0 {
		b.s.memory.Commit(b.deliveries, b.deliveryDrop, b.deliveryRow)
	}
}
