package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// pathState is the BatchHook that fills observations.resolved_path and
// keeps neighbor_edges, from one in-memory copy of the nodes' keys and of
// the neighbour graph.
//
// The copy is loaded from the database once, on the first use of a
// connection (at start, again whenever the writer reopened the database,
// and after a task step that changed it failed), and then follows the
// writer: a node enters the index with its first stored advert, an edge
// enters the graph with the observation that makes it. Whatever a batch
// taught it is undone when the batch is rolled back, so the copy always
// equals what is committed plus what the open batch wrote. Rows other
// processes change (retention moving nodes to inactive_nodes, an operator
// deleting some) are picked up by pathIndexTask. A node learned or lost
// after observations with its prefix were stored has those observations
// derived again by rederiveTask.
//
// All methods run on the writer's drain goroutine.
type pathState struct {
	log     zerolog.Logger
	maxAge  int           // neighborEdgesMaxAgeDays
	stats   *writer.Stats // the writer's, to tell a catch-up; nil: none
	conn    writer.Tx     // the connection the copy was loaded from; nil before
	index   nodeIndex
	nodeIDs []bool // by vertex id: the vertex is in the index
	graph   *neighbourGraph
	rows    *observationRows
	stmts   *edgeStatements

	edges edgeBatch // the open batch's neighbor_edges

	rd rederiveState // what is to be derived again
	// backfilled: backfillTask found every backfill done (they change
	// the observations the re-derivation reads).
	backfilled bool

	observers map[string]uint32 // topic observer id → vertex of its lower-case form

	// The open batch: what to undo on a rollback.
	addedNodes []uint32
	undo       []edgeUndo
	batchObs   int // observations handed over in the batch
	// batchFirstID is the id SQLite gives the batch's first observation
	// row: one id per observation handed over, in order.
	batchFirstID    int64
	idsMispredicted bool // logged once

	// The last committed batch, to tell a catch-up from live traffic.
	lastBatchObs int
	lastBatchAt  time.Time
	// lastPassEnd is when rederiveTask's last pass ended (zero: none
	// since the start).
	lastPassEnd time.Time

	// commits counts committed batches; settled is its value when
	// rederiveTask last found nothing left to do. Tests read them.
	commits, settled atomic.Int64

	// Scratch space reused for every observation.
	origin obsRef
	hops   [maxHops]hop
	res    []uint32
	buf    []byte
}

func newPathState(log zerolog.Logger, maxAgeDays int) *pathState {
	p := &pathState{log: log, maxAge: maxAgeDays, edges: newEdgeBatch()}
	p.settled.Store(-1) // not yet looked
	return p
}

// ensure loads the copy when tx is a connection it was not loaded from.
// now bounds the edges worth loading: those that cannot count for an
// observation received at now or later are left in the table.
func (p *pathState) ensure(ctx context.Context, tx writer.Tx, now time.Time) error {
	if p.conn == tx && tx != nil {
		return nil
	}
	started := time.Now()
	graph := newNeighbourGraph(p.maxAge)
	keys, err := loadNodeKeys(ctx, tx)
	if err != nil {
		return err
	}
	ids := make([]uint32, len(keys))
	for i, k := range keys {
		ids[i] = graph.names.id(k)
	}
	// A day of slack for observations a little older than the first one.
	cutoff := writer.FormatSeconds(now.Unix() - graph.maxAge - 86400)
	rows, err := tx.QueryContext(ctx, `SELECT rowid, node_a, node_b, last_seen FROM neighbor_edges
		WHERE last_seen IS NULL OR last_seen >= ?`, cutoff)
	if err != nil {
		return fmt.Errorf("load neighbor_edges: %w", err)
	}
	edges := 0
	byRowid := map[int64]uint64{}
	for rows.Next() {
		var rowid int64
		var a, b string
		var seen sql.NullString
		if err := rows.Scan(&rowid, &a, &b, &seen); err != nil {
			rows.Close()
			return fmt.Errorf("load neighbor_edges: %w", err)
		}
		ts := int64(1 << 62) // no last_seen: retention never removes it
		if seen.Valid {
			var ok bool
			if ts, ok = writer.ParseSeconds(seen.String); !ok {
				continue
			}
		}
		la, lb := strings.ToLower(a), strings.ToLower(b)
		if la == lb {
			continue
		}
		if la != a || lb != b {
			rowid = 0 // not the pair the writer would update
		}
		va, vb := graph.names.id(la), graph.names.id(lb)
		graph.set(va, vb, ts, rowid)
		if rowid != 0 {
			byRowid[rowid] = pairKey(va, vb)
		}
		edges++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load neighbor_edges: %w", err)
	}
	if err := loadEdgeOrigins(ctx, tx, graph, byRowid); err != nil {
		return err
	}
	rd, err := loadRederiveState(ctx, tx, p.log)
	if err != nil {
		return err
	}
	st, err := prepareEdgeStatements(ctx, tx)
	if err != nil {
		return err
	}
	exists, err := tx.PrepareContext(ctx, observationExistsSQL)
	if err != nil {
		st.close()
		return fmt.Errorf("prepare observation lookup: %w", err)
	}
	// The statements of a previous connection are not closed: the writer
	// closed that connection, and with it (in modernc's driver) freed
	// them; finalizing them again would touch freed memory.
	p.graph, p.stmts = graph, st
	p.rows = newObservationRows()
	p.rows.exists = exists
	p.observers = map[string]uint32{}
	p.nodeIDs = nil
	p.index.reset(keys, ids)
	for _, id := range ids {
		p.setNode(id, true)
	}
	p.edges.reset()
	p.addedNodes, p.undo, p.batchObs = p.addedNodes[:0], p.undo[:0], 0
	p.rd = rd
	p.conn = tx
	p.log.Info().Int("nodes", len(keys)).Int("edges", edges).
		Dur("took", time.Since(started)).Msg("loaded node keys and neighbour graph for resolved_path and neighbor_edges")
	return nil
}

// stepEnded is the StepEnded of the tasks that change the copy: what a
// committed step wrote is stored; a step rolled back has the copy loaded
// again at the next use (a pass in progress starts over).
func (p *pathState) stepEnded(committed bool) {
	if committed {
		p.rd.committed()
	} else {
		p.conn = nil
	}
}

func loadNodeKeys(ctx context.Context, tx writer.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT public_key FROM nodes`)
	if err != nil {
		return nil, fmt.Errorf("load node keys: %w", err)
	}
	defer rows.Close()
	var keys []string
	seen := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("load node keys: %w", err)
		}
		k = strings.ToLower(k)
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys, rows.Err()
}

func (p *pathState) isNode(id uint32) bool { return int(id) < len(p.nodeIDs) && p.nodeIDs[id] }

func (p *pathState) setNode(id uint32, on bool) {
	for int(id) >= len(p.nodeIDs) {
		p.nodeIDs = append(p.nodeIDs, false)
	}
	p.nodeIDs[id] = on
}

// addNode puts a node into the index for the open batch; the
// observations stored before it that it changes are to be derived again.
func (p *pathState) addNode(key string) uint32 {
	id := p.graph.names.id(key)
	if p.index.add(key, id) {
		p.setNode(id, true)
		p.addedNodes = append(p.addedNodes, id)
		p.rd.markInBatch(key)
	}
	return id
}

// removeNode takes a node out of the index (it was deleted from nodes, in
// the transaction of the calling task step) and has its observations
// derived again.
func (p *pathState) removeNode(key string) {
	if p.graph == nil {
		return
	}
	if id, ok := p.graph.names.lookup(key); ok && p.index.remove(key) {
		p.setNode(id, false)
		p.rd.mark(key)
	}
}

func (p *pathState) observerVertex(id string) uint32 {
	if v, ok := p.observers[id]; ok {
		return v
	}
	v := p.graph.names.id(strings.ToLower(id))
	p.observers[id] = v
	return v
}

// BeforeObservation resolves the path of a new observation row and counts
// its edges. A repeated report of a stored observation keeps the
// resolved_path it has (NULL here: the upsert keeps the stored value),
// which is already what the rule gives: the same row, the same nodes.
func (p *pathState) BeforeObservation(ctx context.Context, tx writer.Tx, obs *writer.Observation, oc *writer.ObservationContext) error {
	if err := p.ensure(ctx, tx, oc.ReceivedAt); err != nil {
		return err
	}
	if p.batchObs == 0 {
		var err error
		if p.batchFirstID, err = nextObservationID(ctx, tx); err != nil {
			return err
		}
	}
	id := p.batchFirstID + int64(p.batchObs) // predicted, checked at the flush
	p.batchObs++
	ts := obs.Timestamp
	from := noNode
	if oc.FromPubkey != "" {
		// The advert's node is stored in this batch: it is in the index
		// from its own first observation on.
		from = p.addNode(oc.FromPubkey)
	}
	isNew, err := p.rows.isNew(ctx, obs, oc.NewTransmission)
	if err != nil || !isNew {
		return err
	}
	hops := parsePathJSON(obs.PathJSON, &p.hops)
	if len(hops) > 0 {
		// The row's id is not known yet; it is above every other.
		p.res = p.resolveHops(hops, from, ts, newestObservation, p.res)
		if buf, ok := p.appendResolvedPath(p.buf[:0], p.res); ok {
			obs.ResolvedPath = sql.NullString{String: string(buf), Valid: true}
			p.buf = buf
		}
	}
	observer := noNode
	if obs.ObserverIdx.Valid && oc.ObserverID != "" {
		observer = p.observerVertex(oc.ObserverID)
	}
	isAdvert := oc.Frame != nil && oc.Frame.Type == decoder.TypeAdvert
	p.origin = obsRef{id: id, transmission: obs.TransmissionID, observer: obs.ObserverIdx, path: obs.PathJSON}
	edges, n := p.observationEdges(hops, isAdvert, from, observer)
	for _, e := range edges[:n] {
		p.addEdge(e[0], e[1], ts)
	}
	return nil
}

// newestObservation stands for the id of the observation being inserted,
// which every edge stored or made by the batch so far precedes.
const newestObservation = math.MaxInt64

// observationEdges returns the edges one observation row gives (see
// neighbors.go), at most two: a hop counts when exactly one node has its
// prefix and it is not the other end.
func (p *pathState) observationEdges(hops []hop, isAdvert bool, from, observer uint32) (edges [2][2]uint32, n int) {
	if len(hops) == 0 {
		if isAdvert && from != noNode && observer != noNode && from != observer {
			edges[0], n = [2]uint32{from, observer}, 1
		}
		return edges, n
	}
	if isAdvert && from != noNode {
		if r := p.uniqueNode(&hops[0]); r != noNode && r != from {
			edges[n], n = [2]uint32{from, r}, n+1
		}
	}
	if observer != noNode {
		if r := p.uniqueNode(&hops[len(hops)-1]); r != noNode && r != observer {
			edges[n], n = [2]uint32{observer, r}, n+1
		}
	}
	return edges, n
}

// uniqueNode is the only node whose key starts with the hop, or noNode.
func (p *pathState) uniqueNode(h *hop) uint32 {
	if c := p.index.candidates(h.prefix()); len(c) == 1 {
		return c[0]
	}
	return noNode
}

// addEdge counts an edge of the observation p.origin names.
func (p *pathState) addEdge(a, b uint32, ts int64) {
	u := p.graph.touch(a, b, ts, p.origin.id)
	p.undo = append(p.undo, u)
	p.edges.add(p.graph, a, b, ts, !u.existed, &p.origin)
}

// Committed keeps what the batch taught the copy.
func (p *pathState) Committed() {
	if p.rows != nil {
		p.rows.committed()
	}
	p.edgesCommitted()
	p.rd.committed()
	p.addedNodes, p.undo = p.addedNodes[:0], p.undo[:0]
	p.lastBatchObs, p.lastBatchAt, p.batchObs = p.batchObs, time.Now(), 0
	p.commits.Add(1)
}

// RolledBack forgets it: the same records come again.
func (p *pathState) RolledBack() {
	for i := len(p.undo) - 1; i >= 0; i-- {
		p.graph.undo(p.undo[i])
	}
	for i := len(p.addedNodes) - 1; i >= 0; i-- {
		id := p.addedNodes[i]
		p.index.remove(p.graph.names.name(id))
		p.setNode(id, false)
	}
	if p.rows != nil {
		p.rows.rolledBack()
	}
	p.edges.reset()
	p.rd.rolledBack()
	p.addedNodes, p.undo, p.batchObs = p.addedNodes[:0], p.undo[:0], 0
}

// catchUpBatch is the batch size (observations) above which the writer is
// taken to be draining a backlog rather than following live traffic (a few
// hundred messages a second): background work that can wait does.
const catchUpBatch = 1000

// catchingUp reports whether the last batch was a catch-up batch, recently,
// and the writer has not reached the end of the spool since.
func (p *pathState) catchingUp() bool {
	if p.stats != nil && p.stats.CaughtUp.Load() {
		return false
	}
	return p.lastBatchObs >= catchUpBatch && time.Since(p.lastBatchAt) < 10*time.Second
}

// pathIndexTask picks up the node rows others changed. Retention moves
// nodes not heard for nodeDays to inactive_nodes, an operator may delete
// some: a key the index keeps after its row is gone could make another
// node's prefix look shared. Counting the rows is cheap; only when the
// count differs from the index is the index read again, and the keys that
// came or went have their observations derived again. It also drops
// aged-out edges from memory.
type pathIndexTask struct{ p *pathState }

func (t pathIndexTask) Name() string            { return "path-index" }
func (t pathIndexTask) Interval() time.Duration { return 5 * time.Minute }

func (t pathIndexTask) StepEnded(committed bool) { t.p.stepEnded(committed) }

func (t pathIndexTask) Step(ctx context.Context, tx writer.Tx, now time.Time) (bool, error) {
	p := t.p
	if err := p.ensure(ctx, tx, now); err != nil {
		return false, err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM nodes`).Scan(&n); err != nil {
		return false, fmt.Errorf("count nodes: %w", err)
	}
	if n != p.index.len() {
		keys, err := loadNodeKeys(ctx, tx)
		if err != nil {
			return false, err
		}
		before := p.index.len()
		stored := make(map[string]bool, len(keys))
		for _, k := range keys {
			stored[k] = true
		}
		for i, id := range p.index.ids {
			p.setNode(id, false)
			if k := p.index.keys[i]; !stored[k] {
				p.rd.mark(k) // gone
			}
		}
		ids := make([]uint32, len(keys))
		for i, k := range keys {
			ids[i] = p.graph.names.id(k)
			if _, known := slices.BinarySearch(p.index.keys, k); !known {
				p.rd.mark(k) // added by another process
			}
		}
		for _, id := range ids {
			p.setNode(id, true)
		}
		p.index.reset(keys, ids)
		p.log.Info().Int("before", before).Int("after", len(keys)).
			Msg("the nodes table changed outside the writer (retention or an operator); node index reloaded")
	}
	if rowids := p.graph.sweep(now.Unix() - p.graph.maxAge - 86400); len(rowids) > 0 {
		p.log.Debug().Int("edges", len(rowids)).Msg("dropped aged-out neighbour edges from memory")
		if err := deleteEdgeOrigins(ctx, tx, rowids); err != nil {
			return false, err
		}
	}
	return false, p.rd.save(ctx, tx)
}
