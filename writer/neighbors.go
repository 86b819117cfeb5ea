package writer

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Neighbor reports (`…/neighbors`: agessaman's observer firmware, PC) say
// which region scopes an observer's zero-hop neighbours answered.
// CoreScope a06ac8a has no table for them (docs/reference/mqtt-formats.md
// §4a), so the writer keeps each report verbatim in
// meshingest_neighbor_reports (observer id, receive time, payload), for a
// later version that targets a schema with a place for scopes to replay.
// A report is observer metadata: it creates no observer row and moves no
// last_seen. A retained copy replayed at a subscribe is the same report
// and is not stored again (retained.go).

// applyNeighbors stores one report.
func (in *ingester) applyNeighbors(b *batch, p *prepared) error {
	digest := payloadDigest(p.rec.Payload)
	if p.rec.Retained {
		var one int
		err := b.s.conn.QueryRowContext(b.ctx, `SELECT 1 FROM meshingest_neighbor_reports WHERE observer_id = ? AND digest = ?`,
			p.observer, digest).Scan(&one)
		if err == nil {
			return in.drop(b, DropRetainedReplay, p, nil)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("look up a retained neighbor report: %w", err)
		}
	}
	if _, err := b.s.conn.ExecContext(b.ctx, `INSERT INTO meshingest_neighbor_reports (observer_id, received_at, digest, payload)
		VALUES (?, ?, ?, ?)`, p.observer, p.t.Format(time.RFC3339Nano), digest, p.rec.Payload); err != nil {
		return fmt.Errorf("store a neighbor report of %q: %w", p.observer, err)
	}
	b.counts.neighborReports++
	return nil
}
