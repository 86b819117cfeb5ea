// Package retention is CoreScope's retention pass, a task the writer runs
// between ingest batches (writer.Task).
package retention

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/schema"
)

// Tx is the part of the writer's open transaction (writer.Tx) a step uses.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Pass is CoreScope's retention pass (mqtt-formats.md §8): nodes not
// heard for nodeDays move to inactive_nodes, observers not heard for
// observerDays are marked inactive and their metrics deleted, old metrics,
// drops, neighbor edges and (with packetDays) packets are deleted, and an
// incremental vacuum gives the freed pages back. It runs as a Task: each
// step touches at most retentionChunk rows in its own short transaction,
// between ingest batches, so the write lock is never held for long.
//
// Its clock is the writer's: the receive time of the newest committed
// record, not the wall clock. After the writer was stopped for a week, a
// wall-clock pass at start would move every node to inactive_nodes before
// the week of spooled adverts that keep them alive is written.
type Pass struct {
	nodeDays, observerDays, metricsDays, packetDays, edgeDays, clientRxDays int
	vacuumPages                                                             int
	onPacketsDeleted                                                        func()

	phase int // index into phases of the pass in progress
}

// retentionChunk bounds the rows one step deletes or moves.
const retentionChunk = 500

// New is the pass cfg's retention.* asks for; onPacketsDeleted is called
// after a step deleted transmissions (the writer forgets its cache of
// them).
func New(cfg *shared.Config, onPacketsDeleted func()) *Pass {
	r := &Pass{
		nodeDays:         cfg.NodeDays(),
		observerDays:     cfg.ObserverDays(),
		metricsDays:      cfg.MetricsDays(),
		packetDays:       cfg.PacketDays(),
		edgeDays:         cfg.NeighborEdgesDays(),
		clientRxDays:     cfg.ClientRxDays(),
		vacuumPages:      cfg.VacuumPages(),
		onPacketsDeleted: onPacketsDeleted,
	}
	return r
}

// Name is the task's name in logs and writer_perf.
func (r *Pass) Name() string { return "retention" }

// Interval is the time between two passes.
func (r *Pass) Interval() time.Duration { return time.Hour }

type retentionPhase struct {
	name string
	// run does one chunk; done is true when the phase has nothing left.
	run func(ctx context.Context, tx Tx, now time.Time) (done bool, err error)
}

func (r *Pass) phases() []retentionPhase {
	return []retentionPhase{
		{"nodes", r.moveStaleNodes},
		{"observers", r.markStaleObservers},
		{"inactive observer metrics", r.deleteInactiveObserverMetrics},
		{"metrics", r.chunked(`DELETE FROM observer_metrics WHERE rowid IN
			(SELECT rowid FROM observer_metrics WHERE timestamp < ? LIMIT ?)`, func(now time.Time) any {
			return now.AddDate(0, 0, -r.metricsDays).UTC().Format(schema.SecondsLayout)
		})},
		{"dropped packets", r.chunked(`DELETE FROM dropped_packets WHERE id IN
			(SELECT id FROM dropped_packets WHERE dropped_at < ? LIMIT ?)`, func(now time.Time) any {
			return now.AddDate(0, 0, -r.metricsDays).UTC().Format(schema.DateTimeLayout)
		})},
		{"packets", r.deleteOldPackets},
		{"neighbor edges", r.chunked(`DELETE FROM neighbor_edges WHERE rowid IN
			(SELECT rowid FROM neighbor_edges WHERE last_seen < ? LIMIT ?)`, func(now time.Time) any {
			return now.AddDate(0, 0, -r.edgeDays).UTC().Format(schema.SecondsLayout)
		})},
		{"client receptions", func(ctx context.Context, tx Tx, now time.Time) (bool, error) {
			if r.clientRxDays <= 0 {
				return true, nil
			}
			return r.chunked(`DELETE FROM client_receptions WHERE id IN
				(SELECT id FROM client_receptions WHERE rx_at < ? LIMIT ?)`, func(now time.Time) any {
				return now.AddDate(0, 0, -r.clientRxDays).UTC().Format(schema.SecondsLayout)
			})(ctx, tx, now)
		}},
		{"incremental vacuum", func(ctx context.Context, tx Tx, now time.Time) (bool, error) {
			_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", r.vacuumPages))
			return true, err
		}},
	}
}

// Step runs one chunk of the current phase.
func (r *Pass) Step(ctx context.Context, tx Tx, now time.Time) (more bool, err error) {
	ph := r.phases()
	if r.phase >= len(ph) {
		r.phase = 0
	}
	done, err := ph[r.phase].run(ctx, tx, now)
	if err != nil {
		return false, fmt.Errorf("retention %s: %w", ph[r.phase].name, err)
	}
	if done {
		r.phase++
	}
	if r.phase >= len(ph) {
		r.phase = 0
		return false, nil
	}
	return true, nil
}

func (r *Pass) chunked(query string, cutoff func(time.Time) any) func(context.Context, Tx, time.Time) (bool, error) {
	return func(ctx context.Context, tx Tx, now time.Time) (bool, error) {
		res, err := tx.ExecContext(ctx, query, cutoff(now), retentionChunk)
		if err != nil {
			return false, err
		}
		n, _ := res.RowsAffected()
		return n < retentionChunk, nil
	}
}

// moveStaleNodes moves a chunk of nodes not heard since the cutoff to
// inactive_nodes (replacing an older copy there), naming the columns so
// the two tables need not have them in the same order.
func (r *Pass) moveStaleNodes(ctx context.Context, tx Tx, now time.Time) (bool, error) {
	const cols = `public_key, name, role, lat, lon, last_seen, first_seen, advert_count, battery_mv,
		temperature_c, foreign_advert, default_scope, multibyte_sup, multibyte_evidence`
	cutoff := now.AddDate(0, 0, -r.nodeDays).UTC().Format(schema.SecondsLayout)
	const pick = `SELECT rowid FROM nodes WHERE last_seen < ?1 ORDER BY rowid LIMIT ?2`
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO inactive_nodes (`+cols+`)
		SELECT `+cols+` FROM nodes WHERE rowid IN (`+pick+`)`, cutoff, retentionChunk); err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE rowid IN (`+pick+`)`, cutoff, retentionChunk)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n < retentionChunk, nil
}

func (r *Pass) markStaleObservers(ctx context.Context, tx Tx, now time.Time) (bool, error) {
	if r.observerDays < 0 {
		return true, nil
	}
	cutoff := now.AddDate(0, 0, -r.observerDays).UTC().Format(schema.SecondsLayout)
	_, err := tx.ExecContext(ctx, `UPDATE observers SET inactive = 1
		WHERE last_seen < ? AND (inactive IS NULL OR inactive = 0)`, cutoff)
	return true, err
}

func (r *Pass) deleteInactiveObserverMetrics(ctx context.Context, tx Tx, now time.Time) (bool, error) {
	if r.observerDays < 0 {
		return true, nil
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM observer_metrics WHERE rowid IN
		(SELECT m.rowid FROM observer_metrics m JOIN observers o ON o.id = m.observer_id
		 WHERE o.inactive = 1 LIMIT ?)`, retentionChunk)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n < retentionChunk, nil
}

// deleteOldPackets deletes a chunk of transmissions first seen before
// packetDays, their observations first.
func (r *Pass) deleteOldPackets(ctx context.Context, tx Tx, now time.Time) (bool, error) {
	if r.packetDays <= 0 {
		return true, nil
	}
	cutoff := now.AddDate(0, 0, -r.packetDays).UTC().Format(schema.SecondsLayout)
	// Fewer transmissions per step: each has tens of observations.
	const txChunk = retentionChunk / 10
	const pick = `SELECT id FROM transmissions WHERE first_seen < ?1 ORDER BY id LIMIT ?2`
	if _, err := tx.ExecContext(ctx, `DELETE FROM observations WHERE transmission_id IN (`+pick+`)`, cutoff, txChunk); err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM transmissions WHERE id IN (`+pick+`)`, cutoff, txChunk)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	if n > 0 && r.onPacketsDeleted != nil {
		r.onPacketsDeleted()
	}
	return n < txChunk, nil
}
