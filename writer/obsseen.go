package writer

import (
	"context"
	"database/sql"
	"fmt"
	"hash/maphash"
	"slices"
)

// observationRows tells whether an observation is about to become a new
// row or to update one already stored: the observation upsert keeps one
// row per (transmission, observer, path), and only a new row adds to
// neighbor_edges. The writer does not say which happened, so the jobs
// keep their own account.
//
// For a transmission whose first observation this process wrote, every
// row of it went through here, so the answer comes from memory. Any other
// transmission (one stored before a restart, or forgotten by the cache)
// costs one lookup on the unique index.
type observationRows struct {
	// complete maps a transmission id to the observation keys it has, for
	// transmissions known since their first observation. Observations of
	// one transmission arrive within seconds, so a recent window is enough.
	complete *recentCache[int64, []obsKey]
	// pending holds what the open batch added; it reaches complete only
	// after the commit.
	pending map[int64][]obsKey
	seed    maphash.Seed
	exists  *sql.Stmt
}

// obsKey is an observation's identity within its transmission: the
// observer's rowid and a 64-bit hash of path_json. A hash collision
// between two paths of one transmission (about 2^-64 per pair) would make
// a new row look repeated and drop its edge.
type obsKey struct {
	observer int64
	path     uint64
}

// observationRowsCache bounds the transmissions remembered (up to twice
// this many, each with its few dozen observation keys).
const observationRowsCache = 8192

func newObservationRows() *observationRows {
	return &observationRows{
		complete: newRecentCache[int64, []obsKey](observationRowsCache),
		pending:  map[int64][]obsKey{},
		seed:     maphash.MakeSeed(),
	}
}

const observationExistsSQL = `SELECT EXISTS (SELECT 1 FROM observations
	WHERE transmission_id = ? AND observer_idx = ? AND COALESCE(path_json, '') = ?)`

// isNew reports whether the observation will insert a row, and records it.
// It runs inside the batch's transaction, so the lookup sees the rows the
// batch has written so far.
func (r *observationRows) isNew(ctx context.Context, o *Observation, newTransmission bool) (bool, error) {
	if !o.ObserverIdx.Valid {
		return true, nil // NULL observer_idx never matches the unique index
	}
	txid := o.TransmissionID
	k := obsKey{observer: o.ObserverIdx.Int64, path: maphash.String(r.seed, o.PathJSON)}
	if newTransmission {
		r.pending[txid] = []obsKey{k}
		return true, nil
	}
	added, inBatch := r.pending[txid]
	stored, known := r.complete.get(txid)
	if inBatch || known {
		if slices.Contains(added, k) || slices.Contains(stored, k) {
			return false, nil
		}
		r.pending[txid] = append(added, k)
		return true, nil
	}
	var exists bool
	if err := r.exists.QueryRowContext(ctx, txid, o.ObserverIdx.Int64, o.PathJSON).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up observation of transmission %d: %w", txid, err)
	}
	return !exists, nil
}

// committed moves the batch's keys into the cache; rolledBack forgets them.
func (r *observationRows) committed() {
	for txid, added := range r.pending {
		stored, _ := r.complete.get(txid)
		r.complete.put(txid, append(stored, added...))
	}
	clear(r.pending)
}

func (r *observationRows) rolledBack() { clear(r.pending) }
