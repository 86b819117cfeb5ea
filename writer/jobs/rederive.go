package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// The rule neighbor_edges and resolved_path follow (README.md, "The
// rule") is over every stored observation and the nodes table as it is
// now. An observation is derived when it is inserted,
// against the nodes known then; a node learned later (its first advert
// came after observations through it), or lost (a prune request,
// retention, an operator), changes what some stored observations give.
// rederiveTask derives exactly those again.
//
// Which ones: a node key K changes the candidates of the hops that are a
// prefix of K, and so the edges whose hop end is among E, the nodes
// sharing K's first byte (K itself included): every hop that is a prefix of
// one of them starts with K's first byte. The task measures every edge
// touching E again from scratch, over the observations that can give one
// (a hop starting with K's first byte, an advert by a node of E, an
// observer whose id is in E), then derives the resolved_path again of the
// observations whose path can read one of those edges or hops (a hop
// starting with K's first byte, an advert by a node of E). Nothing else
// changes: an edge with no end in E is given by the same observations with
// or without K, and a path whose hops all start with other bytes reads
// neither K's candidates nor the edges measured again.
//
// Phase 1 (edges) reads the observations by windows of ids up to the
// newest one, each step as long as rederiveStepTime, and writes the edges
// in the step that reads the last window, so that no batch comes between
// the count and its write. Phase 2 (paths) then rewrites the resolved_path
// that changed, up to the newest id at the end of phase 1 (later rows were
// derived with the new edges). The node index the windows use is the live
// one: a node learned meanwhile is recorded for the next pass, which
// measures again whatever edges it touches.
//
// Observations are found by reading the table, not through an index of
// hops: one more index of every observation would cost every insert (the
// jobs' goal is at most 15 % of the catch-up speed), while nodes are
// learned a few times a day. SQLite filters the rows (LIKE on path_json);
// a pass reads the observations once per phase (the cost is measured by
// BenchmarkRederive_*, figures in README.md).
//
// Every observation is derived again once (a full pass) in a database the
// jobs did not see throughout: one written by CoreScope or an older
// meshingest (edges by other rules), or one with observations newer than
// the newest the jobs derived (written with writer.jobs off, or by another
// program). One the jobs first saw empty is "fresh": nothing to do.
//
// The node keys still to be handled are kept in meshingest_state under
// paths_rederive ({"full","keys","through","fresh"}), written in the
// transaction that learned them, and cleared in the step that finishes
// their pass: a restart runs the pass again.

const (
	rederiveStateKey = "paths_rederive"
	// rederiveMaxKeys: more keys pending than this make a full pass (a
	// prune of hundreds of nodes; the state row stays small).
	rederiveMaxKeys = 256
	// rederiveStepTime is about how long one step reads (it holds the
	// write lock); the step that writes the edges takes longer.
	rederiveStepTime = 50 * time.Millisecond
	// rederiveWindow is how many observation ids one query reads.
	rederiveWindow = 4096
	// rederiveMaxPatterns: above this many distinct first bytes SQLite
	// returns every row of a window and Go filters them.
	rederiveMaxPatterns = 8
)

// rederiveState is what is to be derived again, and the pass doing it.
type rederiveState struct {
	pending map[string]bool // node keys learned or lost since their observations were derived
	full    bool            // every observation is to be derived again
	through int64           // the newest observation id the jobs derived
	// kept is through as last committed, for a rollback.
	kept int64
	// fresh: the jobs saw the database without observations, so every
	// row in it was written by this writer (the backfills have nothing
	// to do).
	fresh bool
	pass  *rederivePass

	// version counts changes of pending; saved is the version the
	// state row holds once the transaction that wrote it commits.
	version, saved, saving int64
	// inBatch are the keys the open batch added to pending.
	inBatch []string
}

type rederiveStored struct {
	Full    bool     `json:"full,omitempty"`
	Keys    []string `json:"keys"`
	Through int64    `json:"through"`
	Fresh   bool     `json:"fresh,omitempty"`
}

// loadRederiveState reads what is still to do; a database without the
// row is new (nothing), or older than this rule (everything), and one
// with observations newer than the row says has some the jobs did not see
// (everything).
func loadRederiveState(ctx context.Context, tx writer.Tx, log zerolog.Logger) (rederiveState, error) {
	rd := rederiveState{pending: map[string]bool{}}
	top, err := maxObservationID(ctx, tx)
	if err != nil {
		return rd, err
	}
	var st rederiveStored
	found, err := readStateJSON(ctx, tx, rederiveStateKey, &st)
	if err != nil {
		return rd, err
	}
	rd.full, rd.through, rd.kept, rd.fresh = st.Full, top, top, st.Fresh
	for _, k := range st.Keys {
		rd.pending[k] = true
	}
	switch {
	case !found:
		rd.full, rd.fresh = top > 0, top == 0
		rd.version = 1 // write the row
	case top > st.Through && !st.Full:
		log.Info().Int64("through", st.Through).Int64("newest", top).
			Msg("the database has observations the jobs did not derive (writer.jobs was off, or another program wrote them): all are derived again")
		rd.full = true
		rd.version = 1
	}
	return rd, nil
}

// Settled reports whether the jobs have nothing left to derive again in
// the database (only then are neighbor_edges and resolved_path final after
// a drain); a database without their state row has never had the jobs.
// For tools and tests that compare databases.
func Settled(ctx context.Context, db writer.Tx) (bool, error) {
	var st rederiveStored
	found, err := readStateJSON(ctx, db, rederiveStateKey, &st)
	return !found || (!st.Full && len(st.Keys) == 0), err
}

// derived records the newest observation id a batch derived (next is the
// id the next row will get).
func (rd *rederiveState) derived(next int64) {
	if next-1 != rd.through {
		rd.through = next - 1
		rd.version++
	}
}

// mark records that the observations through key are to be derived again.
func (rd *rederiveState) mark(key string) {
	if rd.full || rd.pending[key] {
		return
	}
	rd.version++
	if len(rd.pending) >= rederiveMaxKeys {
		rd.full = true
		clear(rd.pending)
		return
	}
	rd.pending[key] = true
}

// markAll records that every observation is to be derived again.
func (rd *rederiveState) markAll() {
	if !rd.full {
		rd.full = true
		clear(rd.pending)
		rd.version++
	}
}

// markInBatch is mark for a key the open batch learned: a rollback takes
// it back.
func (rd *rederiveState) markInBatch(key string) {
	if rd.full || rd.pending[key] {
		return
	}
	rd.mark(key)
	rd.inBatch = append(rd.inBatch, key)
}

// save writes the state row when it changed; committed or rolledBack says
// what became of the transaction.
func (rd *rederiveState) save(ctx context.Context, tx writer.Tx) error {
	if rd.version == rd.saved {
		return nil
	}
	st := rederiveStored{Full: rd.full, Keys: []string{}, Through: rd.through, Fresh: rd.fresh}
	for k := range rd.pending {
		st.Keys = append(st.Keys, k)
	}
	if ps := rd.pass; ps != nil {
		st.Full = st.Full || ps.full
		st.Keys = append(st.Keys, ps.keys...)
	}
	slices.Sort(st.Keys)
	st.Keys = slices.Compact(st.Keys)
	if err := saveStateJSON(ctx, tx, rederiveStateKey, st); err != nil {
		return err
	}
	rd.saving = rd.version
	return nil
}

func (rd *rederiveState) committed() {
	if rd.saving != 0 {
		rd.saved, rd.saving = rd.saving, 0
	}
	rd.inBatch = rd.inBatch[:0]
	rd.kept = rd.through
}

func (rd *rederiveState) rolledBack() {
	for _, k := range rd.inBatch {
		delete(rd.pending, k)
	}
	rd.inBatch = rd.inBatch[:0]
	rd.saving = 0
	rd.through = rd.kept
}

// idle reports whether nothing is left to derive again or to record.
func (rd *rederiveState) idle() bool {
	return rd.pass == nil && !rd.full && len(rd.pending) == 0 && rd.version == rd.saved
}

// rederivePass is one pass over the observations for the keys it took.
type rederivePass struct {
	keys []string
	full bool
	// inE: the vertices whose edges are measured again (all when full).
	inE map[uint32]bool
	// bytes: the first bytes of the keys; a hop starting with one of
	// them may resolve otherwise now.
	bytes      [256]bool
	advertiser map[string]bool // E's keys: their adverts anchor paths and give edges
	observers  map[int64]bool  // rowids of observers whose id is in E
	// where is the SQL that narrows a window's rows (with args), for
	// phase 1 and phase 2; empty: every row.
	where      [2]string
	whereArgs  [2][]any
	phase      int   // 1: edges, 2: paths
	cursor     int64 // the last id read
	until      int64 // phase 2: the last id to read
	tally      map[uint64]*edgeTally
	rows       []storedObservation // the window being read
	vertexOf   map[int64]uint32    // observer rowid → vertex
	started    time.Time
	readRows   int64
	matched    int64
	edgesSet   int
	edgesGone  int
	pathsSet   int64
	startedLog bool
}

// edgeTally is an edge as phase 1 measures it.
type edgeTally struct {
	count, lastSeen, firstObs int64
}

// rederiveTask runs the passes, one step at a time, between batches, and
// none while the writer is catching up on a backlog (the nodes the backlog
// teaches are then handled in one pass after it) or while a backfill
// still changes the observations it reads. Under live traffic a pass
// starts at most rederiveLiveGap after the last one ended (livePassWaits).
type rederiveTask struct{ p *pathState }

// A pass costs about the same for one key as for many: it reads the
// observations once per phase. A mesh learns a node a few times a day, but
// a new region or a generator teaches several a second, and passes back
// to back were nearly half of a writer's CPU under live traffic (the
// harness's steady scenario; figures in docs/harness-report.md). So while
// batches keep coming, the keys learned meanwhile wait up to
// rederiveLiveGap and are taken in one pass; once the writer has been
// without a batch for rederiveQuiet, a pass starts at once.
const (
	rederiveLiveGap = 30 * time.Second
	rederiveQuiet   = 2 * time.Second
)

// livePassWaits reports whether the next pass waits for rederiveLiveGap:
// batches are still coming and the last pass ended less than that ago.
func (p *pathState) livePassWaits(now time.Time) bool {
	return !p.lastPassEnd.IsZero() && now.Sub(p.lastPassEnd) < rederiveLiveGap && now.Sub(p.lastBatchAt) < rederiveQuiet
}

func (t rederiveTask) Name() string            { return "paths-rederive" }
func (t rederiveTask) Interval() time.Duration { return time.Second }

func (t rederiveTask) StepEnded(committed bool) { t.p.stepEnded(committed) }

func (t rederiveTask) Step(ctx context.Context, tx writer.Tx, now time.Time) (bool, error) {
	p := t.p
	if err := p.ensure(ctx, tx, now); err != nil {
		return false, err
	}
	rd := &p.rd
	if rd.pass == nil {
		if rd.idle() {
			p.settled.Store(p.commits.Load())
			return false, nil
		}
		if err := rd.save(ctx, tx); err != nil {
			return false, err
		}
		if !rd.full && len(rd.pending) == 0 {
			return false, nil
		}
		if p.catchingUp() || !p.backfilled || p.livePassWaits(time.Now()) {
			return false, nil
		}
		return true, p.startPass(ctx, tx)
	}
	if p.catchingUp() {
		return false, nil
	}
	deadline := time.Now().Add(rederiveStepTime)
	ps := rd.pass
	if ps.phase == 1 {
		return true, p.rederiveEdges(ctx, tx, now, deadline)
	}
	done, err := p.rederivePaths(ctx, tx, deadline)
	if err != nil || !done {
		return true, err
	}
	p.log.Info().Int("keys", len(ps.keys)).Bool("all", ps.full).Int64("observations_read", ps.readRows).
		Int64("observations_matched", ps.matched).Int("edges_written", ps.edgesSet).Int("edges_deleted", ps.edgesGone).
		Int64("paths_rewritten", ps.pathsSet).Int64("took_ms", time.Since(ps.started).Milliseconds()).
		Msg("neighbor_edges and resolved_path derived again for nodes learned or lost")
	rd.pass = nil
	p.lastPassEnd = time.Now()
	rd.version++
	return true, rd.save(ctx, tx)
}

// startPass takes the pending keys and works out what they touch.
func (p *pathState) startPass(ctx context.Context, tx writer.Tx) error {
	rd := &p.rd
	ps := &rederivePass{full: rd.full, phase: 1, tally: map[uint64]*edgeTally{}, started: time.Now()}
	for k := range rd.pending {
		ps.keys = append(ps.keys, k)
	}
	slices.Sort(ps.keys)
	clear(rd.pending)
	rd.full = false
	rd.pass = ps
	if err := p.loadObserverVertices(ctx, tx, ps); err != nil {
		return err
	}
	if ps.full {
		p.log.Info().Msg("deriving neighbor_edges and resolved_path of every observation again against the nodes table (once, for a database older than this rule)")
		return nil
	}
	ps.inE, ps.advertiser, ps.observers = map[uint32]bool{}, map[string]bool{}, map[int64]bool{}
	for _, k := range ps.keys {
		ps.inE[p.graph.names.id(k)] = true
		b, ok := hexByte(k)
		if !ok {
			continue
		}
		ps.bytes[b] = true
		for _, c := range p.index.candidates([]byte(k[:2])) {
			ps.inE[c] = true
		}
	}
	for v := range ps.inE {
		ps.advertiser[p.graph.names.name(v)] = true
	}
	for rowid, v := range ps.vertexOf {
		if ps.inE[v] {
			ps.observers[rowid] = true
		}
	}
	ps.where, ps.whereArgs = ps.sqlFilters()
	return nil
}

// sqlFilters is the WHERE clause that narrows a window to the rows the Go
// filter (rederivePass.wants) may keep, for each phase.
func (ps *rederivePass) sqlFilters() (where [2]string, args [2][]any) {
	var patterns []any
	for b := range ps.bytes {
		if ps.bytes[b] {
			patterns = append(patterns, fmt.Sprintf(`%%"%02X%%`, b)) // LIKE ignores ASCII case
		}
	}
	if len(patterns) > rederiveMaxPatterns {
		return where, args
	}
	var keys []any
	for k := range ps.advertiser {
		keys = append(keys, k, strings.ToUpper(k))
	}
	slices.SortFunc(keys, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
	for phase := range 2 {
		var or []string
		var a []any
		param := func() string { return fmt.Sprintf("?%d", 3+len(a)) }
		for _, pat := range patterns {
			or = append(or, "path_json LIKE "+param())
			a = append(a, pat)
		}
		if len(keys) > 0 {
			var ps []string
			for _, k := range keys {
				ps = append(ps, param())
				a = append(a, k)
			}
			or = append(or, `transmission_id IN (SELECT id FROM transmissions WHERE from_pubkey IN (`+strings.Join(ps, ", ")+`))`)
		}
		if phase == 0 {
			var ids []string
			for rowid := range ps.observers {
				ids = append(ids, fmt.Sprint(rowid))
			}
			slices.Sort(ids)
			if len(ids) > 0 {
				or = append(or, "observer_idx IN ("+strings.Join(ids, ", ")+")")
			}
		}
		if len(or) == 0 {
			or = []string{"0"}
		}
		where[phase], args[phase] = "AND ("+strings.Join(or, " OR ")+")", a
	}
	return where, args
}

// loadObserverVertices maps the observers' rowids to vertices.
func (p *pathState) loadObserverVertices(ctx context.Context, tx writer.Tx, ps *rederivePass) error {
	rows, err := tx.QueryContext(ctx, `SELECT rowid, id FROM observers`)
	if err != nil {
		return fmt.Errorf("read observers: %w", err)
	}
	defer rows.Close()
	ps.vertexOf = map[int64]uint32{}
	for rows.Next() {
		var rowid int64
		var id string
		if err := rows.Scan(&rowid, &id); err != nil {
			return fmt.Errorf("read observers: %w", err)
		}
		ps.vertexOf[rowid] = p.graph.names.id(strings.ToLower(id))
	}
	return rows.Err()
}

// storedObservation is a row as a pass reads it.
type storedObservation struct {
	id, ts       int64
	path         string
	observer     sql.NullInt64
	resolvedPath sql.NullString
	advert       bool
	from         string // lower-case; adverts only
}

const rederiveSelect = `WITH m AS MATERIALIZED (
		SELECT id, transmission_id, observer_idx, path_json, timestamp, resolved_path FROM observations
		WHERE id > ?1 AND id <= ?2 %s)
	SELECT m.id, m.timestamp, COALESCE(m.path_json, ''), m.observer_idx, m.resolved_path,
		COALESCE(t.payload_type, -1), COALESCE(t.from_pubkey, '')
	FROM m LEFT JOIN transmissions t ON t.id = m.transmission_id`

// readWindow reads the rows of (lo, hi] the phase's SQL filter passes; the
// rows are read to the end before anything else runs on the connection.
func (p *pathState) readWindow(ctx context.Context, tx writer.Tx, ps *rederivePass, phase int, lo, hi int64, out []storedObservation) ([]storedObservation, error) {
	args := append([]any{lo, hi}, ps.whereArgs[phase-1]...)
	rows, err := tx.QueryContext(ctx, fmt.Sprintf(rederiveSelect, ps.where[phase-1]), args...)
	if err != nil {
		return out, fmt.Errorf("read observations %d-%d: %w", lo+1, hi, err)
	}
	defer rows.Close()
	out = out[:0]
	for rows.Next() {
		var o storedObservation
		var ptype int
		if err := rows.Scan(&o.id, &o.ts, &o.path, &o.observer, &o.resolvedPath, &ptype, &o.from); err != nil {
			return out, fmt.Errorf("read observations %d-%d: %w", lo+1, hi, err)
		}
		o.advert = ptype == 4 // ADVERT
		if o.advert {
			o.from = strings.ToLower(o.from)
		} else {
			o.from = ""
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read observations %d-%d: %w", lo+1, hi, err)
	}
	ps.readRows += int64(len(out))
	return out, nil
}

// wants reports whether the observation can give an edge touching E
// (phase 1) or read a hop or an edge the pass changes (phase 2).
func (ps *rederivePass) wants(o *storedObservation, hops []hop, phase int) bool {
	if ps.full {
		return true
	}
	for i := range hops {
		if b, ok := hexByte(hops[i].prefix()); ok && ps.bytes[b] {
			return true
		}
	}
	if o.advert && ps.advertiser[o.from] {
		return true
	}
	return phase == 1 && o.observer.Valid && ps.observers[o.observer.Int64]
}

func (ps *rederivePass) touches(a, b uint32) bool { return ps.full || ps.inE[a] || ps.inE[b] }

// vertices are the advertiser and the observer of a stored observation.
func (p *pathState) vertices(ctx context.Context, tx writer.Tx, ps *rederivePass, o *storedObservation) (from, observer uint32, err error) {
	from, observer = noNode, noNode
	if o.from != "" {
		from = p.graph.names.id(o.from)
	}
	if o.observer.Valid {
		v, ok := ps.vertexOf[o.observer.Int64]
		if !ok { // an observer created since the pass began
			if err := p.loadObserverVertices(ctx, tx, ps); err != nil {
				return from, observer, err
			}
			v, ok = ps.vertexOf[o.observer.Int64]
		}
		if ok {
			observer = v
		}
	}
	return from, observer, nil
}

// nextObservationID is the id SQLite gives the next observation row: the
// table is AUTOINCREMENT (sqlite_sequence), and every row an INSERT
// offers takes one, a row the upsert turns into an update included.
func nextObservationID(ctx context.Context, tx writer.Tx) (int64, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'observations'), 0),
		COALESCE((SELECT MAX(id) FROM observations), 0)) + 1`).Scan(&n)
	if err != nil { // no sqlite_sequence: no AUTOINCREMENT table
		top, err := maxObservationID(ctx, tx)
		return top + 1, err
	}
	return n, nil
}

// forWanted hands fn each row of (ps.cursor, hi] the phase wants, with its
// hops, advertiser and observer. The rows are read to the end first: fn
// may not query.
func (p *pathState) forWanted(ctx context.Context, tx writer.Tx, ps *rederivePass, phase int, hi int64,
	fn func(o *storedObservation, hops []hop, from, observer uint32)) error {
	var err error
	if ps.rows, err = p.readWindow(ctx, tx, ps, phase, ps.cursor, hi, ps.rows); err != nil {
		return err
	}
	for i := range ps.rows {
		o := &ps.rows[i]
		hops := parsePathJSON(o.path, &p.hops)
		if !ps.wants(o, hops, phase) {
			continue
		}
		ps.matched++
		from, observer, err := p.vertices(ctx, tx, ps, o)
		if err != nil {
			return err
		}
		fn(o, hops, from, observer)
	}
	return nil
}

// count adds observation o to edge k's tally.
func (ps *rederivePass) count(k uint64, o *storedObservation) {
	t := ps.tally[k]
	if t == nil {
		t = &edgeTally{firstObs: o.id}
		ps.tally[k] = t
	}
	t.count++
	t.lastSeen = max(t.lastSeen, o.ts)
	t.firstObs = min(t.firstObs, o.id)
}

func maxObservationID(ctx context.Context, tx writer.Tx) (int64, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM observations`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read the newest observation id: %w", err)
	}
	return n, nil
}

// rederiveEdges measures the edges touching E in the next windows; when it
// has read the newest observation it writes them.
func (p *pathState) rederiveEdges(ctx context.Context, tx writer.Tx, now, deadline time.Time) error {
	ps := p.rd.pass
	for {
		top, err := maxObservationID(ctx, tx)
		if err != nil {
			return err
		}
		if ps.cursor >= top {
			if err := p.writeEdges(ctx, tx, now); err != nil {
				return err
			}
			ps.phase, ps.cursor, ps.until = 2, 0, top
			return nil
		}
		hi := min(ps.cursor+rederiveWindow, top)
		err = p.forWanted(ctx, tx, ps, 1, hi, func(o *storedObservation, hops []hop, from, observer uint32) {
			edges, n := p.observationEdges(hops, o.advert, from, observer)
			for _, e := range edges[:n] {
				if ps.touches(e[0], e[1]) {
					ps.count(pairKey(e[0], e[1]), o)
				}
			}
		})
		if err != nil {
			return err
		}
		ps.cursor = hi
		if time.Now().After(deadline) {
			return nil
		}
	}
}

// storedEdge is a neighbor_edges row.
type storedEdge struct {
	rowid    int64
	count    int64
	lastSeen string
}

// writeEdges replaces every edge touching E, in the table and in memory,
// with what phase 1 measured: an edge no observation gives any more, or
// none younger than the age-out (retention would delete it), goes.
func (p *pathState) writeEdges(ctx context.Context, tx writer.Tx, now time.Time) error {
	ps := p.rd.pass
	g := p.graph
	stored, err := p.storedEdges(ctx, tx, ps)
	if err != nil {
		return err
	}
	keys := make([]uint64, 0, len(ps.tally)+len(stored))
	for k := range ps.tally {
		keys = append(keys, k)
	}
	for k := range stored {
		if ps.tally[k] == nil {
			keys = append(keys, k)
		}
	}
	for k := range g.edges {
		if ps.touches(uint32(k>>32), uint32(k)) && ps.tally[k] == nil && stored[k] == nil {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	save, err := tx.PrepareContext(ctx, saveStateSQL)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer save.Close()
	saveChunk, err := tx.PrepareContext(ctx, saveOriginsSQL)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer saveChunk.Close()
	var origins edgeOrigins
	cutoff := now.Unix() - g.maxAge
	var gone []int64
	for _, k := range keys {
		a, b := g.names.name(uint32(k>>32)), g.names.name(uint32(k))
		if a > b {
			a, b = b, a
		}
		t, row := ps.tally[k], stored[k]
		if t == nil || t.lastSeen < cutoff {
			if row != nil {
				if _, err := tx.ExecContext(ctx, `DELETE FROM neighbor_edges WHERE rowid = ?`, row.rowid); err != nil {
					return fmt.Errorf("delete neighbor edge %s–%s: %w", a, b, err)
				}
				gone = append(gone, row.rowid)
				ps.edgesGone++
			}
			if _, ok := g.edges[k]; ok {
				g.drop(k)
			}
			continue
		}
		seen := writer.FormatSeconds(t.lastSeen)
		rowid := int64(0)
		switch {
		case row != nil && row.count == t.count && row.lastSeen == seen:
			rowid = row.rowid
		case row != nil:
			rowid = row.rowid
			if _, err := tx.ExecContext(ctx, `UPDATE neighbor_edges SET count = ?, last_seen = ? WHERE rowid = ?`, t.count, seen, rowid); err != nil {
				return fmt.Errorf("update neighbor edge %s–%s: %w", a, b, err)
			}
			ps.edgesSet++
		default:
			res, err := tx.ExecContext(ctx, `INSERT INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?, ?, ?, ?)`, a, b, t.count, seen)
			if err != nil {
				return fmt.Errorf("insert neighbor edge %s–%s: %w", a, b, err)
			}
			if rowid, err = res.LastInsertId(); err != nil {
				return fmt.Errorf("insert neighbor edge %s–%s: %w", a, b, err)
			}
			ps.edgesSet++
		}
		prev, had := g.edges[k]
		g.replace(k, edgeState{lastSeen: t.lastSeen, firstObs: t.firstObs, rowid: rowid})
		if !had || prev.firstObs != t.firstObs || prev.rowid != rowid {
			if err := origins.add(g, k); err != nil {
				return err
			}
		}
	}
	ps.tally = nil
	if err := origins.save(ctx, save, saveChunk); err != nil {
		return err
	}
	return deleteEdgeOrigins(ctx, tx, gone)
}

// storedEdges reads the neighbor_edges rows touching E (every row for a
// full pass), including those too old to be in memory. A row whose names
// are not lower-case is not one the rule gives: a full pass deletes it.
func (p *pathState) storedEdges(ctx context.Context, tx writer.Tx, ps *rederivePass) (map[uint64]*storedEdge, error) {
	q := `SELECT rowid, node_a, node_b, COALESCE(count, 0), COALESCE(last_seen, '') FROM neighbor_edges`
	var args []any
	if !ps.full {
		var names []string
		for v := range ps.inE {
			names = append(names, p.graph.names.name(v))
		}
		slices.Sort(names)
		for _, n := range names {
			args = append(args, n)
		}
		in := placeholders(len(names))
		q += ` WHERE node_a IN (` + in + `) OR node_b IN (` + in + `)`
		args = append(args, args...)
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read neighbor_edges: %w", err)
	}
	defer rows.Close()
	out := map[uint64]*storedEdge{}
	for rows.Next() {
		var e storedEdge
		var a, b string
		if err := rows.Scan(&e.rowid, &a, &b, &e.count, &e.lastSeen); err != nil {
			return nil, fmt.Errorf("read neighbor_edges: %w", err)
		}
		k := pairKey(p.graph.names.id(a), p.graph.names.id(b))
		if prev := out[k]; prev != nil { // two rows of one pair in other cases
			if _, err := tx.ExecContext(ctx, `DELETE FROM neighbor_edges WHERE rowid = ?`, prev.rowid); err != nil {
				return nil, err
			}
		}
		out[k] = &e
	}
	return out, rows.Err()
}

// rederivePaths writes, in the next windows, the resolved_path of the
// observations whose path the pass may change; done when it passed the
// newest observation phase 1 saw.
func (p *pathState) rederivePaths(ctx context.Context, tx writer.Tx, deadline time.Time) (bool, error) {
	ps := p.rd.pass
	type rewrite struct {
		id   int64
		path sql.NullString
	}
	var fixes []rewrite
	for ps.cursor < ps.until {
		hi := min(ps.cursor+rederiveWindow, ps.until)
		fixes = fixes[:0]
		err := p.forWanted(ctx, tx, ps, 2, hi, func(o *storedObservation, hops []hop, from, _ uint32) {
			want := sql.NullString{}
			if len(hops) > 0 {
				p.res = p.resolveHops(hops, from, o.ts, o.id, p.res)
				if buf, ok := p.appendResolvedPath(p.buf[:0], p.res); ok {
					p.buf = buf
					want = sql.NullString{String: string(buf), Valid: true}
				}
			}
			if want != o.resolvedPath {
				fixes = append(fixes, rewrite{o.id, want})
			}
		})
		if err != nil {
			return false, err
		}
		for _, f := range fixes {
			if _, err := tx.ExecContext(ctx, `UPDATE observations SET resolved_path = ? WHERE id = ?`, f.path, f.id); err != nil {
				return false, fmt.Errorf("rewrite resolved_path of observation %d: %w", f.id, err)
			}
		}
		ps.pathsSet += int64(len(fixes))
		ps.cursor = hi
		if time.Now().After(deadline) {
			break
		}
	}
	return ps.cursor >= ps.until, nil
}
