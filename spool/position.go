package spool

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshingest/meshingest/shared"
)

// WriteWriterPosition writes the advisory copy of the writer's committed
// position, for `spool status` and the appender's depth gauge. Atomic, not
// synced: the authoritative copy is in the writer's database.
func WriteWriterPosition(dir string, pos Position) error {
	return shared.WriteJSONAtomic(filepath.Join(dir, positionFile), pos)
}

// ReadWriterPosition reads the advisory writer position; the zero Position
// when there is none yet.
func ReadWriterPosition(dir string) (Position, error) {
	b, err := os.ReadFile(filepath.Join(dir, positionFile))
	if os.IsNotExist(err) {
		return Position{}, nil
	}
	if err != nil {
		return Position{}, err
	}
	var p Position
	if err := json.Unmarshal(b, &p); err != nil {
		return Position{}, fmt.Errorf("read %s: %w", filepath.Join(dir, positionFile), err)
	}
	return p, nil
}
