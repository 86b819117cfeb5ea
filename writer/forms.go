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
// the spool position (meshingest_state, stateUnpairedForms, written in the
// batch's transaction), so a writer stopped or killed between the two forms
// does not count the second one again when it resumes.

// stateUnpairedForms is the meshingest_state key of the unpaired
// receptions (a BLOB, forms.Encode).
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
	var blob []byte
	err := s.conn.QueryRowContext(ctx, `SELECT value FROM meshingest_state WHERE key = ?`, stateUnpairedForms).Scan(&blob)
	if errors.Is(err, sql.ErrNoRows) {
		s.forms = forms.NewMemory()
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the unpaired receptions from meshingest_state: %w", err)
	}
	m, err := forms.Decode(blob)
	if err != nil {
		return fmt.Errorf("read %s from meshingest_state: %w; delete the row (a /packets and /raw pair split by a restart may then count twice)", stateUnpairedForms, err)
	}
	s.forms = m
	return nil
}

// saveForms stores the batch's unpaired receptions, less those too old to
// be matched, in the batch's transaction.
func (b *batch) saveForms(newest time.Time) error {
	if !b.formsTouched {
		return nil
	}
	b.s.forms.Expire(newest.UnixMilli())
	if _, err := b.s.stmt.saveState.ExecContext(b.ctx, stateUnpairedForms, forms.Encode(b.s.forms, newest.UnixMilli())); err != nil {
		return fmt.Errorf("store the unpaired receptions: %w", err)
	}
	return nil
}
