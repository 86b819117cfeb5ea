package writer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshingest/meshingest/writer/forms"
)

// One reception, two forms. OffbandMesh and PC publish every packet on
// `…/packets` and `…/raw` (agessaman firmware does with raw on): the same
// observer and frame bytes, so the same observations row, but two messages
// that would each count in packet_count, last_seen and the hooks. The rule
// (decoder doc.go, "One reception, two forms"): a FormPacket message and a
// FormRaw or FormBinary message with the same observer and
// Frame.Fingerprint, received at most forms.Window apart, are one reception,
// matched one to one, oldest first. The second counts nothing
// (duplicate_form); if it is the `/packets` one it still fills the row's
// SNR, RSSI, score and direction. Two messages of the same form are never a
// pair.
//
// The receptions counted whose other form has not come yet are kept with
// the spool position (table meshingest_forms, a row per batch that changed
// them, written in the batch's transaction; package forms says how), so a
// writer stopped or killed between the two forms does not count the second
// one again when it resumes.

// stateUnpairedForms is the meshingest_state key under which earlier
// versions stored all of the unpaired receptions in one BLOB, rewritten
// by every batch. It is read once, and deleted by the batch that stores
// the memory as a row of meshingest_forms.
const stateUnpairedForms = "unpaired_forms"

// forms is the memory the batch matches against and adds to. The batch
// changes the store's copy in place, without a copy per batch: a batch
// that fails is always followed by store.forget (Writer.refused), which
// drops it, and the next batch reads the committed one back.
func (b *batch) forms() *forms.Memory {
	b.formsTouched = true
	return b.s.forms
}

// loadForms reads the stored unpaired receptions, once per store and again
// after forget. Call it inside the batch's transaction.
func (s *store) loadForms(ctx context.Context) error {
	if s.forms != nil {
		return nil
	}
	var legacy []byte
	err := s.conn.QueryRowContext(ctx, `SELECT value FROM meshingest_state WHERE key = ?`, stateUnpairedForms).Scan(&legacy)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read the unpaired receptions from meshingest_state: %w", err)
	}
	rows, err := s.conn.QueryContext(ctx, `SELECT batch, changes FROM meshingest_forms ORDER BY batch`)
	if err != nil {
		return fmt.Errorf("read the unpaired receptions from meshingest_forms: %w", err)
	}
	defer rows.Close()
	var log []forms.Row
	for rows.Next() {
		var r forms.Row
		if err := rows.Scan(&r.Batch, &r.Blob); err != nil {
			return fmt.Errorf("read the unpaired receptions from meshingest_forms: %w", err)
		}
		log = append(log, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the unpaired receptions from meshingest_forms: %w", err)
	}
	m, err := forms.Restore(legacy, log)
	if err != nil {
		return fmt.Errorf("read the unpaired receptions (meshingest_forms, and meshingest_state key %s): %w; delete the rows (a /packets and /raw pair split by a restart may then count twice)", stateUnpairedForms, err)
	}
	s.forms = m
	return nil
}

// saveForms stores what the batch changed in the unpaired receptions, less
// those too old to be matched, and deletes the rows no longer needed, in
// the batch's transaction.
func (b *batch) saveForms(newest time.Time) error {
	if !b.formsTouched {
		return nil
	}
	m := b.s.forms
	c := m.Changes(newest.UnixMilli())
	if c.Blob == nil {
		return nil
	}
	res, err := b.s.stmt.insertForms.ExecContext(b.ctx, c.Blob)
	if err != nil {
		return fmt.Errorf("store the unpaired receptions: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("store the unpaired receptions: %w", err)
	}
	m.Logged(id, c)
	upTo, prune := m.Prunable()
	if c.Snapshot {
		// The row holds them all: nothing before it is needed (and
		// itself not either when they are none).
		if _, err := b.s.conn.ExecContext(b.ctx, `DELETE FROM meshingest_state WHERE key = ?`, stateUnpairedForms); err != nil {
			return fmt.Errorf("delete the unpaired receptions of an earlier version: %w", err)
		}
		if !prune {
			upTo, prune = id-1, true
		}
	}
	if prune {
		if _, err := b.s.stmt.pruneForms.ExecContext(b.ctx, upTo); err != nil {
			return fmt.Errorf("delete old unpaired receptions: %w", err)
		}
	}
	return nil
}
