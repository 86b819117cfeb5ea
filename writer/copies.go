package writer

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/copies"
)

// Receivers' copies of one publication: two receiver instances each spool
// every publication, and the writer applies each once, yet counts twice
// what an observer published twice (package copies says how). The memory
// it needs is stored with the rows, one row of meshingest_copies a batch
// and the spools' ordinals in meshingest_state, in the batch's
// transaction, so a writer that crashed between two copies of a
// publication does not apply the second.

// Defaults of writer.dedupWindowMs and writer.dedupMemoryMinutes
// (package copies says why).
const (
	DefaultDedupWindow = copies.DefaultWindow
	DefaultDedupMemory = copies.DefaultMemory
)

// DropOtherReceiver is a copy of a publication that another receiver's
// spool supplied already.
const DropOtherReceiver = "other_receiver_copy"

// stateCopySpools lists the spools (identities, in ordinal order) whose
// copies the rounds count: a round's counts are indexed by ordinal.
const stateCopySpools = "copies_spools"

// loadCopies reads the stored rounds once per store (and again after
// forget), inside the batch's transaction.
func (s *store) loadCopies(ctx context.Context) error {
	if s.copies != nil {
		return nil
	}
	var spools []spool.Identity
	raw, ok, err := stateValue(ctx, s.conn, stateCopySpools)
	if err != nil {
		return err
	}
	if ok {
		if err := json.Unmarshal([]byte(raw), &spools); err != nil {
			return fmt.Errorf("read %s from meshingest_state: %q: %w; delete the row and meshingest_copies (copies then within the memory may be applied twice)", stateCopySpools, raw, err)
		}
	}
	m := copies.NewMemory(spools)
	rows, err := s.conn.QueryContext(ctx, `SELECT batch, t_max, rounds FROM meshingest_copies ORDER BY batch`)
	if err != nil {
		return fmt.Errorf("read the receivers' copies from meshingest_copies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r copies.Row
		var blob []byte
		if err := rows.Scan(&r.Batch, &r.TMax, &blob); err != nil {
			return fmt.Errorf("read the receivers' copies from meshingest_copies: %w", err)
		}
		if err := m.Load(r, blob); err != nil {
			return fmt.Errorf("read row %d of meshingest_copies: %w; delete the row (copies it lists may then be applied twice)", r.Batch, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the receivers' copies from meshingest_copies: %w", err)
	}
	s.copies = m
	return nil
}

// saveCopies stores the rounds the batch changed as one row, and deletes
// the rows past the memory, in the batch's transaction. horizon is the
// oldest receive time still remembered, Unix ms. It returns the row and
// how many were deleted, for copies.View.Commit.
func (s *store) saveCopies(ctx context.Context, c *copies.View, horizon int64) (copies.Row, int, error) {
	if spools, changed := c.Spools(); changed {
		raw, _ := json.Marshal(spools)
		if _, err := s.stmt.saveState.ExecContext(ctx, stateCopySpools, string(raw)); err != nil {
			return copies.Row{}, 0, fmt.Errorf("store the receivers' spools: %w", err)
		}
	}
	var row copies.Row
	if blob, tMax, ok := c.Encode(); ok {
		res, err := s.conn.ExecContext(ctx, `INSERT INTO meshingest_copies (t_max, rounds) VALUES (?, ?)`, tMax, blob)
		if err != nil {
			return copies.Row{}, 0, fmt.Errorf("store the batch's receiver copies: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return copies.Row{}, 0, fmt.Errorf("store the batch's receiver copies: %w", err)
		}
		row = copies.Row{Batch: id, TMax: tMax}
	}
	drop, through := c.Stale(horizon)
	if drop > 0 {
		if _, err := s.conn.ExecContext(ctx, `DELETE FROM meshingest_copies WHERE batch <= ?`, through); err != nil {
			return copies.Row{}, 0, fmt.Errorf("delete old receiver copies: %w", err)
		}
	}
	return row, drop, nil
}
