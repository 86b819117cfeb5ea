// Package forms pairs the two forms of one reception: OffbandMesh and PC
// publish every packet on `…/packets` and `…/raw` (decoder doc.go, "One
// reception, two forms"), and the writer counts the pair once. Memory
// holds the receptions counted whose other form has not come yet; the
// writer keeps it in the database with the spool position, in the batch's
// transaction (log.go says how).
package forms

import (
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

// Memory is the unpaired receptions, per key oldest first, and what
// changed in it since the last Changes (the log of log.go).
type Memory struct {
	pending map[Key][]unpairedForm
	ops     []op  // since the last Changes, in order
	rows    []row // the stored rows, oldest first
	base    int64 // the newest stored row's stream time (unix ms)
	// snapshot: the next Changes stores all of the memory, not its
	// changes (read from the single blob of an earlier version).
	snapshot bool
}

// NewMemory is an empty memory.
func NewMemory() *Memory { return &Memory{pending: map[Key][]unpairedForm{}} }

// Match takes the oldest unpaired reception of key in the other form
// within Window of at (unix ms), and reports whether there was one.
func (m *Memory) Match(key Key, raw bool, at int64) bool {
	for _, u := range m.pending[key] {
		if u.raw != raw && max(at-u.at, u.at-at) <= Window.Milliseconds() {
			// The first entry equal to u is u: an equal one before it
			// would have matched first.
			m.remove(key, u)
			m.ops = append(m.ops, op{key: key, form: u, matched: true})
			return true
		}
	}
	return false
}

// Add notes a counted reception (raw: FormRaw or FormBinary) received at
// at (unix ms) whose other form has not come yet.
func (m *Memory) Add(key Key, raw bool, at int64) {
	u := unpairedForm{raw: raw, at: at}
	m.add(key, u)
	m.ops = append(m.ops, op{key: key, form: u})
}

func (m *Memory) add(key Key, u unpairedForm) { m.pending[key] = append(m.pending[key], u) }

// remove deletes the first entry of key equal to u, if there is one.
func (m *Memory) remove(key Key, u unpairedForm) {
	list := m.pending[key]
	for i, v := range list {
		if v == u {
			list = append(list[:i:i], list[i+1:]...)
			if len(list) == 0 {
				delete(m.pending, key)
			} else {
				m.pending[key] = list
			}
			return
		}
	}
}

// Expire forgets what no later message can match: receptions more than
// Window before newest.
func (m *Memory) Expire(newest int64) {
	for k, list := range m.pending {
		kept := list[:0]
		for _, u := range list {
			if !expired(u, newest) {
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

func expired(u unpairedForm, newest int64) bool { return newest-u.at > Window.Milliseconds() }

// Len is the number of unpaired receptions.
func (m *Memory) Len() int {
	n := 0
	for _, list := range m.pending {
		n += len(list)
	}
	return n
}
