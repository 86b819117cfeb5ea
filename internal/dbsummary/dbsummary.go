// Package dbsummary reads the totals an operator (or a test) checks in a
// CoreScope database: rows per table, packets per payload type, decrypted
// channels. `meshingest demo` prints them; the end-to-end tests compare
// them with the corpus's expected totals.
package dbsummary

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/meshingest/meshingest/decoder"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Count is one labelled row count.
type Count struct {
	Name string
	N    int64
}

// Summary is what the database holds.
type Summary struct {
	Transmissions   int64
	Observations    int64
	Observers       int64
	Nodes           int64
	AdvertCountSum  int64 // sum of nodes.advert_count
	DroppedPackets  int64
	ObserverMetrics int64
	// ByPayloadType counts transmissions per payload type, most first.
	ByPayloadType []Count
	// Channels counts GRP_TXT transmissions per decrypted channel name,
	// most first; Undecrypted counts those whose channel_hash is enc_XX.
	Channels    []Count
	Undecrypted int64
}

// Read opens the database read-only and gathers the summary. It can run
// while the writer writes: it reads one consistent snapshot.
func Read(ctx context.Context, path string) (Summary, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&_pragma=busy_timeout(5000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return Summary{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Summary{}, fmt.Errorf("read %s: %w", path, err)
	}
	defer tx.Rollback()

	var s Summary
	for _, q := range []struct {
		into *int64
		sql  string
	}{
		{&s.Transmissions, "SELECT COUNT(*) FROM transmissions"},
		{&s.Observations, "SELECT COUNT(*) FROM observations"},
		{&s.Observers, "SELECT COUNT(*) FROM observers"},
		{&s.Nodes, "SELECT COUNT(*) FROM nodes"},
		{&s.AdvertCountSum, "SELECT COALESCE(SUM(advert_count), 0) FROM nodes"},
		{&s.DroppedPackets, "SELECT COUNT(*) FROM dropped_packets"},
		{&s.ObserverMetrics, "SELECT COUNT(*) FROM observer_metrics"},
		{&s.Undecrypted, "SELECT COUNT(*) FROM transmissions WHERE payload_type = 5 AND channel_hash LIKE 'enc\\_%' ESCAPE '\\'"},
	} {
		if err := tx.QueryRowContext(ctx, q.sql).Scan(q.into); err != nil {
			return Summary{}, fmt.Errorf("read %s: %s: %w; is it a CoreScope database?", path, q.sql, err)
		}
	}
	types, err := counts(ctx, tx, "SELECT payload_type, COUNT(*) FROM transmissions GROUP BY payload_type ORDER BY 2 DESC, 1")
	if err != nil {
		return Summary{}, fmt.Errorf("read %s: %w", path, err)
	}
	for _, c := range types {
		var t int
		fmt.Sscan(c.Name, &t)
		s.ByPayloadType = append(s.ByPayloadType, Count{Name: decoder.PayloadType(t).String(), N: c.N})
	}
	s.Channels, err = counts(ctx, tx, "SELECT channel_hash, COUNT(*) FROM transmissions WHERE payload_type = 5 AND channel_hash NOT LIKE 'enc\\_%' ESCAPE '\\' GROUP BY channel_hash ORDER BY 2 DESC, 1")
	if err != nil {
		return Summary{}, fmt.Errorf("read %s: %w", path, err)
	}
	return s, nil
}

func counts(ctx context.Context, tx *sql.Tx, q string) ([]Count, error) {
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Count
	for rows.Next() {
		var c Count
		if err := rows.Scan(&c.Name, &c.N); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Row is one extra line for the table: a label and its value.
type Row struct{ Label, Value string }

// WriteTable prints the summary as an aligned two-column table, followed
// by extra rows (spool depth, lag, where the database is).
func (s Summary) WriteTable(w io.Writer, extra ...Row) {
	rows := []Row{
		{"transmissions", fmt.Sprint(s.Transmissions)},
		{"observations", fmt.Sprint(s.Observations)},
		{"observers", fmt.Sprint(s.Observers)},
		{"nodes", fmt.Sprintf("%d (adverts counted: %d)", s.Nodes, s.AdvertCountSum)},
		{"observer metrics rows", fmt.Sprint(s.ObserverMetrics)},
		{"dropped packets (bad signature)", fmt.Sprint(s.DroppedPackets)},
		{"packets per type", joinCounts(s.ByPayloadType)},
		{"decrypted channels", joinCounts(s.Channels) + fmt.Sprintf("; %d GRP_TXT still encrypted", s.Undecrypted)},
	}
	rows = append(rows, extra...)
	width := 0
	for _, r := range rows {
		width = max(width, len(r.Label))
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  %s\n", width, r.Label, r.Value)
	}
}

func joinCounts(cs []Count) string {
	if len(cs) == 0 {
		return "none"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s %d", c.Name, c.N)
	}
	return strings.Join(parts, ", ")
}
