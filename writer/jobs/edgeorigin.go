package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshingest/meshingest/writer"
)

// Resolving an observation again needs to know which edges existed when it
// was stored: an edge counts only for the observations after the first one
// that gave it (neighbourGraph.adjacent). neighbor_edges is CoreScope's
// table and has no column for that, so the jobs keep it in
// meshingest_state, one row per edge: key edge_origin:<rowid of the
// neighbor_edges row>, value {"a","b","obs"} (the pair and the id of its
// first observation). The pair is checked when the rows are loaded, since
// SQLite may give a deleted row's rowid to a new one.
//
// The row is written in the transaction that creates the edge, or that
// measures it again (rederive.go), and deleted with the edge.

const edgeOriginPrefix = "edge_origin:"

type edgeOrigin struct {
	A   string `json:"a"`
	B   string `json:"b"`
	Obs int64  `json:"obs"`
}

func edgeOriginKey(rowid int64) string { return edgeOriginPrefix + strconv.FormatInt(rowid, 10) }

// edgeOrigins are records to write, key and value in turn.
type edgeOrigins []any

// add records the first observation of edge k, whose row the graph knows.
func (o *edgeOrigins) add(g *neighbourGraph, k uint64) error {
	e := g.edges[k]
	if e.rowid == 0 {
		return nil // a row in another case than the writer's: not the writer's to describe
	}
	a, b := g.names.name(uint32(k>>32)), g.names.name(uint32(k))
	if a > b {
		a, b = b, a
	}
	v, err := json.Marshal(edgeOrigin{A: a, B: b, Obs: e.firstObs})
	if err != nil {
		return err
	}
	*o = append(*o, edgeOriginKey(e.rowid), string(v))
	return nil
}

// originChunk is how many records one statement writes.
const originChunk = 64

// saveOriginsSQL writes originChunk records.
var saveOriginsSQL = `INSERT INTO meshingest_state (key, value) VALUES ` +
	strings.TrimSuffix(strings.Repeat("(?, ?), ", originChunk), ", ") +
	` ON CONFLICT (key) DO UPDATE SET value = excluded.value`

// save writes the records, originChunk to a statement (chunk), the rest
// one by one (one).
func (o edgeOrigins) save(ctx context.Context, one, chunk *sql.Stmt) error {
	for len(o) > 0 {
		n, st := 2, one
		if len(o) >= 2*originChunk {
			n, st = 2*originChunk, chunk
		}
		if _, err := st.ExecContext(ctx, o[:n]...); err != nil {
			return fmt.Errorf("record the first observations of neighbor edges: %w", err)
		}
		o = o[n:]
	}
	return nil
}

// deleteEdgeOrigins forgets the records of the edges with these rows.
func deleteEdgeOrigins(ctx context.Context, tx writer.Tx, rowids []int64) error {
	for len(rowids) > 0 {
		n := min(len(rowids), 500)
		args := make([]any, n)
		for i, r := range rowids[:n] {
			args[i] = edgeOriginKey(r)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM meshingest_state WHERE key IN (`+placeholders(n)+`)`, args...); err != nil {
			return fmt.Errorf("forget neighbor edge origins: %w", err)
		}
		rowids = rowids[n:]
	}
	return nil
}

// loadEdgeOrigins gives the loaded edges (byRowid: their rows) their first
// observations. A record whose row now holds another pair is ignored.
func loadEdgeOrigins(ctx context.Context, tx writer.Tx, g *neighbourGraph, byRowid map[int64]uint64) error {
	rows, err := tx.QueryContext(ctx, `SELECT key, value FROM meshingest_state WHERE key >= ? AND key < ?`,
		edgeOriginPrefix, strings.TrimSuffix(edgeOriginPrefix, ":")+";")
	if err != nil {
		return fmt.Errorf("load neighbor edge origins: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key, value string
		if err := rows.Scan(&key, &value); err != nil {
			return fmt.Errorf("load neighbor edge origins: %w", err)
		}
		rowid, err := strconv.ParseInt(strings.TrimPrefix(key, edgeOriginPrefix), 10, 64)
		if err != nil {
			continue
		}
		var o edgeOrigin
		if json.Unmarshal([]byte(value), &o) != nil {
			continue
		}
		k, ok := byRowid[rowid]
		if !ok {
			continue
		}
		a, b := g.names.name(uint32(k>>32)), g.names.name(uint32(k))
		if a > b {
			a, b = b, a
		}
		if a != o.A || b != o.B {
			continue
		}
		e := g.edges[k]
		e.firstObs = o.Obs
		g.edges[k] = e
	}
	return rows.Err()
}
