package writer

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// dumpedTables are the tables whose every row and column two runs must
// agree on. created_at is SQLite's wall clock at insert, so it is left out;
// meshingest_state holds the spool position, compared separately.
var dumpedTables = []string{"transmissions", "observations", "observers", "nodes", "inactive_nodes",
	"observer_metrics", "dropped_packets", "neighbor_edges"}

// dumpDB returns every row of the dumped tables, in rowid order, as text;
// neighbor_edges by pair, without the rowid: the jobs rewrite its rows when
// a node is learned (writer/jobs/rederive.go), so the rowids depend on when
// that ran.
func dumpDB(t testing.TB, path string) map[string][]string {
	t.Helper()
	writertest.CheckForeignKeys(t, path)
	db := writertest.OpenRaw(t, path)
	out := map[string][]string{}
	for _, table := range dumpedTables {
		cols := columnsOf(t, db, table)
		var sel []string
		for _, c := range cols {
			if c != "created_at" {
				sel = append(sel, fmt.Sprintf("quote(%q)", c))
			}
		}
		q := fmt.Sprintf("SELECT rowid, %s FROM %s ORDER BY rowid", strings.Join(sel, ", "), table)
		if table == "neighbor_edges" {
			q = fmt.Sprintf("SELECT '', %s FROM %s ORDER BY node_a, node_b", strings.Join(sel, ", "), table)
		}
		rows, err := db.Query(q)
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for rows.Next() {
			vals := make([]any, len(sel)+1)
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				parts[i] = fmt.Sprint(v)
			}
			out[table] = append(out[table], strings.Join(parts, "|"))
		}
		rows.Close()
	}
	db.Close()
	return out
}

func columnsOf(t testing.TB, db *sql.DB, table string) []string {
	rows, err := db.Query(`SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		rows.Scan(&c)
		cols = append(cols, c)
	}
	return cols
}

// diffDumps reports the first differences between two dumps.
func diffDumps(t testing.TB, want, got map[string][]string) {
	t.Helper()
	for _, table := range dumpedTables {
		w, g := want[table], got[table]
		if len(w) != len(g) {
			t.Errorf("%s: %d rows, want %d", table, len(g), len(w))
		}
		shown := 0
		for i := 0; i < min(len(w), len(g)) && shown < 3; i++ {
			if w[i] != g[i] {
				t.Errorf("%s row %d:\n got %s\nwant %s", table, i, g[i], w[i])
				shown++
			}
		}
	}
}
