package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/recent"
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
	complete *recent.Cache[int64, []obsKey]
	// batch holds the keys of the open batch, per transmission it touched;
	// they reach complete only after the commit. The writer queues
	// observations and inserts them in chunks, so the open batch's rows
	// may not be in the table yet: a key seen in this batch is answered
	// from here, never from a lookup.
	batch  map[int64]*batchKeys
	seed   maphash.Seed
	exists *sql.Stmt
}

type batchKeys struct {
	keys     []obsKey
	complete bool // keys holds every observation of the transmission
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
		complete: recent.New[int64, []obsKey](observationRowsCache),
		batch:    map[int64]*batchKeys{},
		seed:     maphash.MakeSeed(),
	}
}

const observationExistsSQL = `SELECT EXISTS (SELECT 1 FROM observations
	WHERE transmission_id = ? AND observer_idx = ? AND COALESCE(path_json, '') = ?)`

// isNew reports whether the observation will insert a row, and records it.
func (r *observationRows) isNew(ctx context.Context, o *writer.Observation, newTransmission bool) (bool, error) {
	if !o.ObserverIdx.Valid {
		return true, nil // NULL observer_idx never matches the unique index
	}
	txid := o.TransmissionID
	k := obsKey{observer: o.ObserverIdx.Int64, path: maphash.String(r.seed, o.PathJSON)}
	b := r.batch[txid]
	if b == nil {
		switch stored, known := r.complete.Get(txid); {
		case newTransmission:
			b = &batchKeys{complete: true}
		case known:
			b = &batchKeys{keys: slices.Clone(stored), complete: true}
		default:
			b = &batchKeys{}
		}
		r.batch[txid] = b
	}
	if slices.Contains(b.keys, k) {
		return false, nil
	}
	if !b.complete {
		// Stored before this process saw the transmission: ask the
		// unique index (rows of earlier batches).
		var exists bool
		if err := r.exists.QueryRowContext(ctx, txid, o.ObserverIdx.Int64, o.PathJSON).Scan(&exists); err != nil {
			return false, fmt.Errorf("look up observation of transmission %d: %w", txid, err)
		}
		if exists {
			b.keys = append(b.keys, k)
			return false, nil
		}
	}
	b.keys = append(b.keys, k)
	return true, nil
}

// committed moves the batch's complete key sets into the cache;
// rolledBack forgets them.
func (r *observationRows) committed() {
	for txid, b := range r.batch {
		if b.complete {
			r.complete.Put(txid, b.keys)
		}
	}
	clear(r.batch)
}

func (r *observationRows) rolledBack() { clear(r.batch) }
