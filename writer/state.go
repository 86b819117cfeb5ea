package writer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Keys of meshingest_state.
const (
	stateSpoolPosition = "spool_position" // JSON {"segment":N,"seq":M}: the last record whose effects are stored
	stateStreamTime    = "stream_time"    // RFC 3339 receive time of that record: the writer's "now" for retention
)

// writerState is what the database says the writer has done.
type writerState struct {
	Position   Position
	StreamTime time.Time // zero before the first record
}

type positionJSON struct {
	Segment uint64 `json:"segment"`
	Seq     uint64 `json:"seq"`
}

// errPositionMoved is a batch that found another position stored than the
// one the writer started it from: another writer committed meanwhile.
var errPositionMoved = errors.New("the spool position stored in the database moved under the writer")

// readPosition reads the position the last committed batch reached; the
// zero Position when none is stored.
func readPosition(ctx context.Context, conn *sql.Conn) (Position, error) {
	var raw string
	err := conn.QueryRowContext(ctx, `SELECT value FROM meshingest_state WHERE key = ?`, stateSpoolPosition).Scan(&raw)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Position{}, nil
	case err != nil:
		return Position{}, fmt.Errorf("read writer position from meshingest_state: %w", err)
	}
	var p positionJSON
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return Position{}, fmt.Errorf("read writer position from meshingest_state: %q: %w; fix or delete the row (deleting it re-reads the whole spool)", raw, err)
	}
	return Position{Segment: p.Segment, Seq: p.Seq}, nil
}

// checkPosition fails with errPositionMoved unless the stored position is
// want. Run inside the batch's transaction (BEGIN IMMEDIATE): two writers
// that meet on one database despite the lock (lock.go) then never apply the
// same records twice; the one that finds the position moved reads it again.
func checkPosition(ctx context.Context, conn *sql.Conn, want Position) error {
	got, err := readPosition(ctx, conn)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w (stored %v, expected %v)", errPositionMoved, got, want)
	}
	return nil
}

// readState reads the position the last committed batch reached.
func readState(ctx context.Context, conn *sql.Conn) (writerState, error) {
	var st writerState
	var err error
	if st.Position, err = readPosition(ctx, conn); err != nil || st.Position == (Position{}) {
		return st, err
	}
	var raw string
	err = conn.QueryRowContext(ctx, `SELECT value FROM meshingest_state WHERE key = ?`, stateStreamTime).Scan(&raw)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("read stream time from meshingest_state: %w", err)
	default:
		if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
			st.StreamTime = t.UTC()
		}
	}
	return st, nil
}

// saveState writes the position inside the batch's transaction: the rows
// and the position they bring the writer to commit together or not at all.
func (s *store) saveState(ctx context.Context, st writerState) error {
	raw, _ := json.Marshal(positionJSON{Segment: st.Position.Segment, Seq: st.Position.Seq})
	if _, err := s.stmt.saveState.ExecContext(ctx, stateSpoolPosition, string(raw)); err != nil {
		return fmt.Errorf("save writer position: %w", err)
	}
	if !st.StreamTime.IsZero() {
		if _, err := s.stmt.saveState.ExecContext(ctx, stateStreamTime, st.StreamTime.UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("save stream time: %w", err)
		}
	}
	return nil
}
