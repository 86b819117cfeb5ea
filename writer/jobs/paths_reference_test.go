package jobs

import (
	"database/sql"
	"encoding/json"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// referencePaths computes neighbor_edges and every observation's
// resolved_path from the final observations and nodes tables, straight
// from the rule of docs/reference/mqtt-formats.md §8 and README.md, with
// none of the writer's machinery: nodes are a plain list scanned with
// strings.HasPrefix, edges a map, the observations read in id order.
//
//   - Edges, over every stored observation against the nodes table: a
//     zero-hop advert gives (advertiser, observer); an advert with hops
//     (advertiser, first hop); any packet with hops (observer, last hop); a
//     hop counts when exactly one node has its prefix and it is not the
//     other end. count: the observations that gave the pair; last_seen:
//     the newest of their receive times.
//   - resolved_path: CoreScope's resolvePathWithContext, a hop several
//     nodes share settled by the edges that observations with a smaller id
//     give (and that are not aged out at the observation's time).
type referencePaths struct {
	maxAge int64
	nodes  []string
	edges  map[[2]string]*refEdge
	rows   []*refRow
	// byAdjacency counts hops only the neighbour graph could settle;
	// lateRows the observations whose edges, derived with the nodes known
	// when they were stored, differ from the rule's now (what a writer
	// that derives each observation once gets wrong): a test checks that
	// both cases were exercised.
	byAdjacency int
	lateRows    int
}

type refEdge struct {
	count    int64
	lastSeen int64
	firstObs int64
}

type refRow struct {
	id       int64
	observer string // lower-case observers.id, "" for a NULL observer_idx
	path     string
	hops     []string
	ts       int64
	advert   bool
	from     string
	stored   sql.NullString // resolved_path in the table
	expected sql.NullString
}

func readReference(t *testing.T, dbPath string, maxAgeDays int) *referencePaths {
	t.Helper()
	db := writertest.OpenRaw(t, dbPath)
	r := &referencePaths{maxAge: int64(maxAgeDays) * 86400, edges: map[[2]string]*refEdge{}}
	nr, err := db.Query(`SELECT lower(public_key) FROM nodes`)
	if err != nil {
		t.Fatal(err)
	}
	for nr.Next() {
		var k string
		nr.Scan(&k)
		r.nodes = append(r.nodes, k)
	}
	nr.Close()
	rows, err := db.Query(`SELECT o.id, lower(COALESCE(b.id, '')), COALESCE(o.path_json, ''), o.timestamp,
			t.payload_type, lower(COALESCE(t.from_pubkey, '')), o.resolved_path
		FROM observations o JOIN transmissions t ON t.id = o.transmission_id
		LEFT JOIN observers b ON b.rowid = o.observer_idx ORDER BY o.id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var row refRow
		var ptype int
		if err := rows.Scan(&row.id, &row.observer, &row.path, &row.ts, &ptype, &row.from, &row.stored); err != nil {
			t.Fatal(err)
		}
		row.advert = ptype == int(decoder.TypeAdvert)
		if !row.advert {
			row.from = ""
		}
		json.Unmarshal([]byte(row.path), &row.hops)
		r.rows = append(r.rows, &row)
	}
	rows.Close()
	return r
}

func candidatesAmong(nodes []string, hop string) []string {
	h := strings.ToLower(hop)
	switch len(h) {
	case 2, 4, 6, 8, 12, 16:
	default:
		return nil
	}
	var out []string
	for _, n := range nodes {
		if strings.HasPrefix(n, h) {
			out = append(out, n)
		}
	}
	return out
}

// rowEdges are the pairs one observation gives against nodes.
func rowEdges(nodes []string, row *refRow) [][2]string {
	unique := func(h string) string {
		if c := candidatesAmong(nodes, h); len(c) == 1 {
			return c[0]
		}
		return ""
	}
	var out [][2]string
	add := func(a, b string) {
		if a == "" || b == "" || a == b {
			return
		}
		if a > b {
			a, b = b, a
		}
		out = append(out, [2]string{a, b})
	}
	if len(row.hops) == 0 {
		if row.advert {
			add(row.from, row.observer)
		}
		return out
	}
	if row.advert {
		add(row.from, unique(row.hops[0]))
	}
	add(row.observer, unique(row.hops[len(row.hops)-1]))
	return out
}

func (r *referencePaths) adjacent(a, b string, row *refRow) bool {
	if a > b {
		a, b = b, a
	}
	e := r.edges[[2]string{a, b}]
	return e != nil && e.firstObs < row.id && e.lastSeen >= row.ts-r.maxAge
}

// resolve is resolvePathWithContext: unique prefix, else the one candidate
// adjacent to the previous resolved hop (the advert's key for the first),
// never a node already on the path.
func (r *referencePaths) resolve(row *refRow) sql.NullString {
	out := make([]any, len(row.hops))
	seen := map[string]bool{}
	if row.from != "" {
		seen[row.from] = true
	}
	anchor, any := row.from, false
	for i, h := range row.hops {
		c := candidatesAmong(r.nodes, h)
		res := ""
		if len(c) == 1 && !seen[c[0]] {
			res = c[0]
		} else if len(c) > 1 && anchor != "" {
			var s []string
			for _, x := range c {
				if !seen[x] && r.adjacent(anchor, x, row) {
					s = append(s, x)
				}
			}
			if len(s) == 1 {
				res = s[0]
				r.byAdjacency++
			}
		}
		if res != "" {
			out[i], seen[res], any = res, true, true
		}
		anchor = res
	}
	if !any {
		return sql.NullString{}
	}
	b, _ := json.Marshal(out)
	return sql.NullString{String: string(b), Valid: true}
}

// compute applies the rule; it also counts the observations whose edges
// the nodes known when they were stored (those whose first advert has a
// smaller observation id) would have got wrong.
func (r *referencePaths) compute() {
	firstAdvert := map[string]int64{}
	for _, row := range r.rows {
		if row.advert && row.from != "" {
			if _, ok := firstAdvert[row.from]; !ok {
				firstAdvert[row.from] = row.id
			}
		}
	}
	learned := func(n string) int64 {
		if id, ok := firstAdvert[n]; ok {
			return id
		}
		return math.MaxInt64 // a node without a stored advert: never known to a writer
	}
	byAdvert := append([]string(nil), r.nodes...)
	sort.Slice(byAdvert, func(i, j int) bool { return learned(byAdvert[i]) < learned(byAdvert[j]) })
	var known []string
	for _, row := range r.rows {
		for _, p := range rowEdges(r.nodes, row) {
			e := r.edges[p]
			if e == nil {
				e = &refEdge{firstObs: row.id}
				r.edges[p] = e
			}
			e.count++
			e.lastSeen = max(e.lastSeen, row.ts)
		}
		for len(known) < len(byAdvert) && learned(byAdvert[len(known)]) <= row.id {
			known = append(known, byAdvert[len(known)])
		}
		if !sameEdges(rowEdges(known, row), rowEdges(r.nodes, row)) {
			r.lateRows++
		}
	}
	for _, row := range r.rows {
		row.expected = r.resolve(row)
	}
}

func sameEdges(a, b [][2]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkPathJobs compares the database with the rule and returns the
// reference for further checks.
func checkPathJobs(t *testing.T, dbPath string, maxAgeDays int) *referencePaths {
	t.Helper()
	ref := readReference(t, dbPath, maxAgeDays)
	ref.compute()
	bad := 0
	for _, row := range ref.rows {
		if row.stored != row.expected {
			if bad < 10 {
				t.Errorf("observation %d path %s: resolved_path %s, want %s", row.id, row.path, nullText(row.stored), nullText(row.expected))
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d observations have a wrong resolved_path", bad, len(ref.rows))
	}
	got := storedEdges(t, dbPath)
	var keys [][2]string
	for k := range ref.edges {
		keys = append(keys, k)
	}
	for k := range got {
		if ref.edges[k] == nil {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	wrong := 0
	for _, k := range keys {
		w, have := refEdge{}, got[k]
		if want := ref.edges[k]; want != nil {
			w = refEdge{count: want.count, lastSeen: want.lastSeen}
		}
		if w != have {
			if wrong < 10 {
				t.Errorf("neighbor_edges %s–%s: count %d last_seen %d, want count %d last_seen %d", short(k[0]), short(k[1]), have.count, have.lastSeen, w.count, w.lastSeen)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d neighbor_edges rows differ from the rule", wrong, len(keys))
	}
	// The first observation of every edge, which resolving an older
	// observation again needs.
	origins := storedOrigins(t, dbPath)
	bad = 0
	for k, e := range ref.edges {
		if got := origins[k]; got != e.firstObs {
			if bad < 5 {
				t.Errorf("neighbor_edges %s–%s: first observation recorded %d, want %d", short(k[0]), short(k[1]), got, e.firstObs)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d edges have a wrong first observation", bad, len(ref.edges))
	}
	resolved := 0
	for _, row := range ref.rows {
		if row.stored.Valid {
			resolved++
		}
	}
	t.Logf("%d observations, %d with a resolved_path, %d hops settled by adjacency; %d nodes; %d edges; %d observations whose edges changed after they were stored",
		len(ref.rows), resolved, ref.byAdjacency, len(ref.nodes), len(ref.edges), ref.lateRows)
	return ref
}

// storedEdges reads neighbor_edges (count, last_seen) and checks its form.
func storedEdges(t *testing.T, dbPath string) map[[2]string]refEdge {
	t.Helper()
	db := writertest.OpenRaw(t, dbPath)
	got := map[[2]string]refEdge{}
	er, err := db.Query(`SELECT node_a, node_b, count, last_seen FROM neighbor_edges`)
	if err != nil {
		t.Fatal(err)
	}
	defer er.Close()
	for er.Next() {
		var a, b, seen string
		var n int64
		if err := er.Scan(&a, &b, &n, &seen); err != nil {
			t.Fatal(err)
		}
		if a > b {
			t.Errorf("neighbor_edges row (%s, %s) is not ordered node_a ≤ node_b", a, b)
		}
		ts, _ := writer.ParseSeconds(seen)
		got[[2]string{a, b}] = refEdge{count: n, lastSeen: ts}
		if seen != writer.FormatSeconds(ts) {
			t.Errorf("neighbor_edges last_seen %q is not RFC 3339 seconds", seen)
		}
	}
	return got
}

// storedOrigins reads the jobs' record of each edge's first observation
// (edge_origin:<rowid>, checked against the row); none recorded reads 0.
func storedOrigins(t *testing.T, dbPath string) map[[2]string]int64 {
	t.Helper()
	db := writertest.OpenRaw(t, dbPath)
	rows, err := db.Query(`SELECT e.node_a, e.node_b, s.value FROM neighbor_edges e
		LEFT JOIN meshingest_state s ON s.key = 'edge_origin:' || e.rowid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[[2]string]int64{}
	for rows.Next() {
		var a, b string
		var v sql.NullString
		rows.Scan(&a, &b, &v)
		var o edgeOrigin
		if v.Valid && json.Unmarshal([]byte(v.String), &o) == nil && o.A == a && o.B == b {
			out[[2]string{a, b}] = o.Obs
		}
	}
	return out
}

func nullText(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	return s.String
}

func short(k string) string {
	if len(k) > 12 {
		return k[:12] + "…"
	}
	return k
}
