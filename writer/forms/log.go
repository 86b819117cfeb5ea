package forms

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
)

// The stored form of a Memory is a log, one row per batch that changed it
// (the writer's table meshingest_forms, written in the batch's
// transaction): the receptions the batch added and the earlier ones it
// matched, in the order it did so. The rows read back in order, less what
// is outside the window, are the memory the writer had at its last
// commit. So a batch stores its own few hundred bytes, not the whole
// memory: at 250 msg/s that is about 2,500 receptions and 31 KB, which
// cost eight overflow pages of WAL per commit and a tenth of the writer's
// CPU (issue 17).
//
// A row whose every added reception is outside the window, and every row
// before it, can be deleted: the matches the later rows record of those
// receptions then find nothing, as they would have found nothing after
// the window passed. A stream time that stops advancing expires nothing,
// so after maxRows rows the next batch stores the whole memory as one row
// and deletes the others.

// maxRows is how many rows the log grows to before a batch stores the
// whole memory instead: about 40 s at the default profile's ten commits
// a second, where rows older than Window (10 s) are deleted anyway.
const maxRows = 256

// op is one change: a reception added, or an earlier one matched.
type op struct {
	key     Key
	form    unpairedForm
	matched bool
}

// row is what the memory knows of one stored row.
type row struct {
	batch     int64
	adds      bool  // it added a reception
	newestAdd int64 // the newest reception it added, unix ms
}

// Change is one row to store (Blob nil: none).
type Change struct {
	Blob []byte
	// Snapshot: the row holds the whole memory; every row before it,
	// and the single blob of an earlier version, is to be deleted.
	Snapshot bool
	row      row
	base     int64 // the stream time it was made at
}

// Changes is the row to store for a batch whose stream time is newest
// (unix ms): what changed since the last call, less what is outside the
// window, or the whole memory (Snapshot) when the log is long or still the
// blob of an earlier version. It forgets what is outside the window. A
// batch that changed nothing stores nothing and forgets nothing; one whose
// changes are all outside the window stores an empty row, so that the rows
// read back forget what the memory forgot (Restore expires at the newest
// row's time).
func (m *Memory) Changes(newest int64) Change {
	if len(m.ops) == 0 && !m.snapshot {
		return Change{}
	}
	m.Expire(newest)
	ops := m.ops[:0]
	if m.snapshot || len(m.rows) >= maxRows {
		keys := make([]Key, 0, len(m.pending))
		for k := range m.pending {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b Key) int {
			if c := strings.Compare(a.Observer, b.Observer); c != 0 {
				return c
			}
			return cmpUint64(a.Fingerprint, b.Fingerprint)
		})
		ops = nil
		for _, k := range keys {
			for _, u := range m.pending[k] {
				ops = append(ops, op{key: k, form: u})
			}
		}
		c := encodeRow(ops, newest)
		c.Snapshot = true
		m.ops = m.ops[:0]
		return c
	}
	for _, o := range m.ops {
		if !expired(o.form, newest) {
			ops = append(ops, o)
		}
	}
	m.ops = m.ops[:0]
	return encodeRow(ops, newest)
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Logged records that c is stored as row batch.
func (m *Memory) Logged(batch int64, c Change) {
	c.row.batch = batch
	if c.Snapshot {
		m.rows, m.snapshot = m.rows[:0], false
	}
	m.rows = append(m.rows, c.row)
	m.base = max(m.base, c.base)
}

// Prunable is the newest row that can be deleted, with every row before
// it, once the rows logged so far are stored; false when none can. The
// memory forgets them.
func (m *Memory) Prunable() (int64, bool) {
	n := 0
	for n < len(m.rows) && (!m.rows[n].adds || m.base-m.rows[n].newestAdd > Window.Milliseconds()) {
		n++
	}
	if n == 0 {
		return 0, false
	}
	last := m.rows[n-1].batch
	m.rows = slices.Delete(m.rows, 0, n)
	return last, true
}

// Rows is how many stored rows the memory knows of.
func (m *Memory) Rows() int { return len(m.rows) }

// Row is one stored row of the log.
type Row struct {
	Batch int64
	Blob  []byte
}

// ErrDamaged is a stored row or blob Restore cannot read.
var ErrDamaged = errors.New("damaged list of unpaired receptions")

// Restore is the memory that legacy (the single blob an earlier version
// stored, nil if none) and then rows, oldest first, give. The first
// Changes after a legacy blob is a Snapshot.
func Restore(legacy []byte, rows []Row) (*Memory, error) {
	m := NewMemory()
	newest := int64(0)
	if legacy != nil {
		base, err := decodeLegacy(m, legacy)
		if err != nil {
			return nil, err
		}
		newest, m.snapshot = base, true
	}
	for _, r := range rows {
		base, info, err := m.apply(r.Blob)
		if err != nil {
			return nil, err
		}
		info.batch = r.Batch
		m.rows = append(m.rows, info)
		newest = max(newest, base)
	}
	m.Expire(newest)
	m.base = newest
	return m, nil
}

// encodeRow is a row of ops as of newest: version 2, the uvarint base
// time newest (unix ms), the uvarint number of observers and each id
// (uvarint length and bytes), then each op: the uvarint of its
// observer's index × 2 (+1 if a match), the fingerprint (8 bytes, little
// endian), the form (1 byte: 1 raw or binary, 0 packets) and the varint
// of newest − receive time (ms).
func encodeRow(ops []op, newest int64) Change {
	index := map[string]uint64{}
	var observers []string
	for _, o := range ops {
		if _, ok := index[o.key.Observer]; !ok {
			index[o.key.Observer] = uint64(len(observers))
			observers = append(observers, o.key.Observer)
		}
	}
	out := []byte{2}
	out = binary.AppendUvarint(out, uint64(newest))
	out = binary.AppendUvarint(out, uint64(len(observers)))
	for _, o := range observers {
		out = binary.AppendUvarint(out, uint64(len(o)))
		out = append(out, o...)
	}
	c := Change{base: newest}
	for _, o := range ops {
		v := index[o.key.Observer] << 1
		if o.matched {
			v |= 1
		} else if !c.row.adds || o.form.at > c.row.newestAdd {
			c.row.adds, c.row.newestAdd = true, o.form.at
		}
		out = binary.AppendUvarint(out, v)
		out = binary.LittleEndian.AppendUint64(out, o.key.Fingerprint)
		out = append(out, formByte(o.form.raw))
		out = binary.AppendVarint(out, newest-o.form.at)
	}
	c.Blob = out
	return c
}

func formByte(raw bool) byte {
	if raw {
		return 1
	}
	return 0
}

// apply replays one stored row into m and returns its base time.
func (m *Memory) apply(b []byte) (int64, row, error) {
	var info row
	if len(b) == 0 || b[0] != 2 {
		return 0, info, ErrDamaged
	}
	b = b[1:]
	base, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, info, ErrDamaged
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return 0, info, ErrDamaged
	}
	b = b[k:]
	observers := make([]string, n)
	for i := range observers {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return 0, info, ErrDamaged
		}
		observers[i] = string(b[k : k+int(l)])
		b = b[k+int(l):]
	}
	for len(b) > 0 {
		v, k := binary.Uvarint(b)
		if k <= 0 || v>>1 >= uint64(len(observers)) || len(b)-k < 10 {
			return 0, info, ErrDamaged
		}
		b = b[k:]
		key := Key{observers[v>>1], binary.LittleEndian.Uint64(b)}
		raw := b[8] == 1
		ago, k := binary.Varint(b[9:])
		if k <= 0 {
			return 0, info, ErrDamaged
		}
		b = b[9+k:]
		u := unpairedForm{raw: raw, at: int64(base) - ago}
		if v&1 == 1 {
			m.remove(key, u)
			continue
		}
		m.add(key, u)
		if !info.adds || u.at > info.newestAdd {
			info.adds, info.newestAdd = true, u.at
		}
	}
	return int64(base), info, nil
}

// decodeLegacy adds to m what an earlier version stored as one blob and
// returns its base time: version 1, the uvarint base time (unix ms), then
// per observer its id (uvarint length and bytes) and the uvarint number
// of its receptions, each the fingerprint (8 bytes, little endian), the
// form (1 byte: 1 raw or binary, 0 packets) and the uvarint of base -
// receive time (ms), oldest first per key.
func decodeLegacy(m *Memory, b []byte) (int64, error) {
	if len(b) == 0 || b[0] != 1 {
		return 0, ErrDamaged
	}
	b = b[1:]
	base, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, ErrDamaged
	}
	b = b[k:]
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return 0, ErrDamaged
		}
		observer := string(b[k : k+int(l)])
		b = b[k+int(l):]
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, ErrDamaged
		}
		b = b[k:]
		for range n {
			if len(b) < 10 {
				return 0, ErrDamaged
			}
			fp, raw := binary.LittleEndian.Uint64(b), b[8] == 1
			ago, k := binary.Uvarint(b[9:])
			if k <= 0 {
				return 0, ErrDamaged
			}
			b = b[9+k:]
			m.add(Key{observer, fp}, unpairedForm{raw: raw, at: int64(base) - int64(ago)})
		}
	}
	return int64(base), nil
}
