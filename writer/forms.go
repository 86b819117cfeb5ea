package writer

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"
)

// One reception, two forms. OffbandMesh and PC publish every packet on
// `…/packets` and `…/raw` (agessaman firmware does with raw on): the same
// observer and frame bytes, so the same observations row, but two messages
// that would each count in packet_count, last_seen and the hooks. The rule
// (decoder doc.go, "One reception, two forms"): a FormPacket message and a
// FormRaw or FormBinary message with the same observer and
// Frame.Fingerprint, received at most formWindow apart, are one reception,
// matched one to one, oldest first. The second counts nothing
// (duplicate_form); if it is the `/packets` one it still fills the row's
// SNR, RSSI, score and direction. Two messages of the same form are never a
// pair.
//
// The receptions counted whose other form has not come yet are kept with
// the spool position (meshingest_state, stateUnpairedForms, written in the
// batch's transaction), so a writer stopped or killed between the two forms
// does not count the second one again when it resumes.

// formWindow is how far apart the two forms of one reception can be.
const formWindow = 10 * time.Second

// stateUnpairedForms is the meshingest_state key of the unpaired
// receptions (a BLOB, encodeForms).
const stateUnpairedForms = "unpaired_forms"

type formKey struct {
	observer    string
	fingerprint uint64
}

// unpairedForm is one counted reception waiting for its other form.
type unpairedForm struct {
	raw bool  // FormRaw or FormBinary; else FormPacket
	at  int64 // receive time, unix ms
}

// formMemory is the unpaired receptions, per key oldest first.
type formMemory struct {
	pending map[formKey][]unpairedForm
}

func newFormMemory() *formMemory { return &formMemory{pending: map[formKey][]unpairedForm{}} }

// match takes the oldest unpaired reception of key in the other form
// within formWindow of at, and reports whether there was one.
func (m *formMemory) match(key formKey, raw bool, at int64) bool {
	list := m.pending[key]
	for i, u := range list {
		if u.raw != raw && abs64(at-u.at) <= formWindow.Milliseconds() {
			list = append(list[:i:i], list[i+1:]...)
			if len(list) == 0 {
				delete(m.pending, key)
			} else {
				m.pending[key] = list
			}
			return true
		}
	}
	return false
}

func (m *formMemory) add(key formKey, raw bool, at int64) {
	m.pending[key] = append(m.pending[key], unpairedForm{raw: raw, at: at})
}

// expire forgets what no later message can match: receptions more than
// formWindow before newest.
func (m *formMemory) expire(newest int64) {
	for k, list := range m.pending {
		kept := list[:0]
		for _, u := range list {
			if newest-u.at <= formWindow.Milliseconds() {
				kept = append(kept, u)
			}
		}
		if len(kept) == 0 {
			delete(m.pending, k)
		} else {
			m.pending[k] = kept
		}
	}
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// forms is the memory the batch matches against and adds to. The batch
// changes the store's copy in place, without a copy per batch: a batch
// that fails is always followed by store.forget (Writer.refused), which
// drops it, and the next batch reads the committed one back.
func (b *batch) forms() *formMemory {
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
		s.forms = newFormMemory()
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the unpaired receptions from meshingest_state: %w", err)
	}
	m, err := decodeForms(blob)
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
	b.s.forms.expire(newest.UnixMilli())
	if _, err := b.s.stmt.saveState.ExecContext(b.ctx, stateUnpairedForms, encodeForms(b.s.forms, newest.UnixMilli())); err != nil {
		return fmt.Errorf("store the unpaired receptions: %w", err)
	}
	return nil
}

// The stored form: version 1, the uvarint base time (unix ms), then per
// observer its id (uvarint length and bytes) and the uvarint number of its
// receptions, each the fingerprint (8 bytes, little endian), the form (1
// byte: 1 raw or binary, 0 packets) and the uvarint of base - receive time
// (ms), oldest first per key.
func encodeForms(m *formMemory, base int64) []byte {
	byObserver := map[string][]formKey{}
	for k := range m.pending {
		byObserver[k.observer] = append(byObserver[k.observer], k)
	}
	observers := make([]string, 0, len(byObserver))
	for o := range byObserver {
		observers = append(observers, o)
	}
	sort.Strings(observers)
	out := []byte{1}
	out = binary.AppendUvarint(out, uint64(base))
	for _, o := range observers {
		keys := byObserver[o]
		n := 0
		for _, k := range keys {
			n += len(m.pending[k])
		}
		out = binary.AppendUvarint(out, uint64(len(o)))
		out = append(out, o...)
		out = binary.AppendUvarint(out, uint64(n))
		for _, k := range keys {
			for _, u := range m.pending[k] {
				out = binary.LittleEndian.AppendUint64(out, k.fingerprint)
				form := byte(0)
				if u.raw {
					form = 1
				}
				out = append(out, form)
				out = binary.AppendUvarint(out, uint64(max(base-u.at, 0)))
			}
		}
	}
	return out
}

var errFormsDamaged = errors.New("damaged list of unpaired receptions")

func decodeForms(b []byte) (*formMemory, error) {
	m := newFormMemory()
	if len(b) == 0 || b[0] != 1 {
		return nil, errFormsDamaged
	}
	b = b[1:]
	base, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errFormsDamaged
	}
	b = b[k:]
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return nil, errFormsDamaged
		}
		observer := string(b[k : k+int(l)])
		b = b[k+int(l):]
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, errFormsDamaged
		}
		b = b[k:]
		for range n {
			if len(b) < 10 {
				return nil, errFormsDamaged
			}
			fp, raw := binary.LittleEndian.Uint64(b), b[8] == 1
			ago, k := binary.Uvarint(b[9:])
			if k <= 0 {
				return nil, errFormsDamaged
			}
			b = b[9+k:]
			m.add(formKey{observer, fp}, raw, int64(base)-int64(ago))
		}
	}
	return m, nil
}
