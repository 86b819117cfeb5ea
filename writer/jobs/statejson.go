package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/meshingest/meshingest/writer"
)

// The jobs keep their progress in meshingest_state, as JSON values, in the
// same transactions as the rows the progress stands for.

const saveStateSQL = `INSERT INTO meshingest_state (key, value) VALUES (?, ?)
	ON CONFLICT (key) DO UPDATE SET value = excluded.value`

func saveStateJSON(ctx context.Context, tx writer.Tx, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("save %s: %w", key, err)
	}
	if _, err := tx.ExecContext(ctx, saveStateSQL, key, string(b)); err != nil {
		return fmt.Errorf("save %s: %w", key, err)
	}
	return nil
}

// readStateJSON reads the value of key into v and reports whether there
// was one.
func readStateJSON(ctx context.Context, tx writer.Tx, key string, v any) (bool, error) {
	var raw string
	err := tx.QueryRowContext(ctx, `SELECT value FROM meshingest_state WHERE key = ?`, key).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return false, fmt.Errorf("read %s from meshingest_state: %q: %w; delete the row to start that job over", key, raw, err)
	}
	return true, nil
}
