package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// Geo-prune requests (docs/reference/mqtt-formats.md §8). CoreScope's
// server opens the database read-only; when an operator confirms a prune
// of the nodes outside geo_filter, it writes
// <db dir>/prune-requests/request-<id>.json = {"id","requestedAt","reason",
// "pubkeys":[…]} and polls for result-<id>.json = {"id","requestedAt",
// "completedAt","deleted","error"}. The writer deletes those nodes rows
// (only nodes: the packets stay, as in CoreScope), writes the result
// atomically and removes the request.
//
// A request is done in steps of pruneChunk keys, each in its own short
// transaction that also records, in meshingest_state, how far it got and
// how many rows it deleted. So the count in the result is exact across
// crashes and failed commits, and the result is written only once every
// deletion is committed: a result file never announces rows that are still
// there.

// PruneDirName is the folder, beside the database, the server writes
// requests into.
const PruneDirName = "prune-requests"

// PruneRequest is the server's request file.
type PruneRequest struct {
	ID          string    `json:"id"`
	RequestedAt time.Time `json:"requestedAt"`
	Reason      string    `json:"reason,omitempty"`
	Pubkeys     []string  `json:"pubkeys"`
}

// PruneResult is the file the writer answers with.
type PruneResult struct {
	ID          string    `json:"id"`
	RequestedAt time.Time `json:"requestedAt"`
	CompletedAt time.Time `json:"completedAt"`
	Deleted     int64     `json:"deleted"`
	Error       string    `json:"error,omitempty"`
}

// pruneChunk bounds the keys one step deletes (and the SQL parameters).
const pruneChunk = 500

const pruneStatePrefix = "prune_request:"

type pruneProgress struct {
	Next    int   `json:"next"`    // index of the first key not yet deleted
	Deleted int64 `json:"deleted"` // rows deleted so far
}

type pruneTask struct {
	dir   string
	paths *pathState
	log   zerolog.Logger
}

func newPruneTask(dataDir string, paths *pathState, log zerolog.Logger) *pruneTask {
	return &pruneTask{dir: filepath.Join(dataDir, PruneDirName), paths: paths, log: log}
}

func (t *pruneTask) Name() string { return "prune-requests" }

// Interval: the server's page polls for the result; a few seconds of
// latency is what CoreScope's maintenance loop gave.
func (t *pruneTask) Interval() time.Duration { return 5 * time.Second }

// StepEnded: a step that removed nodes from the index and did not commit
// has the index loaded again.
func (t *pruneTask) StepEnded(committed bool) { t.paths.stepEnded(committed) }

// pendingRequests lists request-<id>.json in name order.
func (t *pruneTask) pendingRequests() ([]string, error) {
	entries, err := os.ReadDir(t.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list prune requests in %s: %w", t.dir, err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() && strings.HasPrefix(n, "request-") && strings.HasSuffix(n, ".json") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// validPruneID accepts what the server generates (hex, at most 64
// characters) and so nothing that could name a file outside the folder.
func validPruneID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (t *pruneTask) Step(ctx context.Context, tx writer.Tx, now time.Time) (bool, error) {
	names, err := t.pendingRequests()
	if err != nil || len(names) == 0 {
		if err == nil {
			err = t.forgetAnswered(ctx, tx)
		}
		return false, err
	}
	name := names[0]
	path := filepath.Join(t.dir, name)
	id := strings.TrimSuffix(strings.TrimPrefix(name, "request-"), ".json")
	if !validPruneID(id) {
		// No result file can be named for it: set it aside for the
		// operator, so it is not read again every few seconds.
		if err := os.Rename(path, path+".rejected"); err != nil {
			return false, fmt.Errorf("set aside prune request %s: %w", path, err)
		}
		t.log.Warn().Str("file", path+".rejected").Msg("prune request with an invalid id (not hex, or longer than 64) set aside unanswered")
		return len(names) > 1, nil
	}
	req, readErr := readPruneRequest(path, id)
	stateKey := pruneStatePrefix + id
	var prog pruneProgress
	if _, err := readStateJSON(ctx, tx, stateKey, &prog); err != nil {
		return false, err
	}
	if readErr == nil && prog.Next < len(req.Pubkeys) {
		return true, t.deleteChunk(ctx, tx, req, stateKey, prog)
	}
	res := PruneResult{ID: id, Deleted: prog.Deleted, CompletedAt: time.Now().UTC()}
	if readErr != nil {
		res.Error = readErr.Error()
	} else {
		res.RequestedAt = req.RequestedAt
	}
	if err := writeFileDurably(filepath.Join(t.dir, "result-"+id+".json"), mustJSON(res), 0o644); err != nil {
		return false, fmt.Errorf("answer prune request %s: %w", id, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("remove answered prune request %s: %w", path, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM meshingest_state WHERE key = ?`, stateKey); err != nil {
		return false, fmt.Errorf("forget prune request %s: %w", id, err)
	}
	ev := t.log.Info()
	if res.Error != "" {
		ev = t.log.Warn().Str("error", res.Error)
	}
	if req != nil {
		ev = ev.Str("reason", req.Reason)
	}
	ev.Str("id", id).Int64("deleted", res.Deleted).Msg("prune request answered")
	return len(names) > 1, nil
}

// deleteChunk deletes the next chunk of the request's nodes and records
// the progress in the same transaction.
func (t *pruneTask) deleteChunk(ctx context.Context, tx writer.Tx, req *PruneRequest, stateKey string, prog pruneProgress) error {
	if prog.Next == 0 {
		t.log.Info().Str("id", req.ID).Int("pubkeys", len(req.Pubkeys)).Str("reason", req.Reason).Msg("prune request: deleting nodes")
	}
	// The node index is loaded before the rows go, so that it sees them
	// go: their observations are derived again.
	if err := t.paths.ensure(ctx, tx, time.Now()); err != nil {
		return err
	}
	chunk := req.Pubkeys[prog.Next:min(prog.Next+pruneChunk, len(req.Pubkeys))]
	// The keys as the server sent them, and lower-cased as the writer
	// stores them.
	var keys []any
	seen := map[string]bool{}
	for _, k := range chunk {
		for _, v := range []string{k, strings.ToLower(k)} {
			if !seen[v] {
				seen[v] = true
				keys = append(keys, v)
			}
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE public_key IN (`+placeholders(len(keys))+`)`, keys...)
	if err != nil {
		return fmt.Errorf("prune request %s: delete nodes: %w", req.ID, err)
	}
	n, _ := res.RowsAffected()
	prog.Next += len(chunk)
	prog.Deleted += n
	if err := saveStateJSON(ctx, tx, stateKey, prog); err != nil {
		return fmt.Errorf("prune request %s: %w", req.ID, err)
	}
	for _, k := range chunk {
		t.paths.removeNode(strings.ToLower(k))
	}
	return t.paths.rd.save(ctx, tx)
}

// forgetAnswered deletes progress rows whose request is gone (the result
// was written but the step that would have deleted the row failed).
func (t *pruneTask) forgetAnswered(ctx context.Context, tx writer.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT key FROM meshingest_state WHERE key LIKE 'prune\_request:%' ESCAPE '\'`)
	if err != nil {
		return fmt.Errorf("list prune progress: %w", err)
	}
	var stale []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return err
		}
		stale = append(stale, k)
	}
	rows.Close()
	for _, k := range stale {
		if _, err := tx.ExecContext(ctx, `DELETE FROM meshingest_state WHERE key = ?`, k); err != nil {
			return fmt.Errorf("forget prune progress %s: %w", k, err)
		}
	}
	return rows.Err()
}

func readPruneRequest(path, id string) (*PruneRequest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read request: %w", err)
	}
	var req PruneRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("request is not valid JSON: %w", err)
	}
	if req.ID != id {
		return nil, fmt.Errorf("request id %q does not match its file name (id %q)", req.ID, id)
	}
	return &req, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return b
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// writeFileDurably replaces path with data atomically and durably: a
// temporary file, fsync, rename, fsync of the folder. A reader sees the
// old file or the whole new one, and after a crash the new one survives
// (the request it answers is removed only afterwards).
func writeFileDurably(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
