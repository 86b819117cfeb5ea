package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/meshingest/meshingest/writer"
)

// neighbor_edges (docs/reference/mqtt-formats.md §8): every stored
// observation can say that two nodes heard each other directly.
//
//   - A zero-hop ADVERT: the advertising node and the observer.
//   - An ADVERT with hops: the advertising node and its first hop.
//   - Any packet with hops: the observer and the last hop.
//
// A hop counts only when exactly one node of the nodes table has its
// prefix (no context, unlike resolved_path), and never when it is the other
// end itself. The pair is stored with node_a ≤ node_b, count is the number
// of observation rows that gave it, and last_seen the newest of their
// receive times (RFC 3339).
//
// The table is kept equal to that rule applied to every stored
// observation against the nodes table as it is now (rederive.go): each new
// observation row adds its edges in the transaction that inserts it, with
// the nodes known at that moment, and a node learned or lost later has the
// observations it changes derived again. CoreScope a06ac8a instead rescans
// the observations every 60 s with an overlapping time window, against the
// nodes known then, and never looks at an observation again.
//
// A repeated report of an observation (the same transmission, observer and
// path) updates the existing row and adds no edge, exactly as a rescan of
// the table would see it.

// names interns the graph's vertices, node keys and observer ids (both
// lower-case), as dense ids.
type names struct {
	ids  map[string]uint32
	list []string
	// plain[id]: the name needs no escaping in JSON (hex keys, the
	// normal case), so it is copied as it is.
	plain []bool
}

func newNames() names { return names{ids: map[string]uint32{}} }

// id returns the id of s, adding it when new.
func (n *names) id(s string) uint32 {
	if id, ok := n.ids[s]; ok {
		return id
	}
	id := uint32(len(n.list))
	n.ids[s] = id
	n.list = append(n.list, s)
	n.plain = append(n.plain, plainJSON(s))
	return id
}

func (n *names) lookup(s string) (uint32, bool) {
	id, ok := n.ids[s]
	return id, ok
}

func (n *names) name(id uint32) string { return n.list[id] }

// neighbourGraph is neighbor_edges in memory: which vertices are adjacent,
// since which observation and until when. For resolving an observation an
// edge counts when an earlier observation (a smaller id) gave it and it is
// younger than the age-out (neighborEdgesMaxAgeDays) at the observation's
// receive time, which is what the table held when the observation was
// stored while retention keeps up; older edges are dropped from memory by
// sweep.
type neighbourGraph struct {
	names  names
	edges  map[uint64]edgeState // by pairKey
	adj    [][]uint32           // by vertex id
	maxAge int64                // seconds
}

// edgeState is one edge as the graph knows it.
type edgeState struct {
	lastSeen int64 // unix seconds
	// firstObs is the id of the first observation that gave the edge (0:
	// not known, as for edges a database held before this version: the
	// edge then counts for every observation until a re-derivation
	// measures it).
	firstObs int64
	// rowid of its neighbor_edges row when known (0: not known), so the
	// next batch updates the row without a search of the (node_a,
	// node_b) index. Checked against the pair on every update: a row
	// deleted by retention, or a rowid of a rolled-back insert, is never
	// mistaken for another pair.
	rowid int64
}

func newNeighbourGraph(maxAgeDays int) *neighbourGraph {
	return &neighbourGraph{names: newNames(), edges: map[uint64]edgeState{}, maxAge: int64(maxAgeDays) * 86400}
}

// pairKey identifies an undirected edge by its two vertex ids.
func pairKey(a, b uint32) uint64 {
	if a > b {
		a, b = b, a
	}
	return uint64(a)<<32 | uint64(b)
}

// adjacent reports whether a and b share an edge that counts for the
// observation with id obs received at ts: given by an earlier observation,
// and not aged out at ts.
func (g *neighbourGraph) adjacent(a, b uint32, ts, obs int64) bool {
	e, ok := g.edges[pairKey(a, b)]
	return ok && e.firstObs < obs && e.lastSeen >= ts-g.maxAge
}

// neighbours lists the vertices sharing an edge with a (aged-out edges
// included until the next sweep; check adjacent).
func (g *neighbourGraph) neighbours(a uint32) []uint32 {
	if int(a) >= len(g.adj) {
		return nil
	}
	return g.adj[a]
}

// edgeUndo restores one edge as it was before a batch touched it.
type edgeUndo struct {
	key     uint64
	prev    edgeState
	existed bool
}

// touch records that observation obs, received at ts, gave the edge a–b,
// and returns how to undo it.
func (g *neighbourGraph) touch(a, b uint32, ts, obs int64) edgeUndo {
	k := pairKey(a, b)
	prev, existed := g.edges[k]
	if !existed {
		g.link(a, b)
		g.link(b, a)
		g.edges[k] = edgeState{lastSeen: ts, firstObs: obs}
	} else if ts > prev.lastSeen {
		e := prev
		e.lastSeen = ts
		g.edges[k] = e
	}
	return edgeUndo{key: k, prev: prev, existed: existed}
}

// set loads an edge as stored.
func (g *neighbourGraph) set(a, b uint32, ts, rowid int64) {
	k := pairKey(a, b)
	if prev, ok := g.edges[k]; ok {
		prev.lastSeen = max(prev.lastSeen, ts)
		g.edges[k] = prev
		return
	}
	g.edges[k] = edgeState{lastSeen: ts, rowid: rowid}
	g.link(a, b)
	g.link(b, a)
}

// replace sets an edge to what a re-derivation measured.
func (g *neighbourGraph) replace(k uint64, e edgeState) {
	if _, ok := g.edges[k]; !ok {
		a, b := uint32(k>>32), uint32(k)
		g.link(a, b)
		g.link(b, a)
	}
	g.edges[k] = e
}

func (g *neighbourGraph) undo(u edgeUndo) {
	if u.existed {
		g.edges[u.key] = u.prev
		return
	}
	g.drop(u.key)
}

func (g *neighbourGraph) drop(k uint64) {
	delete(g.edges, k)
	a, b := uint32(k>>32), uint32(k)
	g.unlink(a, b)
	g.unlink(b, a)
}

func (g *neighbourGraph) link(a, b uint32) {
	for int(a) >= len(g.adj) {
		g.adj = append(g.adj, nil)
	}
	g.adj[a] = append(g.adj[a], b)
}

func (g *neighbourGraph) unlink(a, b uint32) {
	if int(a) < len(g.adj) {
		if i := slices.Index(g.adj[a], b); i >= 0 {
			g.adj[a] = slices.Delete(g.adj[a], i, i+1)
		}
	}
}

// sweep forgets the edges last seen before cutoff and returns the rowids
// of their rows (0 where not known).
func (g *neighbourGraph) sweep(cutoff int64) []int64 {
	var old []uint64
	var rowids []int64
	for k, e := range g.edges {
		if e.lastSeen < cutoff {
			old = append(old, k)
			rowids = append(rowids, e.rowid)
		}
	}
	for _, k := range old {
		g.drop(k)
	}
	return rowids
}

// edgeDelta is what one batch adds to one neighbor_edges row.
type edgeDelta struct {
	key      uint64
	a, b     uint32 // node_a ≤ node_b as strings
	count    int64
	lastSeen int64
	// created: the batch created the edge; origin is the observation
	// that did (its id as predicted, checked when the batch is flushed).
	created bool
	origin  obsRef
}

// obsRef names an observation row of the open batch: its predicted id,
// and its unique key to look the id up by when the prediction failed.
type obsRef struct {
	id           int64
	transmission int64
	observer     sql.NullInt64
	path         string
}

// edgeBatch aggregates a batch's edges, one upsert per pair at the end.
type edgeBatch struct {
	index  map[uint64]int32 // pairKey → position in deltas
	deltas []edgeDelta      // first-touch order, for a deterministic flush
}

func newEdgeBatch() edgeBatch { return edgeBatch{index: map[uint64]int32{}} }

func (e *edgeBatch) len() int { return len(e.deltas) }

func (e *edgeBatch) add(g *neighbourGraph, a, b uint32, ts int64, created bool, origin *obsRef) {
	k := pairKey(a, b)
	i, ok := e.index[k]
	if !ok {
		if g.names.name(a) > g.names.name(b) {
			a, b = b, a
		}
		i = int32(len(e.deltas))
		e.index[k] = i
		e.deltas = append(e.deltas, edgeDelta{key: k, a: a, b: b, lastSeen: ts, created: created})
		if created {
			e.deltas[i].origin = *origin
		}
	}
	d := &e.deltas[i]
	d.count++
	d.lastSeen = max(d.lastSeen, ts)
}

func (e *edgeBatch) reset() {
	clear(e.index)
	e.deltas = e.deltas[:0]
}

// The statements that write a batch's edges. A pair the writer knows the
// row of is updated by rowid: no search of the (node_a, node_b) index. A
// new pair is inserted. A pair stored but not loaded (older than the
// age-out at start, or written in another case) is updated by its key and
// its rowid read once.
const (
	insertEdgeSQL = `INSERT OR IGNORE INTO neighbor_edges (node_a, node_b, count, last_seen) VALUES (?1, ?2, ?3, ?4)`
	// The additions below do not use MAX(): with a NULL last_seen (never
	// written by CoreScope, but allowed by the schema) MAX would keep NULL.
	edgeAdditions = `count = COALESCE(count, 0) + ?3,
		last_seen = CASE WHEN last_seen IS NULL OR ?4 > last_seen THEN ?4 ELSE last_seen END`
	// updateEdgeByRowidSQL changes nothing unless the row still holds the
	// pair (retention may have deleted it, a rolled-back insert may have
	// left a rowid that is now another pair's).
	updateEdgeByRowidSQL = `UPDATE neighbor_edges SET ` + edgeAdditions + ` WHERE rowid = ?5 AND node_a = ?1 AND node_b = ?2`
	updateEdgeByPairSQL  = `UPDATE neighbor_edges SET ` + edgeAdditions + ` WHERE node_a = ?1 AND node_b = ?2`
	edgeRowidSQL         = `SELECT rowid FROM neighbor_edges WHERE node_a = ? AND node_b = ?`
)

// edgeStatements are the statements above, prepared on the writer's
// connection.
type edgeStatements struct {
	insert, byRowid, byRowids, byPair, rowid, holds, saveOrigin, saveOrigins, observationID *sql.Stmt
	args                                                                                    []any
}

const edgeHoldsSQL = `SELECT EXISTS (SELECT 1 FROM neighbor_edges WHERE rowid = ? AND node_a = ? AND node_b = ?)`

// observationIDSQL finds a row of the batch by the unique index; a NULL
// observer_idx is not unique (the newest such row is the batch's).
const observationIDSQL = `SELECT MAX(id) FROM observations
	WHERE transmission_id = ?1 AND observer_idx IS ?2 AND COALESCE(path_json, '') = ?3`

func prepareEdgeStatements(ctx context.Context, tx writer.Tx) (*edgeStatements, error) {
	st := &edgeStatements{}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{{&st.insert, insertEdgeSQL}, {&st.byRowid, updateEdgeByRowidSQL}, {&st.byRowids, updateEdgesSQL},
		{&st.byPair, updateEdgeByPairSQL}, {&st.rowid, edgeRowidSQL}, {&st.holds, edgeHoldsSQL},
		{&st.saveOrigin, saveStateSQL}, {&st.saveOrigins, saveOriginsSQL}, {&st.observationID, observationIDSQL}} {
		s, err := tx.PrepareContext(ctx, p.sql)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("prepare neighbor_edges statement: %w", err)
		}
		*p.dst = s
	}
	return st, nil
}

func (s *edgeStatements) close() {
	for _, st := range []*sql.Stmt{s.insert, s.byRowid, s.byRowids, s.byPair, s.rowid, s.holds, s.saveOrigin, s.saveOrigins, s.observationID} {
		if st != nil {
			st.Close()
		}
	}
}

// edgeUpdateChunk is how many known pairs one UPDATE … FROM (VALUES …)
// statement changes: one statement instead of 64 saves most of the
// per-statement cost, which was most of the time of writing the edges.
const edgeUpdateChunk = 64

// updateEdgesSQL updates up to edgeUpdateChunk known pairs by rowid; like
// updateEdgeByRowidSQL it leaves a row alone unless it still holds the pair.
var updateEdgesSQL = func() string {
	var sb strings.Builder
	sb.WriteString(`UPDATE neighbor_edges SET
		count = COALESCE(neighbor_edges.count, 0) + v.column3,
		last_seen = CASE WHEN neighbor_edges.last_seen IS NULL OR v.column4 > neighbor_edges.last_seen
			THEN v.column4 ELSE neighbor_edges.last_seen END
	FROM (VALUES `)
	for i := 0; i < edgeUpdateChunk; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?, ?, ?, ?, ?)")
	}
	sb.WriteString(`) AS v
	WHERE neighbor_edges.rowid = v.column5 AND neighbor_edges.node_a = v.column1 AND neighbor_edges.node_b = v.column2`)
	return sb.String()
}()

// flush writes the batch's edges. idsKnown says the ids predicted for the
// batch's observations were right; else the first observations of the new
// edges are looked up.
func (e *edgeBatch) flush(ctx context.Context, st *edgeStatements, g *neighbourGraph, idsKnown bool) error {
	for i := range e.deltas {
		d := &e.deltas[i]
		if !d.created {
			continue
		}
		id := sql.NullInt64{Int64: d.origin.id, Valid: true}
		if !idsKnown {
			// Not found (it cannot be: the row is in this transaction)
			// leaves 0, an edge that counts for every observation.
			o := &d.origin
			if err := st.observationID.QueryRowContext(ctx, o.transmission, o.observer, o.path).Scan(&id); err != nil {
				return fmt.Errorf("find the observation that gave neighbor edge %s–%s: %w", g.names.name(d.a), g.names.name(d.b), err)
			}
		}
		state := g.edges[d.key]
		state.firstObs = id.Int64
		g.edges[d.key] = state
	}
	// Known pairs in chunks, the others (and a chunk's leftovers) one by
	// one.
	var known, single []*edgeDelta
	for i := range e.deltas {
		d := &e.deltas[i]
		if g.edges[d.key].rowid != 0 {
			known = append(known, d)
		} else {
			single = append(single, d)
		}
	}
	for len(known) >= edgeUpdateChunk {
		chunk := known[:edgeUpdateChunk]
		known = known[edgeUpdateChunk:]
		args := st.args[:0]
		for _, d := range chunk {
			args = append(args, g.names.name(d.a), g.names.name(d.b), d.count, writer.FormatSeconds(d.lastSeen), g.edges[d.key].rowid)
		}
		st.args = args
		n, err := rowsAffected(st.byRowids.ExecContext(ctx, args...))
		if err != nil {
			return fmt.Errorf("update %d neighbor edges: %w", len(chunk), err)
		}
		if n == int64(len(chunk)) {
			continue
		}
		// Some rows were gone (retention) or not the pair: the updated
		// ones still hold their pair, the others are written one by one.
		for _, d := range chunk {
			var there bool
			if err := st.holds.QueryRowContext(ctx, g.edges[d.key].rowid, g.names.name(d.a), g.names.name(d.b)).Scan(&there); err != nil {
				return fmt.Errorf("check neighbor edge: %w", err)
			}
			if !there {
				state := g.edges[d.key]
				state.rowid = 0
				g.edges[d.key] = state
				single = append(single, d)
			}
		}
	}
	single = append(single, known...)
	for _, d := range single {
		if err := flushOne(ctx, st, g, d); err != nil {
			return err
		}
	}
	var origins edgeOrigins
	for i := range e.deltas {
		if d := &e.deltas[i]; d.created {
			if err := origins.add(g, d.key); err != nil {
				return err
			}
		}
	}
	return origins.save(ctx, st.saveOrigin, st.saveOrigins)
}

// flushOne writes one pair: by rowid when known, else inserted, else (a
// row the writer did not load) by its key.
func flushOne(ctx context.Context, st *edgeStatements, g *neighbourGraph, d *edgeDelta) error {
	a, b := g.names.name(d.a), g.names.name(d.b)
	seen := writer.FormatSeconds(d.lastSeen)
	state := g.edges[d.key]
	if state.rowid != 0 {
		n, err := rowsAffected(st.byRowid.ExecContext(ctx, a, b, d.count, seen, state.rowid))
		if err != nil {
			return fmt.Errorf("update neighbor edge %s–%s: %w", a, b, err)
		}
		if n == 1 {
			return nil
		}
	}
	res, err := st.insert.ExecContext(ctx, a, b, d.count, seen)
	if err != nil {
		return fmt.Errorf("insert neighbor edge %s–%s: %w", a, b, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		state.rowid, _ = res.LastInsertId()
	} else {
		if _, err := st.byPair.ExecContext(ctx, a, b, d.count, seen); err != nil {
			return fmt.Errorf("update neighbor edge %s–%s: %w", a, b, err)
		}
		if err := st.rowid.QueryRowContext(ctx, a, b).Scan(&state.rowid); err != nil {
			return fmt.Errorf("find neighbor edge %s–%s: %w", a, b, err)
		}
	}
	g.edges[d.key] = state
	return nil
}

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}
