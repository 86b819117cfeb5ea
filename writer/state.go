package writer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/stats"
)

// Keys of meshingest_state.
//
// Seqs restart at 1 in a new spool folder, so a position means something
// only within its spool: the writer keeps one per spool identity
// (spool_position:<identity>). A spool it has not seen starts at its first
// record; one it knows again (a disk mounted back) resumes where it
// stopped, so a stale spool can still be drained. Keyed so, several spools
// could later be drained at once.
const (
	// statePositionPrefix + the identity's 32 hex digits: JSON
	// {"spool","segment","seq","unwritten"}: the last record of that spool
	// whose effects are stored, and the records the spool said it still
	// held then (-1 unknown).
	statePositionPrefix = "spool_position:"
	// stateLegacyPosition is the one position a writer stored before
	// spools had identities ({"segment","seq"}). It applies to the legacy
	// spool the spool package adopted (IdentityInfo.AdoptedLegacy), which
	// claims it: the first batch from that spool deletes it.
	stateLegacyPosition = "spool_position"
	// stateCurrentSpool is the identity of the spool the last batch came
	// from, to tell when a new spool replaced it.
	stateCurrentSpool = "spool_current"
	stateStreamTime   = "stream_time" // RFC 3339 receive time of the last record: the writer's "now" for retention
)

// writerState is what the database says the writer has done, beyond the
// position in each spool (spoolSlot).
type writerState struct {
	StreamTime time.Time // zero before the first record
	// current is the identity stored in stateCurrentSpool.
	current spool.Identity
}

// spoolPosition is where the writer is in one spool.
type spoolPosition struct {
	Position Position // Position.Spool names the spool
	// legacy: Position is the identity-less one stored before identities,
	// not yet claimed by this spool (the next save claims it).
	legacy bool
}

type positionJSON struct {
	Spool   spool.Identity `json:"spool,omitzero"`
	Segment uint64         `json:"segment"`
	Seq     uint64         `json:"seq"`
	// Unwritten is the records the spool held after this position when it
	// was stored, -1 when unknown (omitted in legacy rows).
	Unwritten *int64 `json:"unwritten,omitempty"`
}

// errPositionMoved is a batch that found another position stored than the
// one the writer started it from: another writer committed meanwhile.
var errPositionMoved = errors.New("the spool position stored in the database moved under the writer")

func stateValue(ctx context.Context, conn *sql.Conn, key string) (string, bool, error) {
	var raw string
	err := conn.QueryRowContext(ctx, `SELECT value FROM meshingest_state WHERE key = ?`, key).Scan(&raw)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("read %s from meshingest_state: %w", key, err)
	}
	return raw, true, nil
}

func readPositionRow(ctx context.Context, conn *sql.Conn, key string) (positionJSON, bool, error) {
	raw, ok, err := stateValue(ctx, conn, key)
	if err != nil || !ok {
		return positionJSON{}, false, err
	}
	var p positionJSON
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return positionJSON{}, false, fmt.Errorf("read %s from meshingest_state: %q: %w; fix or delete the row (deleting it re-reads the whole spool)", key, raw, err)
	}
	return p, true, nil
}

// readPosition is where the writer resumes in the spool info: the
// position stored for its identity; else, for a spool adopted from before
// identities, the legacy position (legacy true); else its first record.
func readPosition(ctx context.Context, conn *sql.Conn, info spool.IdentityInfo) (pos Position, legacy bool, err error) {
	pos.Spool = info.ID
	p, ok, err := readPositionRow(ctx, conn, statePositionPrefix+info.ID.String())
	if err != nil || ok {
		pos.Segment, pos.Seq = p.Segment, p.Seq
		return pos, false, err
	}
	if !info.AdoptedLegacy {
		return pos, false, nil
	}
	p, ok, err = readPositionRow(ctx, conn, stateLegacyPosition)
	if err != nil || !ok {
		return pos, false, err
	}
	pos.Segment, pos.Seq = p.Segment, p.Seq
	return pos, true, nil
}

// checkPosition fails with errPositionMoved unless the stored position of
// st's spool is still st's. Run inside the batch's transaction (BEGIN
// IMMEDIATE): two writers that meet on one database despite the lock
// (dbfile.LockDatabase) then never apply the same records twice; the one
// that finds the position moved reads it again.
func checkPosition(ctx context.Context, conn *sql.Conn, info spool.IdentityInfo, st spoolPosition) error {
	got, legacy, err := readPosition(ctx, conn, info)
	if err != nil {
		return err
	}
	if got != st.Position || legacy != st.legacy {
		return fmt.Errorf("%w (stored %v, expected %v)", errPositionMoved, got, st.Position)
	}
	return nil
}

// readState reads where the writer resumes in the spool info, and what
// spool it drained before.
func readState(ctx context.Context, conn *sql.Conn, info spool.IdentityInfo) (writerState, spoolPosition, *stats.SpoolReplaced, error) {
	var st writerState
	sp, replaced, err := readStateInto(ctx, conn, info, &st)
	return st, sp, replaced, err
}

func readStateInto(ctx context.Context, conn *sql.Conn, info spool.IdentityInfo, st *writerState) (spoolPosition, *stats.SpoolReplaced, error) {
	var sp spoolPosition
	var err error
	if sp.Position, sp.legacy, err = readPosition(ctx, conn, info); err != nil {
		return sp, nil, err
	}
	raw, ok, err := stateValue(ctx, conn, stateStreamTime)
	if err != nil {
		return sp, nil, err
	}
	if ok {
		if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
			st.StreamTime = t.UTC()
		}
	}
	raw, ok, err = stateValue(ctx, conn, stateCurrentSpool)
	if err != nil || !ok {
		return sp, nil, err
	}
	if st.current, err = spool.ParseIdentity(raw); err != nil {
		return sp, nil, fmt.Errorf("read %s from meshingest_state: %w", stateCurrentSpool, err)
	}
	if st.current == info.ID {
		return sp, nil, nil
	}
	// Another spool was drained last. If this one is new to the database,
	// it replaced that one.
	if _, known, err := readPositionRow(ctx, conn, statePositionPrefix+info.ID.String()); err != nil || known || sp.legacy {
		return sp, nil, err
	}
	prev, ok, err := readPositionRow(ctx, conn, statePositionPrefix+st.current.String())
	if err != nil {
		return sp, nil, err
	}
	r := &stats.SpoolReplaced{Previous: st.current.String(), PreviousPosition: "-", UnwrittenRecords: -1}
	if ok {
		r.PreviousPosition = Position{Spool: st.current, Segment: prev.Segment, Seq: prev.Seq}.String()
		if prev.Unwritten != nil {
			r.UnwrittenRecords = *prev.Unwritten
		}
	}
	return sp, r, nil
}

// savePosition writes a spool's position inside the batch's transaction:
// the rows and the position they bring the writer to commit together or
// not at all. unwritten is the records the spool still holds after it (-1
// unknown). The first batch from an adopted legacy spool claims (deletes)
// the legacy position.
func (s *store) savePosition(ctx context.Context, sp spoolPosition, unwritten int64) error {
	raw, _ := json.Marshal(positionJSON{Spool: sp.Position.Spool, Segment: sp.Position.Segment, Seq: sp.Position.Seq, Unwritten: &unwritten})
	if _, err := s.stmt.saveState.ExecContext(ctx, statePositionPrefix+sp.Position.Spool.String(), string(raw)); err != nil {
		return fmt.Errorf("save writer position: %w", err)
	}
	if sp.legacy {
		if _, err := s.conn.ExecContext(ctx, `DELETE FROM meshingest_state WHERE key = ?`, stateLegacyPosition); err != nil {
			return fmt.Errorf("claim the legacy writer position: %w", err)
		}
	}
	return nil
}

// saveStream writes the stream time, and notes last, the spool the batch
// ended in, as the current spool when it is not already.
func (s *store) saveStream(ctx context.Context, st writerState, last spool.Identity) error {
	if !last.IsZero() && st.current != last {
		if _, err := s.stmt.saveState.ExecContext(ctx, stateCurrentSpool, last.String()); err != nil {
			return fmt.Errorf("save the current spool: %w", err)
		}
	}
	if !st.StreamTime.IsZero() {
		if _, err := s.stmt.saveState.ExecContext(ctx, stateStreamTime, st.StreamTime.UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("save stream time: %w", err)
		}
	}
	return nil
}
