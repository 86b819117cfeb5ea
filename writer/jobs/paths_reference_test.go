package jobs

import (
	"database/sql"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// referencePaths recomputes observations.resolved_path and neighbor_edges
// from the final tables and the message stream, straight from the rules of
// docs/reference/mqtt-formats.md §8, with none of the writer's machinery:
// nodes are a plain set scanned with strings.HasPrefix, edges a map.
//
// What it takes from the stream is only the order of events: which
// message created which observation row (a row's id grows with it) and
// which messages repeated a row already stored. A node is known from its
// first stored advert on (including that advert's own path); an edge counts
// for disambiguation once the observation that gave it was stored, while it
// is younger than maxAgeDays.
type referencePaths struct {
	maxAge int64
	nodes  map[string]bool
	edges  map[[2]string]*refEdge
	// byAdjacency counts hops that only the neighbour graph could settle,
	// so a test can check that case was exercised.
	byAdjacency int
	repeats     int // messages that repeated a stored observation
}

type refEdge struct {
	count    int64
	lastSeen int64
}

type refRow struct {
	id       int64
	observer string // observers.id, "" for a NULL observer_idx
	path     string
	ts       int64
	advert   bool
	from     string
	stored   sql.NullString // resolved_path in the table
	expected sql.NullString
}

func newReferencePaths(maxAgeDays int) *referencePaths {
	return &referencePaths{maxAge: int64(maxAgeDays) * 86400, nodes: map[string]bool{}, edges: map[[2]string]*refEdge{}}
}

func (r *referencePaths) candidates(hopHex string) []string {
	h := strings.ToLower(hopHex)
	switch len(h) {
	case 2, 4, 6, 8, 12, 16:
	default:
		return nil
	}
	var out []string
	for n := range r.nodes {
		if strings.HasPrefix(n, h) {
			out = append(out, n)
		}
	}
	return out
}

func (r *referencePaths) adjacent(a, b string, ts int64) bool {
	if a > b {
		a, b = b, a
	}
	e := r.edges[[2]string{a, b}]
	return e != nil && e.lastSeen >= ts-r.maxAge
}

// resolve is resolvePathWithContext: unique prefix, else the one candidate
// adjacent to the previous resolved hop (the advert's key for the first),
// never a node already on the path.
func (r *referencePaths) resolve(hops []string, from string, ts int64) sql.NullString {
	out := make([]any, len(hops))
	seen := map[string]bool{}
	if from != "" {
		seen[from] = true
	}
	anchor, any := from, false
	for i, h := range hops {
		c := r.candidates(h)
		res := ""
		if len(c) == 1 && !seen[c[0]] {
			res = c[0]
		} else if len(c) > 1 && anchor != "" {
			var s []string
			for _, x := range c {
				if !seen[x] && r.adjacent(anchor, x, ts) {
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

func (r *referencePaths) unique(hop string) string {
	if c := r.candidates(hop); len(c) == 1 {
		return c[0]
	}
	return ""
}

func (r *referencePaths) edge(a, b string, ts int64) {
	if a == "" || b == "" || a == b {
		return
	}
	if a > b {
		a, b = b, a
	}
	e := r.edges[[2]string{a, b}]
	if e == nil {
		e = &refEdge{}
		r.edges[[2]string{a, b}] = e
	}
	e.count++
	e.lastSeen = max(e.lastSeen, ts)
}

// newRow applies the message that created row: its node, its path, its
// edges.
func (r *referencePaths) newRow(row *refRow) {
	if row.from != "" {
		r.nodes[row.from] = true
	}
	var hops []string
	json.Unmarshal([]byte(row.path), &hops)
	row.expected = r.resolve(hops, row.from, row.ts)
	observer := strings.ToLower(row.observer)
	if len(hops) == 0 {
		if row.advert && row.from != observer {
			r.edge(row.from, observer, row.ts)
		}
		return
	}
	if row.advert && row.from != "" {
		if u := r.unique(hops[0]); u != row.from {
			r.edge(row.from, u, row.ts)
		}
	}
	if observer != "" {
		if u := r.unique(hops[len(hops)-1]); u != observer {
			r.edge(observer, u, row.ts)
		}
	}
}

// repeatedRow applies a message that repeated row at time ts: its path is
// resolved again and replaces the stored one unless nothing resolved.
func (r *referencePaths) repeatedRow(row *refRow, ts int64) {
	if row.from != "" {
		r.nodes[row.from] = true
	}
	var hops []string
	json.Unmarshal([]byte(row.path), &hops)
	if rp := r.resolve(hops, row.from, ts); rp.Valid {
		row.expected = rp
	}
}

// checkPathJobs compares the database with the reference over the records
// the writer drained, and returns the reference for further checks.
func checkPathJobs(t *testing.T, dbPath string, recs []writer.Record, maxAgeDays int) *referencePaths {
	t.Helper()
	db := writertest.OpenRaw(t, dbPath)
	rows, err := db.Query(`SELECT o.id, t.hash, COALESCE(b.id, ''), COALESCE(o.path_json, ''), o.timestamp,
			t.payload_type, COALESCE(t.from_pubkey, ''), o.resolved_path
		FROM observations o JOIN transmissions t ON t.id = o.transmission_id
		LEFT JOIN observers b ON b.rowid = o.observer_idx ORDER BY o.id`)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]*refRow{}
	var all []*refRow
	for rows.Next() {
		var row refRow
		var hash string
		var ptype int
		if err := rows.Scan(&row.id, &hash, &row.observer, &row.path, &row.ts, &ptype, &row.from, &row.stored); err != nil {
			t.Fatal(err)
		}
		row.advert = ptype == int(decoder.TypeAdvert)
		key := hash + "|" + row.observer + "|" + row.path
		if byKey[key] != nil {
			t.Fatalf("two observation rows for %s", key)
		}
		byKey[key] = &row
		all = append(all, &row)
	}
	rows.Close()

	ref := newReferencePaths(maxAgeDays)
	applied := map[*refRow]bool{}
	var lastID int64
	for _, rec := range recs {
		parts := strings.Split(rec.Topic, "/")
		if len(parts) != 4 || parts[3] != "packets" {
			continue
		}
		var m struct {
			Raw       string
			Direction string
		}
		if json.Unmarshal(rec.Payload, &m) != nil || m.Raw == "" || strings.EqualFold(m.Direction, "tx") {
			continue
		}
		f, err := decoder.DecodeFrame(m.Raw)
		if err != nil {
			continue
		}
		row := byKey[f.Hash.String()+"|"+parts[2]+"|"+f.PathJSON()]
		if row == nil {
			continue // dropped (bad signature, filtered)
		}
		if applied[row] {
			ref.repeatedRow(row, rec.ReceivedAt.Unix())
			ref.repeats++
			continue
		}
		if row.id <= lastID {
			t.Fatalf("observation %d created after observation %d", row.id, lastID)
		}
		lastID = row.id
		applied[row] = true
		ref.newRow(row)
	}
	if len(applied) != len(all) {
		t.Fatalf("%d observation rows, %d of them matched to a message", len(all), len(applied))
	}

	// The index the reference built is the nodes table.
	var nodes []string
	nr, err := db.Query(`SELECT public_key FROM nodes`)
	if err != nil {
		t.Fatal(err)
	}
	for nr.Next() {
		var k string
		nr.Scan(&k)
		nodes = append(nodes, k)
	}
	nr.Close()
	if len(nodes) != len(ref.nodes) {
		t.Errorf("nodes table has %d rows, the adverts stored name %d", len(nodes), len(ref.nodes))
	}

	bad := 0
	for _, row := range all {
		if row.stored != row.expected {
			if bad < 10 {
				t.Errorf("observation %d path %s: resolved_path %s, want %s", row.id, row.path, nullText(row.stored), nullText(row.expected))
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d observations have a wrong resolved_path", bad, len(all))
	}

	got := map[[2]string]refEdge{}
	er, err := db.Query(`SELECT node_a, node_b, count, last_seen FROM neighbor_edges`)
	if err != nil {
		t.Fatal(err)
	}
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
	er.Close()
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
		want, have := ref.edges[k], got[k]
		w := refEdge{}
		if want != nil {
			w = *want
		}
		if w != have {
			if wrong < 10 {
				t.Errorf("neighbor_edges %s–%s: count %d last_seen %d, want count %d last_seen %d", short(k[0]), short(k[1]), have.count, have.lastSeen, w.count, w.lastSeen)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d neighbor_edges rows differ from the reference", wrong, len(keys))
	}
	resolved := 0
	for _, row := range all {
		if row.stored.Valid {
			resolved++
		}
	}
	t.Logf("%d observations (%d repeated reports), %d with a resolved_path, %d hops settled by adjacency; %d nodes; %d edges",
		len(all), ref.repeats, resolved, ref.byAdjacency, len(ref.nodes), len(ref.edges))
	return ref
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
