package jobs

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// Multibyte capability (docs/reference/mqtt-formats.md §8). CoreScope's
// server works out which nodes handle multi-byte path hashes and, being
// read-only, leaves its verdicts in <db dir>/mbcap-snapshot/snapshot.json =
// {"writtenAt","entries":[{"public_key","status","evidence"}]}. The writer
// copies them into nodes.multibyte_sup (2 confirmed, 1 suspected) and
// multibyte_evidence, in nodes when the node is there, else in
// inactive_nodes. "unknown" is never written: a snapshot blank must not
// erase an earlier verdict (CoreScope's rule).
//
// A snapshot is applied once, in steps of multibyteChunk entries; how far
// it got is kept in meshingest_state in the same transactions, so a
// restart neither repeats nor skips. A new snapshot (another size or
// modification time) is applied again from the start.

// MultibyteSnapshotPath is where the server writes its snapshot, relative
// to the database's folder.
const MultibyteSnapshotPath = "mbcap-snapshot/snapshot.json"

// MultibyteSnapshot is the server's file.
type MultibyteSnapshot struct {
	WrittenAt string           `json:"writtenAt"`
	Entries   []MultibyteEntry `json:"entries"`
}

// MultibyteEntry is one node's verdict. Evidence is stored as text: a
// JSON string as its value, anything else as its JSON.
type MultibyteEntry struct {
	PublicKey string          `json:"public_key"`
	Status    string          `json:"status"`
	Evidence  json.RawMessage `json:"evidence"`
}

const (
	multibyteChunk    = 1000
	multibyteStateKey = "multibyte_snapshot"
)

type multibyteProgress struct {
	File  string `json:"file"` // size and modification time of the snapshot
	Next  int    `json:"next"`
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

type multibyteTask struct {
	path string
	log  zerolog.Logger
	// The parsed snapshot of the file identity in progress, so a
	// multi-step apply reads the file once.
	cachedFile string
	cached     *MultibyteSnapshot
}

func newMultibyteTask(dataDir string, log zerolog.Logger) *multibyteTask {
	return &multibyteTask{path: filepath.Join(dataDir, MultibyteSnapshotPath), log: log}
}

func (t *multibyteTask) Name() string { return "multibyte-capability" }

// Interval: the server recomputes its verdicts in its analytics cycle,
// minutes apart; a stat a minute notices a new snapshot soon enough.
func (t *multibyteTask) Interval() time.Duration { return time.Minute }

func (t *multibyteTask) Step(ctx context.Context, tx writer.Tx, now time.Time) (bool, error) {
	fi, err := os.Stat(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // the server has not written one yet
	}
	if err != nil {
		return false, fmt.Errorf("multibyte snapshot %s: %w", t.path, err)
	}
	file := snapshotIdentity(fi)
	var prog multibyteProgress
	if _, err := readStateJSON(ctx, tx, multibyteStateKey, &prog); err != nil {
		return false, err
	}
	if prog.File == file && prog.Done {
		return false, nil
	}
	if prog.File != file {
		prog = multibyteProgress{File: file}
	}
	snap, err := t.snapshot(file)
	if err != nil {
		// A snapshot caught half-written or broken: note it once and wait
		// for the next one.
		prog.Done, prog.Error = true, err.Error()
		t.log.Warn().Err(err).Str("file", t.path).Msg("multibyte snapshot unreadable; ignored until the server writes a new one")
		return false, saveStateJSON(ctx, tx, multibyteStateKey, prog)
	}
	end := min(prog.Next+multibyteChunk, len(snap.Entries))
	var active, inactive, skipped int64
	for _, e := range snap.Entries[prog.Next:end] {
		sup := multibyteStatus(e.Status)
		key := strings.ToLower(strings.TrimSpace(e.PublicKey))
		if sup == 0 || key == "" {
			skipped++
			continue
		}
		evidence := evidenceText(e.Evidence)
		table := "inactive_nodes"
		var hit int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM nodes WHERE public_key = ?`, key).Scan(&hit); {
		case err == nil:
			table = "nodes"
		case !errors.Is(err, sql.ErrNoRows):
			return false, fmt.Errorf("multibyte snapshot: look up node %s: %w", key, err)
		}
		// Unchanged rows are not rewritten: the server writes a new
		// snapshot every cycle, mostly with the same verdicts.
		res, err := tx.ExecContext(ctx, `UPDATE `+table+` SET multibyte_sup = ?1, multibyte_evidence = ?2
			WHERE public_key = ?3 AND (multibyte_sup IS NOT ?1 OR multibyte_evidence IS NOT ?2)`, sup, evidence, key)
		if err != nil {
			return false, fmt.Errorf("multibyte snapshot: update %s %s: %w", table, key, err)
		}
		if n, _ := res.RowsAffected(); n > 0 && table == "nodes" {
			active += n
		} else if n > 0 {
			inactive += n
		}
	}
	prog.Next = end
	prog.Done = end >= len(snap.Entries)
	if err := saveStateJSON(ctx, tx, multibyteStateKey, prog); err != nil {
		return false, err
	}
	if active+inactive > 0 || prog.Done {
		t.log.Debug().Int("entries", end).Int("of", len(snap.Entries)).Int64("nodes_updated", active).
			Int64("inactive_nodes_updated", inactive).Int64("skipped", skipped).Str("written_at", snap.WrittenAt).
			Msg("applied multibyte capability snapshot")
	}
	if prog.Done {
		t.cached, t.cachedFile = nil, ""
	}
	return !prog.Done, nil
}

func (t *multibyteTask) snapshot(file string) (*MultibyteSnapshot, error) {
	if t.cachedFile == file && t.cached != nil {
		return t.cached, nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return nil, err
	}
	var s MultibyteSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	t.cached, t.cachedFile = &s, file
	return &s, nil
}

// multibyteStatus is CoreScope's mapping; 0 means "do not write".
func multibyteStatus(s string) int {
	switch s {
	case "confirmed":
		return 2
	case "suspected":
		return 1
	}
	return 0
}

func evidenceText(raw json.RawMessage) sql.NullString {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return sql.NullString{}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return sql.NullString{String: s, Valid: true}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return sql.NullString{String: buf.String(), Valid: true}
	}
	return sql.NullString{String: string(raw), Valid: true}
}

// snapshotIdentity tells snapshots apart: the server replaces the file
// with every analytics cycle.
func snapshotIdentity(fi os.FileInfo) string {
	return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
}
