// Package forms pairs the two forms of one reception: OffbandMesh and PC
// publish every packet on `…/packets` and `…/raw` (decoder doc.go, "One
// reception, two forms"), and the writer counts the pair once. Memory
// holds the receptions counted whose other form has not come yet, and
// Encode and Decode its stored form (the writer keeps it with the spool
// position, in the batch's transaction).
package forms

import (
	"encoding/binary"
	"errors"
	"sort"
	"time"
)

// Window is how far apart the two forms of one reception can be.
const Window = 10 * time.Second

// Key is what the two forms of one reception share: the observer and the
// frame's fingerprint (decoder.Frame.Fingerprint).
type Key struct {
	Observer    string
	Fingerprint uint64
}

// unpairedForm is one counted reception waiting for its other form.
type unpairedForm struct {
	raw bool  // FormRaw or FormBinary; else FormPacket
	at  int64 // receive time, unix ms
}

// Memory is the unpaired receptions, per key oldest first.
type Memory struct {
	pending map[Key][]unpairedForm
}

// NewMemory is an empty memory.
func NewMemory() *Memory { return &Memory{pending: map[Key][]unpairedForm{}} }

// Match takes the oldest unpaired reception of key in the other form
// within Window of at (unix ms), and reports whether there was one.
func (m *Memory) Match(key Key, raw bool, at int64) bool {
	list := m.pending[key]
	for i, u := range list {
		if u.raw != raw && max(at-u.at, u.at-at) <= Window.Milliseconds() {
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

// Add notes a counted reception (raw: FormRaw or FormBinary) received at
// at (unix ms) whose other form has not come yet.
func (m *Memory) Add(key Key, raw bool, at int64) {
	m.pending[key] = append(m.pending[key], unpairedForm{raw: raw, at: at})
}

// Expire forgets what no later message can match: receptions more than
// Window before newest.
func (m *Memory) Expire(newest int64) {
	for k, list := range m.pending {
		kept := list[:0]
		for _, u := range list {
			if newest-u.at <= Window.Milliseconds() {
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

// Encode is the stored form of m: version 1, the uvarint base time (unix ms), then per
// observer its id (uvarint length and bytes) and the uvarint number of its
// receptions, each the fingerprint (8 bytes, little endian), the form (1
// byte: 1 raw or binary, 0 packets) and the uvarint of base - receive time
// (ms), oldest first per key.
func Encode(m *Memory, base int64) []byte {
	byObserver := map[string][]Key{}
	for k := range m.pending {
		byObserver[k.Observer] = append(byObserver[k.Observer], k)
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
				out = binary.LittleEndian.AppendUint64(out, k.Fingerprint)
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

// ErrDamaged is a stored form Decode cannot read.
var ErrDamaged = errors.New("damaged list of unpaired receptions")

// Decode reads what Encode stored.
func Decode(b []byte) (*Memory, error) {
	m := NewMemory()
	if len(b) == 0 || b[0] != 1 {
		return nil, ErrDamaged
	}
	b = b[1:]
	base, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, ErrDamaged
	}
	b = b[k:]
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return nil, ErrDamaged
		}
		observer := string(b[k : k+int(l)])
		b = b[k+int(l):]
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, ErrDamaged
		}
		b = b[k:]
		for range n {
			if len(b) < 10 {
				return nil, ErrDamaged
			}
			fp, raw := binary.LittleEndian.Uint64(b), b[8] == 1
			ago, k := binary.Uvarint(b[9:])
			if k <= 0 {
				return nil, ErrDamaged
			}
			b = b[9+k:]
			m.Add(Key{observer, fp}, raw, int64(base)-int64(ago))
		}
	}
	return m, nil
}
