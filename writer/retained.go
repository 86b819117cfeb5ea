package writer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc64"
	"time"

	"github.com/meshingest/meshingest/decoder"
)

// A retained message is delivered again at every subscribe: one
// publication and three receiver restarts are four records, and the
// replays say nothing about whether the observer is alive now (the broker
// keeps a retained message until it is replaced, months if need be). Under
// MQTT 3.1.1 only the replay carries the retain flag: a live delivery to an
// existing subscription has it cleared, so the first delivery the writer
// applied may have been either.
//
// The rule: a Retained record changes nothing (retained_replay) when
//
//  1. it repeats the last Retained record applied from its source on its
//     topic (same payload digest, meshingest_retained), whatever became of
//     the rows since: this covers an observation retention has deleted, and
//     companion messages, whose content hash includes the receive time; or
//  2. what it would store is stored already: the observation (same
//     transmission content hash, observer and path) for a reception, the
//     report (same observer and payload) for neighbors.
//
// Otherwise it counts normally: a message retained before the receiver
// first subscribed is news. A retained status is not a replay of anything:
// it only ever updates the observer's metadata (applyStatus).

// retainedKey is a retained message's slot at its broker: source and topic.
type retainedKey struct{ source, topic string }

var payloadTable = crc64.MakeTable(crc64.ECMA)

func payloadDigest(b []byte) int64 { return int64(crc64.Checksum(b, payloadTable)) }

// retainedKinds are the topic kinds whose retained replays the writer
// recognises.
func retainedKind(k decoder.TopicKind) bool {
	switch k {
	case decoder.KindPacket, decoder.KindClientPacket, decoder.KindRawPacket, decoder.KindBinaryPacket,
		decoder.KindNeighbors, decoder.KindChannelMessage, decoder.KindDirectMessage:
		return true
	}
	return false
}

// retainedReplay applies rule 1 to a Retained record and notes its digest
// for the next replay, in the batch.
func (b *batch) retainedReplay(rec *Record) (bool, error) {
	if err := b.s.loadRetained(b.ctx); err != nil {
		return false, err
	}
	key, digest := retainedKey{rec.Source, rec.Topic}, payloadDigest(rec.Payload)
	last, ok := b.retained[key]
	if !ok {
		last, ok = b.s.retained[key]
	}
	b.retained[key] = digest
	return ok && last == digest, nil
}

// loadRetained reads meshingest_retained once per store (and again after
// forget): one row per source and topic that ever carried a retained
// message, a few per observer.
func (s *store) loadRetained(ctx context.Context) error {
	if s.retained != nil {
		return nil
	}
	m := map[retainedKey]int64{}
	rows, err := s.conn.QueryContext(ctx, `SELECT source, topic, digest FROM meshingest_retained`)
	if err != nil {
		return fmt.Errorf("read meshingest_retained: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k retainedKey
		var d int64
		if err := rows.Scan(&k.source, &k.topic, &d); err != nil {
			return fmt.Errorf("read meshingest_retained: %w", err)
		}
		m[k] = d
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read meshingest_retained: %w", err)
	}
	s.retained = m
	return nil
}

// saveRetained writes the digests the batch noted, in its transaction.
func (b *batch) saveRetained() error {
	for k, d := range b.retained {
		if _, err := b.s.conn.ExecContext(b.ctx, `INSERT INTO meshingest_retained (source, topic, digest) VALUES (?, ?, ?)
			ON CONFLICT(source, topic) DO UPDATE SET digest = excluded.digest`, k.source, k.topic, d); err != nil {
			return fmt.Errorf("store the retained message digests: %w", err)
		}
	}
	return nil
}

// observationStored applies rule 2 to a reception: whether the
// observation of transmission txID by observer over path is stored (or
// queued in this batch).
func (b *batch) observationStored(txID int64, observer, path string) (bool, error) {
	rowid, ok, err := b.observer(observer, sql.NullString{}, sql.NullString{}, time.Time{}, false)
	if err != nil || !ok {
		return false, err
	}
	for i := range b.pendingObs {
		o := &b.pendingObs[i]
		if o.TransmissionID == txID && o.ObserverIdx.Valid && o.ObserverIdx.Int64 == rowid && o.PathJSON == path {
			return true, nil
		}
	}
	var one int
	err = b.s.conn.QueryRowContext(b.ctx, `SELECT 1 FROM observations
		WHERE transmission_id = ? AND observer_idx = ? AND COALESCE(path_json, '') = ?`, txID, rowid, path).Scan(&one)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return false, fmt.Errorf("look up a retained observation: %w", err)
}
