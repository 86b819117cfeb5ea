package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

func key64(prefix string) string { return prefix + strings.Repeat("0", 64-len(prefix)) }

func TestNodeIndex_Candidates_IndexedPrefixLengthsOnly(t *testing.T) {
	var x nodeIndex
	keys := []string{key64("aa11223344556677"), key64("aa11"), key64("aa22"), key64("bb"), "zz-not-hex", "a"}
	ids := []uint32{0, 1, 2, 3, 4, 5}
	x.reset(keys, ids)
	for _, c := range []struct {
		prefix string
		want   []uint32
	}{
		{"aa", []uint32{1, 0, 2}}, // in key order: aa1100…, aa1122…, aa2200…
		{"aa11", []uint32{1, 0}},
		{"aa1122", []uint32{0}},
		{"aa112233", []uint32{0}},
		{"aa1122334455", []uint32{0}},
		{"aa11223344556677", []uint32{0}},
		{"aa11223344", nil}, // 5 bytes: not a length the index answers for
		{"bb", []uint32{3}},
		{"cc", nil},
		{"zz", nil},
	} {
		if got := x.candidates([]byte(c.prefix)); !slices.Equal(got, c.want) && (len(got) != 0 || len(c.want) != 0) {
			t.Errorf("candidates(%s) = %v, want %v", c.prefix, got, c.want)
		}
	}
	if !x.add(key64("aa"), 6) || x.add(key64("aa"), 6) {
		t.Error("add: a new key must be added once")
	}
	if got := x.candidates([]byte("aa")); len(got) != 4 || got[0] != 6 {
		t.Errorf("after add, candidates(aa) = %v", got)
	}
	if !x.remove(key64("aa11")) || x.remove(key64("aa11")) {
		t.Error("remove: a key must be removed once")
	}
	if got := x.candidates([]byte("aa11")); !slices.Equal(got, []uint32{0}) {
		t.Errorf("after remove, candidates(aa11) = %v", got)
	}
}

func TestParsePathJSON_HopsLowerCased(t *testing.T) {
	var buf [maxHops]hop
	got := parsePathJSON(`["7D1D","da2a","AB"]`, &buf)
	var s []string
	for i := range got {
		s = append(s, string(got[i].prefix()))
	}
	if !slices.Equal(s, []string{"7d1d", "da2a", "ab"}) {
		t.Errorf("hops %v", s)
	}
	for _, bad := range []string{"", "[]", "null", `["ab"`, `[1,2]`} {
		if n := len(parsePathJSON(bad, &buf)); n != 0 {
			t.Errorf("%q gave %d hops", bad, n)
		}
	}
}

// testPathState builds a pathState over the given nodes and edges
// (last seen at the given unix times), edges aging out after one day.
func testPathState(nodes []string, edges map[[2]string]int64) *pathState {
	p := newPathState(zerolog.Nop(), 1)
	p.graph = newNeighbourGraph(1)
	var ids []uint32
	for _, k := range nodes {
		ids = append(ids, p.graph.names.id(k))
	}
	p.index.reset(nodes, ids)
	for _, id := range ids {
		p.setNode(id, true)
	}
	for e, ts := range edges {
		p.graph.set(p.graph.names.id(e[0]), p.graph.names.id(e[1]), ts, 0)
	}
	return p
}

// TestPathState_ResolveHops_ContextRules pins CoreScope's
// resolvePathWithContext: a unique prefix resolves; a shared one resolves
// to the only candidate adjacent to the previous hop (the advert's own key
// for the first), by an edge not aged out; an unresolved hop breaks the
// chain; no node appears twice on a path, the advertiser included.
func TestPathState_ResolveHops_ContextRules(t *testing.T) {
	a11, a22, b33, c44, d55 := key64("aa11"), key64("aa22"), key64("bb33"), key64("cc44"), key64("dd55")
	const now = 1_800_000_000
	p := testPathState([]string{a11, a22, b33, c44, d55}, map[[2]string]int64{
		{b33, a22}: now - 3600,       // fresh
		{c44, a11}: now - 2*86400,    // aged out (older than a day)
		{d55, a11}: now - 3600,       // d55 is adjacent to both candidates
		{d55, a22}: now - 3600 - 100, //
	})
	id := func(k string) uint32 { i, _ := p.graph.names.lookup(k); return i }
	for _, c := range []struct {
		name string
		path string
		from string
		want []string
	}{
		{"unique prefix", `["BB"]`, "", []string{b33}},
		{"shared prefix, one adjacent", `["BB","AA"]`, "", []string{b33, a22}},
		{"shared prefix, adjacency aged out", `["CC","AA"]`, "", []string{c44, ""}},
		{"shared prefix, two adjacent", `["DD","AA"]`, "", []string{d55, ""}},
		{"chain broken by an unknown hop", `["FF","AA"]`, "", []string{"", ""}},
		{"first hop anchored on the advertiser", `["AA"]`, b33, []string{a22}},
		{"the advertiser is not its own hop", `["BB","AA"]`, b33, []string{"", ""}},
		{"no node twice", `["BB","BB"]`, "", []string{b33, ""}},
		{"longer prefix disambiguates alone", `["AA11"]`, "", []string{a11}},
		{"6-byte prefix", `["AA1100000000"]`, "", []string{a11}},
		{"unindexed length (5 bytes)", `["AA11000000"]`, "", []string{""}},
	} {
		var buf [maxHops]hop
		from := noNode
		if c.from != "" {
			from = id(c.from)
		}
		res := p.resolveHops(parsePathJSON(c.path, &buf), from, now, newestObservation, nil)
		var got []string
		for _, r := range res {
			if r == noNode {
				got = append(got, "")
			} else {
				got = append(got, p.graph.names.name(r))
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %s resolved to %q, want %q", c.name, c.path, got, c.want)
		}
	}
}

func TestPathState_AppendResolvedPath_NullWhenNothingResolved(t *testing.T) {
	p := testPathState([]string{key64("aa")}, nil)
	id, _ := p.graph.names.lookup(key64("aa"))
	if _, ok := p.appendResolvedPath(nil, []uint32{noNode, noNode}); ok {
		t.Error("all-null path must be NULL (an upsert then keeps the stored value)")
	}
	got, ok := p.appendResolvedPath(nil, []uint32{noNode, id})
	if !ok || string(got) != `[null,"`+key64("aa")+`"]` {
		t.Errorf("resolved_path %s", got)
	}
}

// TestPathState_RolledBack_ForgetsTheBatch: a rolled-back batch leaves the
// index, the graph and the table as they were; the same observations
// committed write their edges once.
func TestPathState_RolledBack_ForgetsTheBatch(t *testing.T) {
	ctx := context.Background()
	d := openDatabase(t, newDatabase(t))
	defer d.close()
	known, advertiser := key64("aa"), key64("bb")
	mustExecConn(t, d.conn, `INSERT INTO nodes (public_key, name) VALUES (?, 'known')`, known)
	p := newPathState(zerolog.Nop(), 5)
	observer := strings.ToUpper(key64("cc"))
	advert := decoder.Frame{Type: decoder.TypeAdvert}
	batch := func() {
		t.Helper()
		mustExecConn(t, d.conn, "BEGIN IMMEDIATE")
		for i, o := range []struct {
			path string
			oc   writer.ObservationContext
		}{
			// A new node's advert heard through the known node.
			{`["AA"]`, writer.ObservationContext{ObserverID: observer, FromPubkey: advertiser, Frame: &advert, NewTransmission: true}},
			// A packet whose last hop is now the new node.
			{`["AA","BB"]`, writer.ObservationContext{ObserverID: observer, NewTransmission: true}},
		} {
			obs := &writer.Observation{TransmissionID: int64(i + 1), ObserverIdx: sql.NullInt64{Int64: 1, Valid: true},
				PathJSON: o.path, Timestamp: 1_800_000_000 + int64(i)}
			if err := p.BeforeObservation(ctx, d.conn, obs, &o.oc); err != nil {
				t.Fatal(err)
			}
			if !obs.ResolvedPath.Valid {
				t.Errorf("observation %d: no resolved_path", i)
			}
		}
		if err := p.Flush(ctx, d.conn); err != nil {
			t.Fatal(err)
		}
	}
	batch()
	if p.index.len() != 2 || len(p.graph.edges) != 3 {
		t.Fatalf("during the batch: %d nodes, %d edges; want 2, 3", p.index.len(), len(p.graph.edges))
	}
	mustExecConn(t, d.conn, "ROLLBACK")
	p.RolledBack()
	if p.index.len() != 1 || len(p.graph.edges) != 0 {
		t.Fatalf("after the rollback: %d nodes, %d edges; want 1, 0", p.index.len(), len(p.graph.edges))
	}
	batch()
	mustExecConn(t, d.conn, "COMMIT")
	p.Committed()
	var n int
	d.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM neighbor_edges`).Scan(&n)
	var sum int
	d.conn.QueryRowContext(ctx, `SELECT SUM(count) FROM neighbor_edges`).Scan(&sum)
	// advert: bb–aa (first hop); observer cc–aa (last hop of the advert);
	// packet: cc–bb (last hop).
	if n != 3 || sum != 3 {
		t.Errorf("neighbor_edges: %d rows, counts summing to %d; want 3 rows of 1", n, sum)
	}
}

func mustExecConn(t testing.TB, conn writer.Tx, q string, args ...any) {
	t.Helper()
	if _, err := conn.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestPathState_NewConnection_Reloads: when the writer reopened the
// database (a restore, a reopen after an error) the state is loaded again
// from the new connection; the old one, closed by the writer, is not
// touched.
func TestPathState_NewConnection_Reloads(t *testing.T) {
	ctx := context.Background()
	path := newDatabase(t)
	p := newPathState(zerolog.Nop(), 5)
	d1 := openDatabase(t, path)
	if err := p.ensure(ctx, d1.conn, time.Now()); err != nil {
		t.Fatal(err)
	}
	mustExecConn(t, d1.conn, `INSERT INTO nodes (public_key) VALUES (?)`, key64("ab"))
	d1.close()
	d2 := openDatabase(t, path)
	defer d2.close()
	if err := p.ensure(ctx, d2.conn, time.Now()); err != nil {
		t.Fatal(err)
	}
	if p.index.len() != 1 {
		t.Errorf("index after the reopen holds %d nodes, want the 1 in the table", p.index.len())
	}
}

// TestPathState_Flush_RowsDeletedMeanwhile: the pairs a batch knows the
// rows of are updated 64 to a statement; a row retention deleted between
// two batches is written again, not lost and not double-counted.
func TestPathState_Flush_RowsDeletedMeanwhile(t *testing.T) {
	ctx := context.Background()
	d := openDatabase(t, newDatabase(t))
	defer d.close()
	mustExecConn(t, d.conn, `INSERT INTO nodes (public_key) VALUES (?)`, key64("ab"))
	p := newPathState(zerolog.Nop(), 5)
	const observers = 70
	batch := func(tx0 int64) {
		t.Helper()
		mustExecConn(t, d.conn, "BEGIN IMMEDIATE")
		for i := int64(0); i < observers; i++ {
			obs := &writer.Observation{TransmissionID: tx0 + i, ObserverIdx: sql.NullInt64{Int64: i + 1, Valid: true},
				PathJSON: `["AB"]`, Timestamp: 1_800_000_000 + tx0}
			oc := &writer.ObservationContext{ObserverID: fmt.Sprintf("OBS%03d", i), NewTransmission: true}
			if err := p.BeforeObservation(ctx, d.conn, obs, oc); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(ctx, d.conn); err != nil {
			t.Fatal(err)
		}
		mustExecConn(t, d.conn, "COMMIT")
		p.Committed()
	}
	batch(1000)
	mustExecConn(t, d.conn, `DELETE FROM neighbor_edges WHERE node_b IN ('obs003', 'obs010', 'obs060', 'obs069')`)
	batch(2000)
	rows, err := d.conn.QueryContext(ctx, `SELECT node_b, count, last_seen FROM neighbor_edges ORDER BY node_b`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var b, seen string
		var c int
		rows.Scan(&b, &c, &seen)
		want := 2
		if strings.Contains("obs003 obs010 obs060 obs069", b) {
			want = 1
		}
		if c != want || seen != writer.FormatSeconds(1_800_002_000) {
			t.Errorf("edge to %s: count %d last_seen %s, want %d %s", b, c, seen, want, writer.FormatSeconds(1_800_002_000))
		}
		n++
	}
	if n != observers {
		t.Errorf("%d edges, want %d", n, observers)
	}
}
