package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/schema"
	"github.com/rs/zerolog"
)

// The backfills CoreScope runs for databases older than some columns
// (docs/reference/mqtt-formats.md §8), as one background Task:
//
//  1. tx_last_seen_backfill_v1: transmissions.last_seen (added later,
//     0 on old rows) from the newest observation of each transmission.
//     The schema migration marks it pending when it added the column to a
//     table with rows.
//  2. path_json_backfill_v1: observations.path_json from the
//     observation's raw_hex where it is NULL or empty.
//  3. from_pubkey_backfill_v1: transmissions.from_pubkey of adverts from
//     their raw_hex.
//  4. default_scope_backfill_v1: nodes.default_scope (and inactive_nodes')
//     from the newest scoped advert of the node, for nodes that have none;
//     after 3, which it reads.
//
// Each is tracked in _async_migrations as CoreScope tracks its own
// (pending_async, then done), walks its table once in windows of ids
// (primary-key range scans, however rare the rows to fix), and stores its
// cursor and its count in meshingest_state in the same transaction as the
// rows it fixed: a restart resumes where the last commit left off. Rows the
// writer inserts meanwhile need nothing, it fills these columns itself.
//
// One step holds the write lock for a few milliseconds, at most ten steps a
// second, and none at all while the writer is catching up on a backlog:
// the backlog comes first, these are one-time repairs. On a database the
// jobs first saw empty every row is the writer's own, so they are recorded
// done at once; elsewhere a backfill says it started only when it finds a
// row to fix. A backfill that changed path_json or from_pubkey has every
// observation's edges and path derived again (rederive.go).

const (
	backfillTxLastSeen   = schema.TxLastSeenBackfill // registered by the schema migration
	backfillPathJSON     = "path_json_backfill_v1"
	backfillFromPubkey   = "from_pubkey_backfill_v1"
	backfillDefaultScope = "default_scope_backfill_v1"

	backfillStatePrefix = "backfill:"
)

// backfillWindows: ids per step. Observations are the large table: a
// window of them is a short rowid range scan.
const (
	backfillTxWindow    = 500   // transmissions to fill last_seen for (by the partial index)
	backfillObsWindow   = 20000 // observation ids scanned per step
	backfillTxIDWindow  = 20000 // transmission ids scanned per step
	backfillNodesWindow = 500   // node rowids per step
)

type backfillProgress struct {
	Cursor  int64 `json:"cursor"`  // last id handled
	Upper   int64 `json:"upper"`   // last id that needs looking at
	Updated int64 `json:"updated"` // rows changed so far
}

type backfillPhase struct {
	name string
	// needed decides, the first time the backfill sees this database,
	// whether there can be anything to do; it must be cheap.
	needed func(ctx context.Context, tx writer.Tx) (bool, error)
	// upper is the last id worth scanning (0: the phase does not use it).
	upper func(ctx context.Context, tx writer.Tx) (int64, error)
	// step advances p by one window; done when nothing is left.
	step func(ctx context.Context, tx writer.Tx, p *backfillProgress) (done bool, err error)
}

type backfillTask struct {
	paths    *pathState
	log      zerolog.Logger
	count    func(name string, n int64)
	phases   []backfillPhase
	reported map[string]int64 // committed counts already handed to count
	allDone  bool
}

func newBackfillTask(paths *pathState, log zerolog.Logger, count func(string, int64)) *backfillTask {
	t := &backfillTask{paths: paths, log: log, count: count, reported: map[string]int64{}}
	t.phases = []backfillPhase{
		{backfillTxLastSeen, exists(`SELECT EXISTS (SELECT 1 FROM transmissions WHERE last_seen = 0)`), nil, stepTxLastSeen},
		{backfillPathJSON, needPathJSON, maxID("observations"), stepPathJSON},
		{backfillFromPubkey, exists(`SELECT EXISTS (SELECT 1 FROM transmissions)`), maxID("transmissions"), stepFromPubkey},
		{backfillDefaultScope, exists(`SELECT EXISTS (SELECT 1 FROM transmissions
			WHERE scope_name IS NOT NULL AND scope_name != '' AND payload_type = 4)`), maxNodeRowid, stepDefaultScope},
	}
	return t
}

func (t *backfillTask) Name() string { return "backfill" }

func (t *backfillTask) Interval() time.Duration {
	if t.allDone {
		return time.Hour // a database replaced under the writer is looked at again
	}
	return 100 * time.Millisecond
}

func (t *backfillTask) Step(ctx context.Context, tx writer.Tx, now time.Time) (bool, error) {
	if t.paths.catchingUp() {
		return false, nil
	}
	if err := t.paths.ensure(ctx, tx, now); err != nil {
		return false, err
	}
	t.allDone, t.paths.backfilled = false, false
	for i := range t.phases {
		ph := &t.phases[i]
		status, err := asyncStatus(ctx, tx, ph.name)
		if err != nil {
			return false, err
		}
		if err := t.report(ctx, tx, ph.name); err != nil {
			return false, err
		}
		switch status {
		case "done":
			continue
		case "":
			need := !t.paths.rd.fresh
			if need {
				if need, err = ph.needed(ctx, tx); err != nil {
					return false, fmt.Errorf("backfill %s: %w", ph.name, err)
				}
			}
			if !need {
				_, err := tx.ExecContext(ctx, `INSERT INTO _async_migrations (name, status, ended_at)
					VALUES (?, 'done', datetime('now'))`, ph.name)
				if err != nil {
					return false, fmt.Errorf("record backfill %s: %w", ph.name, err)
				}
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO _async_migrations (name, status) VALUES (?, 'pending_async')`, ph.name); err != nil {
				return false, fmt.Errorf("record backfill %s: %w", ph.name, err)
			}
			if err := forgetBackfillProgress(ctx, tx, ph.name); err != nil {
				return false, err
			}
		case "pending_async":
		default: // failed or cancelled by CoreScope's own run: try again
			if _, err := tx.ExecContext(ctx, `UPDATE _async_migrations SET status = 'pending_async', ended_at = NULL, error = NULL
				WHERE name = ?`, ph.name); err != nil {
				return false, fmt.Errorf("restart backfill %s: %w", ph.name, err)
			}
			if err := forgetBackfillProgress(ctx, tx, ph.name); err != nil {
				return false, err
			}
		}
		return false, t.advance(ctx, tx, ph)
	}
	t.allDone, t.paths.backfilled = true, true
	return false, nil
}

// StepEnded: a step that had the observations derived again and did not
// commit has the jobs' state loaded again.
func (t *backfillTask) StepEnded(committed bool) { t.paths.stepEnded(committed) }

// forgetBackfillProgress drops what an earlier run of a phase left in
// meshingest_state: a phase that starts again must measure the table again
// (an old cursor at an old upper bound would end it at once, fixing
// nothing).
func forgetBackfillProgress(ctx context.Context, tx writer.Tx, name string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM meshingest_state WHERE key = ?`, backfillStatePrefix+name); err != nil {
		return fmt.Errorf("restart backfill %s: %w", name, err)
	}
	return nil
}

// advance runs one window of a pending phase.
func (t *backfillTask) advance(ctx context.Context, tx writer.Tx, ph *backfillPhase) error {
	key := backfillStatePrefix + ph.name
	var p backfillProgress
	found, err := readStateJSON(ctx, tx, key, &p)
	if err != nil {
		return err
	}
	if !found && ph.upper != nil {
		if p.Upper, err = ph.upper(ctx, tx); err != nil {
			return fmt.Errorf("backfill %s: %w", ph.name, err)
		}
	}
	before := p.Updated
	done, err := ph.step(ctx, tx, &p)
	if err != nil {
		return fmt.Errorf("backfill %s: %w", ph.name, err)
	}
	if err := saveStateJSON(ctx, tx, key, p); err != nil {
		return fmt.Errorf("backfill %s: %w", ph.name, err)
	}
	if before == 0 && p.Updated > 0 {
		t.log.Info().Str("backfill", ph.name).Msg("database older than this column: backfill started in the background")
	}
	if done {
		if _, err := tx.ExecContext(ctx, `UPDATE _async_migrations SET status = 'done', ended_at = datetime('now'), error = NULL
			WHERE name = ?`, ph.name); err != nil {
			return fmt.Errorf("backfill %s: record completion: %w", ph.name, err)
		}
		if p.Updated > 0 {
			t.log.Info().Str("backfill", ph.name).Int64("rows", p.Updated).Msg("backfill complete")
		}
	}
	if p.Updated > before && (ph.name == backfillPathJSON || ph.name == backfillFromPubkey) {
		// What the observations give changed.
		t.paths.rd.markAll()
		return t.paths.rd.save(ctx, tx)
	}
	return nil
}

// report hands the committed progress of a phase to the stats.
func (t *backfillTask) report(ctx context.Context, tx writer.Tx, name string) error {
	var p backfillProgress
	found, err := readStateJSON(ctx, tx, backfillStatePrefix+name, &p)
	if err != nil {
		return err
	}
	prev, seen := t.reported[name]
	t.reported[name] = p.Updated
	// The first figure read after a start was counted by the process
	// that committed it; no progress row yet means nothing done.
	if (seen || !found) && p.Updated > prev && t.count != nil {
		t.count(name, p.Updated-prev)
	}
	return nil
}

func asyncStatus(ctx context.Context, tx writer.Tx, name string) (string, error) {
	var s string
	err := tx.QueryRowContext(ctx, `SELECT status FROM _async_migrations WHERE name = ?`, name).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read _async_migrations %s: %w", name, err)
	}
	return s, nil
}

func exists(query string) func(context.Context, writer.Tx) (bool, error) {
	return func(ctx context.Context, tx writer.Tx) (bool, error) {
		var b bool
		err := tx.QueryRowContext(ctx, query).Scan(&b)
		return b, err
	}
}

func maxID(table string) func(context.Context, writer.Tx) (int64, error) {
	return func(ctx context.Context, tx writer.Tx) (int64, error) {
		var n int64
		err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM `+table).Scan(&n)
		return n, err
	}
}

func maxNodeRowid(ctx context.Context, tx writer.Tx) (int64, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT MAX((SELECT COALESCE(MAX(rowid), 0) FROM nodes),
		(SELECT COALESCE(MAX(rowid), 0) FROM inactive_nodes))`).Scan(&n)
	return n, err
}

// stepTxLastSeen fills last_seen for the next transmissions still at 0
// (found through the partial index idx_tx_last_seen_zero). A transmission
// without observations keeps 0; the cursor moves past it.
func stepTxLastSeen(ctx context.Context, tx writer.Tx, p *backfillProgress) (bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM transmissions WHERE last_seen = 0 AND id > ? ORDER BY id LIMIT ?`,
		p.Cursor, backfillTxWindow)
	if err != nil {
		return false, err
	}
	var ids []any
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return false, err
		}
		ids = append(ids, id)
		p.Cursor = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	if len(ids) == 0 {
		return true, nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE transmissions
		SET last_seen = (SELECT MAX(timestamp) FROM observations WHERE transmission_id = transmissions.id)
		WHERE id IN (`+placeholders(len(ids))+`)
		  AND EXISTS (SELECT 1 FROM observations WHERE transmission_id = transmissions.id)`, ids...)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	p.Updated += n
	return len(ids) < backfillTxWindow, nil
}

// needPathJSON: CoreScope records its own run of this backfill; a database
// without observations has nothing to fix, and the writer fills path_json
// on every row it inserts.
func needPathJSON(ctx context.Context, tx writer.Tx) (bool, error) {
	var doneByCoreScope, any bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM _migrations WHERE name = 'backfill_path_json_from_raw_hex_v1')`).Scan(&doneByCoreScope); err != nil {
		return false, err
	}
	if doneByCoreScope {
		return false, nil
	}
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM observations)`).Scan(&any); err != nil {
		return false, err
	}
	return any, nil
}

// stepPathJSON fills path_json from raw_hex in the next window of
// observation ids. A row whose raw cannot be decoded is left as it is. The
// update is OR IGNORE: should the path make the row equal to another one
// of the same transmission and observer, the unique index keeps the other.
func stepPathJSON(ctx context.Context, tx writer.Tx, p *backfillProgress) (bool, error) {
	return fillFromRaw(ctx, tx, p, backfillObsWindow,
		`SELECT id, raw_hex FROM observations
		WHERE id > ? AND id <= ? AND (path_json IS NULL OR path_json = '') AND raw_hex IS NOT NULL AND raw_hex != ''`,
		`UPDATE OR IGNORE observations SET path_json = ? WHERE id = ?`,
		func(f decoder.Frame) (string, bool) { return f.PathJSON(), true })
}

// stepFromPubkey fills from_pubkey of the adverts in the next window of
// transmission ids, from their raw_hex.
func stepFromPubkey(ctx context.Context, tx writer.Tx, p *backfillProgress) (bool, error) {
	return fillFromRaw(ctx, tx, p, backfillTxIDWindow,
		`SELECT id, raw_hex FROM transmissions
		WHERE id > ? AND id <= ? AND payload_type = 4 AND from_pubkey IS NULL AND raw_hex != ''`,
		`UPDATE transmissions SET from_pubkey = ? WHERE id = ? AND from_pubkey IS NULL`,
		func(f decoder.Frame) (string, bool) {
			k := decoder.DecodePacket(f, decoder.Options{}).FromPubkey()
			return k.String, k.Valid
		})
}

// fillFromRaw is one step of a backfill that derives a column from
// raw_hex: it reads the (id, raw_hex) rows selectSQL picks in the window
// (cursor, cursor+window], derives each row's value (a row whose raw does
// not decode, or that derive declines, is left as it is), writes the
// values with updateSQL (value, id), counts the rows changed and moves
// the cursor. The reads finish before the writes begin: one connection
// cannot update a table it is still reading.
func fillFromRaw(ctx context.Context, tx writer.Tx, p *backfillProgress, window int64, selectSQL, updateSQL string, derive func(decoder.Frame) (string, bool)) (bool, error) {
	hi := min(p.Cursor+window, p.Upper)
	rows, err := tx.QueryContext(ctx, selectSQL, p.Cursor, hi)
	if err != nil {
		return false, err
	}
	type fix struct {
		id    int64
		value string
	}
	var fixes []fix
	for rows.Next() {
		var id int64
		var raw string
		if err := rows.Scan(&id, &raw); err != nil {
			rows.Close()
			return false, err
		}
		f, err := decoder.DecodeFrame(raw)
		if err != nil {
			continue
		}
		if v, ok := derive(f); ok {
			fixes = append(fixes, fix{id, v})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	for _, f := range fixes {
		res, err := tx.ExecContext(ctx, updateSQL, f.value, f.id)
		if err != nil {
			return false, err
		}
		n, _ := res.RowsAffected()
		p.Updated += n
	}
	p.Cursor = hi
	return hi >= p.Upper, nil
}

// stepDefaultScope gives the nodes of the next rowid window that have no
// default_scope the scope of their newest scoped advert (found through the
// from_pubkey index), in nodes and in inactive_nodes.
func stepDefaultScope(ctx context.Context, tx writer.Tx, p *backfillProgress) (bool, error) {
	hi := min(p.Cursor+backfillNodesWindow, p.Upper)
	for _, table := range []string{"nodes", "inactive_nodes"} {
		res, err := tx.ExecContext(ctx, `UPDATE `+table+` SET default_scope = (
				SELECT t.scope_name FROM transmissions t
				WHERE t.from_pubkey = `+table+`.public_key AND t.payload_type = 4
				  AND t.scope_name IS NOT NULL AND t.scope_name != ''
				ORDER BY t.first_seen DESC, t.id DESC LIMIT 1)
			WHERE rowid > ? AND rowid <= ? AND default_scope IS NULL
			  AND EXISTS (SELECT 1 FROM transmissions t
				WHERE t.from_pubkey = `+table+`.public_key AND t.payload_type = 4
				  AND t.scope_name IS NOT NULL AND t.scope_name != '')`, p.Cursor, hi)
		if err != nil {
			return false, err
		}
		n, _ := res.RowsAffected()
		p.Updated += n
	}
	p.Cursor = hi
	return hi >= p.Upper, nil
}
