package forms

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestMemory_Match_OtherFormWithinWindow: each reception pairs once with
// the other form, within Window; two of one form never pair.
func TestMemory_Match_OtherFormWithinWindow(t *testing.T) {
	m := NewMemory()
	a, b := Key{"obs-a", 1}, Key{"obs-b", 1 << 63}
	m.Add(a, true, 10_000)
	m.Add(a, true, 10_500)
	m.Add(b, false, 9_000)
	if !m.Match(a, false, 11_000) || !m.Match(a, false, 11_000) || m.Match(a, false, 11_000) {
		t.Error("obs-a: want two /packets matches for its two /raw receptions, then none")
	}
	if m.Match(b, false, 9_000) || !m.Match(b, true, 9_000+Window.Milliseconds()) {
		t.Error("obs-b: a same-form message matched, or the other form at the window's edge did not")
	}
}

// TestMemory_Expire_ForgetsOutsideWindow: a reception more than Window
// before the newest cannot be matched any more and is forgotten.
func TestMemory_Expire_ForgetsOutsideWindow(t *testing.T) {
	m := NewMemory()
	k := Key{"obs", 7}
	m.Add(k, true, 0)
	m.Add(k, true, 5_000)
	m.Expire(Window.Milliseconds() + 1)
	if !m.Match(k, false, 5_000) || m.Match(k, false, 5_000) {
		t.Error("want the reception at 5 s kept and the one at 0 forgotten")
	}
}

// storedLog is the table the writer keeps the rows in.
type storedLog struct {
	rows []Row
	next int64
}

// save stores what a batch ending at newest changed, as the writer does.
func (l *storedLog) save(m *Memory, newest int64) {
	if c := m.Changes(newest); c.Blob != nil {
		l.next++
		if c.Snapshot {
			l.rows = l.rows[:0]
		}
		l.rows = append(l.rows, Row{Batch: l.next, Blob: c.Blob})
		m.Logged(l.next, c)
		if upTo, ok := m.Prunable(); ok {
			for len(l.rows) > 0 && l.rows[0].Batch <= upTo {
				l.rows = l.rows[1:]
			}
		}
	}
}

// TestRestore_Log_SameMemoryAfterEveryBatch: random batches of receptions
// on few keys (equal ones included, stream time moving on, standing still
// and some receptions older than it): after every batch, the memory the
// stored rows give is the memory the writer has, entry by entry and in
// order, and a writer restarted from it goes on identically.
func TestRestore_Log_SameMemoryAfterEveryBatch(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		m, l := NewMemory(), &storedLog{}
		never, nl := NewMemory(), &storedLog{} // a writer never restarted
		newest := int64(1_000_000)
		for batch := range 400 {
			if rng.IntN(4) > 0 {
				newest += rng.Int64N(3_000)
			}
			for range rng.IntN(40) {
				k := Key{string(rune('a' + rng.IntN(3))), uint64(rng.IntN(4))}
				raw := rng.IntN(2) == 0
				at := newest - rng.Int64N(12_000)
				matched := m.Match(k, raw, at)
				if matched != never.Match(k, raw, at) {
					t.Fatalf("seed %d batch %d: a restarted writer matched %v, one never restarted did not", seed, batch, k)
				}
				if !matched {
					m.Add(k, raw, at)
					never.Add(k, raw, at)
				}
			}
			l.save(m, newest)
			nl.save(never, newest)
			got, err := Restore(nil, l.rows)
			if err != nil {
				t.Fatalf("seed %d batch %d: %v", seed, batch, err)
			}
			if !reflect.DeepEqual(got.pending, m.pending) || !reflect.DeepEqual(m.pending, never.pending) {
				t.Fatalf("seed %d batch %d: restored %v, want %v", seed, batch, got.pending, m.pending)
			}
			if got.Rows() != len(l.rows) || len(l.rows) > maxRows+1 {
				t.Fatalf("seed %d batch %d: %d rows known, %d stored (at most %d)", seed, batch, got.Rows(), len(l.rows), maxRows+1)
			}
			if rng.IntN(10) == 0 {
				m = got // the writer restarted
			}
		}
	}
}

// TestRestore_StreamTimeStands_RowsBounded: with a stream time that does
// not advance nothing expires; the log is still bounded, by a snapshot.
func TestRestore_StreamTimeStands_RowsBounded(t *testing.T) {
	m, l := NewMemory(), &storedLog{}
	snapshots := 0
	for i := range 3 * maxRows {
		m.Add(Key{"obs", uint64(i)}, true, 5_000)
		before := l.next
		l.save(m, 5_000)
		if l.next == before {
			t.Fatalf("batch %d stored nothing", i)
		}
		if len(l.rows) == 1 && i > 0 {
			snapshots++
		}
	}
	if snapshots == 0 || len(l.rows) > maxRows {
		t.Errorf("%d snapshots, %d rows; want a snapshot at least every %d rows", snapshots, len(l.rows), maxRows)
	}
	got, err := Restore(nil, l.rows)
	if err != nil || got.Len() != 3*maxRows {
		t.Errorf("restored %d receptions (%v), want %d", got.Len(), err, 3*maxRows)
	}
}

// encodeLegacy is the single blob the writer stored before the log.
func encodeLegacy(entries map[Key][]unpairedForm, base int64) []byte {
	out := []byte{1}
	out = binary.AppendUvarint(out, uint64(base))
	for k, list := range entries {
		out = binary.AppendUvarint(out, uint64(len(k.Observer)))
		out = append(out, k.Observer...)
		out = binary.AppendUvarint(out, uint64(len(list)))
		for _, u := range list {
			out = binary.LittleEndian.AppendUint64(out, k.Fingerprint)
			out = append(out, formByte(u.raw))
			out = binary.AppendUvarint(out, uint64(base-u.at))
		}
	}
	return out
}

// TestRestore_Legacy_ReadThenSnapshot: the blob of an earlier version is
// read as it was, the next row stores the whole memory, and cut blobs or
// rows are damaged, not a shorter memory.
func TestRestore_Legacy_ReadThenSnapshot(t *testing.T) {
	entries := map[Key][]unpairedForm{{"obs-a", 1}: {{true, 10_000}, {true, 10_500}}, {"obs-b", 1 << 63}: {{false, 9_000}}}
	legacy := encodeLegacy(entries, 12_000)
	m, err := Restore(legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.pending, entries) {
		t.Fatalf("legacy blob read as %v, want %v", m.pending, entries)
	}
	c := m.Changes(12_000)
	if !c.Snapshot || c.Blob == nil {
		t.Fatalf("first row after a legacy blob: %+v, want a snapshot", c)
	}
	m.Logged(1, c)
	again, err := Restore(nil, []Row{{1, c.Blob}})
	if err != nil || !reflect.DeepEqual(again.pending, entries) {
		t.Fatalf("snapshot read as %v (%v), want %v", again.pending, err, entries)
	}
	if next := m.Changes(12_000); next.Snapshot || next.Blob != nil {
		t.Errorf("the batch after the snapshot: %+v, want nothing to store", next)
	}
	for _, blob := range [][]byte{legacy, c.Blob} {
		for _, cut := range []int{0, 1, 2, len(blob) - 1} {
			_, err1 := Restore(blob[:cut], nil)
			_, err2 := Restore(nil, []Row{{1, blob[:cut]}})
			if !errors.Is(err1, ErrDamaged) || !errors.Is(err2, ErrDamaged) {
				t.Errorf("cut at %d of %d: %v, %v, want ErrDamaged", cut, len(blob), err1, err2)
			}
		}
	}
}

// TestMemory_Changes_OnlyTheBatch: a row holds the batch's changes, not the
// memory: its size does not grow with the receptions before it.
func TestMemory_Changes_OnlyTheBatch(t *testing.T) {
	m := NewMemory()
	for i := range 2_500 {
		m.Add(Key{"obs", uint64(i)}, false, 1_000)
	}
	m.Changes(1_000)
	m.Add(Key{"obs", 1 << 40}, false, 1_001)
	if c := m.Changes(1_001); len(c.Blob) > 32 {
		t.Errorf("one reception stored in %d bytes beside 2,500 earlier ones", len(c.Blob))
	}
}
