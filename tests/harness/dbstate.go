package harness

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	_ "modernc.org/sqlite" // the same pure-Go driver the writer uses

	"github.com/meshingest/meshingest/tests/loadgen"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/jobs"
)

// DBState is a database's content in a form two runs can be compared by:
// rows keyed by their natural keys (content hash, observer id, path,
// public key), never by rowids or autoincrement ids, which depend on arrival
// order; and without the columns that hold receive or wall-clock times,
// which differ between any two runs.
type DBState struct {
	// Rows per natural key, as "column=value" text.
	Transmissions map[string]string
	Observations  map[observation]string
	Observers     map[string]string
	Nodes         map[string]string
	// Dropped is dropped_packets as a multiset of rows (without id and
	// dropped_at).
	Dropped map[string]int
	// NeighborEdges (node_a|node_b → count) when the writer builds them.
	NeighborEdges map[string]string

	// Raw row counts: a doubled row would hide behind a map key.
	TransmissionRows, ObservationRows, DroppedRows, MetricsRows int
	// NullObserverIdx counts observations without an observer.
	NullObserverIdx int
	// Orphans counts rows whose parent is missing (PRAGMA
	// foreign_key_check: observations without their transmission).
	Orphans         int
	PacketCount     map[string]int
	AdvertCount     map[string]int
	DroppedByReason map[string]int

	observationRowsBy map[string]int // raw observation rows per observer id
}

// jobsSettled reports whether the writer's jobs have derived again what
// the nodes a drain taught them change: neighbor_edges and resolved_path
// are final only then (writer/jobs/README.md).
func jobsSettled(ctx context.Context, path string) bool {
	db, err := openDB(path)
	if err != nil {
		return false
	}
	defer db.Close()
	ok, err := jobs.Settled(ctx, db)
	return err == nil && ok
}

// ReadDBState reads the tables the harness compares.
func ReadDBState(path string) (*DBState, error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	s := &DBState{
		Transmissions: map[string]string{}, Observations: map[observation]string{}, Observers: map[string]string{},
		Nodes: map[string]string{}, Dropped: map[string]int{}, NeighborEdges: map[string]string{},
		PacketCount: map[string]int{}, AdvertCount: map[string]int{}, DroppedByReason: map[string]int{},
		observationRowsBy: map[string]int{},
	}
	queries := []struct {
		what string
		sql  string
		row  func(cols []sql.NullString)
	}{
		// Not raw_hex: a transmission keeps the bytes of its first
		// observation, which, like a rowid, depends on arrival order (a
		// broker's QoS 1 redelivery after a restart changes it); every
		// observation's own raw_hex is compared below.
		{"transmissions", `SELECT hash, route_type, payload_type, payload_version, decoded_json,
			from_pubkey, channel_hash, scope_name FROM transmissions`, func(c []sql.NullString) {
			s.Transmissions[c[0].String] = rowText([]string{"route_type", "payload_type", "payload_version", "decoded_json", "from_pubkey", "channel_hash", "scope_name"}, c[1:])
			s.TransmissionRows++
		}},
		{"observations", `SELECT t.hash, obs.id, o.path_json, o.direction, o.snr, o.rssi, o.score, o.raw_hex, o.resolved_path
			FROM observations o JOIN transmissions t ON t.id = o.transmission_id
			LEFT JOIN observers obs ON obs.rowid = o.observer_idx`, func(c []sql.NullString) {
			if !c[1].Valid {
				s.NullObserverIdx++
			}
			s.Observations[observation{c[0].String, c[1].String, c[2].String}] = rowText([]string{"direction", "snr", "rssi", "score", "raw_hex", "resolved_path"}, c[3:])
			s.ObservationRows++
			s.observationRowsBy[c[1].String]++
		}},
		{"observers", `SELECT id, packet_count, name, iata, model, firmware, client_version, radio, battery_mv, uptime_secs,
			noise_floor, inactive, clock_skew_count_24h, can_relay, can_relay_seen FROM observers`, func(c []sql.NullString) {
			s.Observers[c[0].String] = rowText([]string{"packet_count", "name", "iata", "model", "firmware", "client_version", "radio", "battery_mv", "uptime_secs", "noise_floor", "inactive", "clock_skew_count_24h", "can_relay", "can_relay_seen"}, c[1:])
			var n int
			fmt.Sscan(c[1].String, &n)
			s.PacketCount[c[0].String] = n
		}},
		{"nodes", `SELECT public_key, advert_count, name, role, lat, lon, foreign_advert, default_scope FROM nodes`, func(c []sql.NullString) {
			s.Nodes[c[0].String] = rowText([]string{"advert_count", "name", "role", "lat", "lon", "foreign_advert", "default_scope"}, c[1:])
			var n int
			fmt.Sscan(c[1].String, &n)
			s.AdvertCount[c[0].String] = n
		}},
		{"dropped_packets", `SELECT reason, hash, raw_hex, observer_id, observer_name, node_pubkey, node_name FROM dropped_packets`, func(c []sql.NullString) {
			s.Dropped[rowText([]string{"reason", "hash", "raw_hex", "observer_id", "observer_name", "node_pubkey", "node_name"}, c)]++
			s.DroppedByReason[c[0].String]++
			s.DroppedRows++
		}},
		{"neighbor_edges", `SELECT node_a || '|' || node_b, count FROM neighbor_edges`, func(c []sql.NullString) {
			s.NeighborEdges[c[0].String] = "count=" + c[1].String
		}},
		{"observer_metrics", `SELECT count(*) FROM observer_metrics`, func(c []sql.NullString) {
			fmt.Sscan(c[0].String, &s.MetricsRows)
		}},
		{"foreign key check", `SELECT count(*) FROM pragma_foreign_key_check`, func(c []sql.NullString) {
			fmt.Sscan(c[0].String, &s.Orphans)
		}},
	}
	for _, q := range queries {
		if err := scanRows(db, q.sql, q.row); err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", q.what, path, err)
		}
	}
	return s, nil
}

func openDB(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

func scanRows(db *sql.DB, query string, row func([]sql.NullString)) error {
	rows, err := db.Query(query)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row(vals)
	}
	return rows.Err()
}

func rowText(names []string, vals []sql.NullString) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(n)
		b.WriteByte('=')
		if vals[i].Valid {
			b.WriteString(vals[i].String)
		} else {
			b.WriteString("NULL")
		}
	}
	return b.String()
}

// TableDiff is how one table of a run differs from the reference run.
type TableDiff struct {
	Table                     string
	Missing, Extra, Different int
	// Examples are a few differing keys with both versions, for the report.
	Examples []string
}

func (d TableDiff) Equal() bool { return d.Missing == 0 && d.Extra == 0 && d.Different == 0 }

// CompareStates compares got with the reference run's want, table by table.
func CompareStates(got, want *DBState) []TableDiff {
	obsKey := func(m map[observation]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k.hash+" "+k.observer+" "+k.path] = v
		}
		return out
	}
	dropped := func(m map[string]int) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k] = fmt.Sprint(v)
		}
		return out
	}
	diffs := []TableDiff{
		diffMaps("transmissions", got.Transmissions, want.Transmissions),
		diffMaps("observations", obsKey(got.Observations), obsKey(want.Observations)),
		diffMaps("observers", got.Observers, want.Observers),
		diffMaps("nodes", got.Nodes, want.Nodes),
		diffMaps("dropped_packets (row → count)", dropped(got.Dropped), dropped(want.Dropped)),
		diffMaps("neighbor_edges", got.NeighborEdges, want.NeighborEdges),
	}
	if got.ObservationRows != want.ObservationRows {
		diffs[1].Different++
		diffs[1].Examples = append(diffs[1].Examples, fmt.Sprintf("row count %d, reference %d", got.ObservationRows, want.ObservationRows))
	}
	return diffs
}

func diffMaps(table string, got, want map[string]string) TableDiff {
	d := TableDiff{Table: table}
	keys := slices.Sorted(maps.Keys(want))
	for _, k := range keys {
		g, ok := got[k]
		switch {
		case !ok:
			d.Missing++
			d.example(fmt.Sprintf("missing %s", short(k)))
		case g != want[k]:
			d.Different++
			d.example(fmt.Sprintf("%s: got {%s}, reference {%s}", short(k), g, want[k]))
		}
	}
	extra := []string{}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	d.Extra = len(extra)
	for _, k := range extra {
		d.example("extra " + short(k))
	}
	return d
}

func (d *TableDiff) example(s string) {
	if len(d.Examples) < 3 {
		d.Examples = append(d.Examples, s)
	}
}

func short(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

// Reconciliation compares a database with what the generator says a
// correct writer holds after the messages it handed out.
type Reconciliation struct {
	ExpectedMessages int
	// Expected and found observation rows; Lost are expected keys missing.
	ExpectedObservations, FoundObservations, LostObservations, ExtraObservations int
	ExpectedTransmissions, FoundTransmissions                                    int
	// PacketCountLost/Doubled sum observers.packet_count below/above the
	// expectation (a lost or doubled message shows here even when its
	// observation row exists).
	PacketCountLost, PacketCountDoubled int
	// AdvertCountLost/Doubled: the same for nodes.advert_count.
	AdvertCountLost, AdvertCountDoubled int
	NodesExpected, NodesFound           int
	// DroppedRowsExpected/Found: dropped_packets rows for bad signatures
	// and unreadable payloads; drops without a row are counted from the
	// writer's stats (DropsCounted) against DropsExpected.
	DroppedRowsExpected, DroppedRowsFound int
	DropsExpected, DropsCounted           map[string]int
	// NoRowDropsLost are drops without a row the writer did not count;
	// only meaningful (ExactDrops) when no writer was SIGKILLed, since a
	// killed writer's last second of counters is gone with it.
	NoRowDropsLost  int
	ExactDrops      bool
	NullObserverIdx int
	Orphans         int
	// LostExamples are a few missing observations with their message Seq.
	LostExamples []string
	// lost are the missing observation keys, for attributing loss to the
	// fault that caused it.
	lost []observation
}

// MessagesLost counts messages whose effect is missing: every status and
// stored packet message adds one to its observer's packet_count, every
// bad-signature or unreadable message one dropped_packets row, every other
// undecodable message one count in the writer's drops.
func (r *Reconciliation) MessagesLost() int {
	return r.PacketCountLost + max(r.DroppedRowsExpected-r.DroppedRowsFound, 0) + r.NoRowDropsLost
}

// Lost is non-zero when anything expected is missing: messages, observation
// rows or advert counts.
func (r *Reconciliation) Lost() int {
	return r.MessagesLost() + r.LostObservations + r.AdvertCountLost
}

// Doubled counts effects found more often than published: packet_count
// and advert_count above expectation, dropped rows beyond the expected,
// observation rows no message explains.
func (r *Reconciliation) Doubled() int {
	return r.ExtraObservations + r.PacketCountDoubled + r.AdvertCountDoubled + max(r.DroppedRowsFound-r.DroppedRowsExpected, 0)
}

// writerReason maps a generator drop reason to the writer's: whether the
// writer stores a dropped_packets row for it, and the reason it counts.
func writerReason(reason string) (row bool, counted string) {
	switch reason {
	case loadgen.ReasonInvalidSignature:
		return true, writer.DropInvalidSignature
	case "not_json":
		return true, writer.DropUnreadable
	case "no_raw":
		return false, writer.DropNoRaw
	default: // a frame the firmware drops: no row, as in CoreScope
		return false, writer.DropInvalidFrame + ":" + reason
	}
}

// DroppedRowsExpected is the number of dropped_packets rows the writer
// stores for the drops of acct (the others it only counts).
func DroppedRowsExpected(acct loadgen.Accounting) int {
	n := 0
	for reason, k := range acct.Dropped {
		if row, _ := writerReason(reason); row {
			n += k
		}
	}
	return n
}

// Reconcile checks st against the generator's accounting and keys.
// drops are the writer's drop counters summed over its incarnations.
func Reconcile(st *DBState, acct loadgen.Accounting, keys []loadgen.ObservationKey, drops map[string]int64, exactDrops bool) *Reconciliation {
	r := &Reconciliation{
		ExactDrops:           exactDrops,
		ExpectedMessages:     acct.Messages,
		ExpectedObservations: acct.Observations, FoundObservations: st.ObservationRows,
		ExpectedTransmissions: acct.Transmissions, FoundTransmissions: st.TransmissionRows,
		NodesExpected: acct.Nodes, NodesFound: len(st.Nodes), NullObserverIdx: st.NullObserverIdx,
		Orphans:       st.Orphans,
		DropsExpected: map[string]int{}, DropsCounted: map[string]int{},
	}
	want := make(map[observation]bool, len(keys))
	for _, k := range keys {
		o := observation{k.Hash, k.ObserverID, k.PathJSON}
		want[o] = true
		if _, ok := st.Observations[o]; !ok {
			r.LostObservations++
			r.lost = append(r.lost, o)
			if len(r.LostExamples) < 5 {
				r.LostExamples = append(r.LostExamples, fmt.Sprintf("message %d: %s from %s path %s", k.FirstSeq, k.Hash, short(k.ObserverID), k.PathJSON))
			}
		}
	}
	for o := range st.Observations {
		if !want[o] {
			r.ExtraObservations++
		}
	}
	r.ExtraObservations += st.ObservationRows - len(st.Observations)
	for id, n := range acct.PacketCount {
		got := st.PacketCount[id]
		r.PacketCountLost += max(n-got, 0)
		r.PacketCountDoubled += max(got-n, 0)
	}
	for id, got := range st.PacketCount {
		if _, ok := acct.PacketCount[id]; !ok {
			r.PacketCountDoubled += got
		}
	}
	for k, n := range acct.AdvertCount {
		got := st.AdvertCount[k]
		r.AdvertCountLost += max(n-got, 0)
		r.AdvertCountDoubled += max(got-n, 0)
	}
	for reason, n := range acct.Dropped {
		row, counted := writerReason(reason)
		if row {
			r.DroppedRowsExpected += n
		}
		r.DropsExpected[counted] += n
	}
	r.DroppedRowsFound = st.DroppedRows
	for reason, n := range drops {
		r.DropsCounted[reason] += int(n)
	}
	if exactDrops {
		for reason, n := range acct.Dropped {
			if row, counted := writerReason(reason); !row {
				r.NoRowDropsLost += max(n-r.DropsCounted[counted], 0)
			}
		}
	}
	return r
}

// scanRowsAny scans rows of an integer id followed by n text columns.
func scanRowsAny(db *sql.DB, query string, args []any, row func(int64, []string), n int) error {
	rows, err := db.Query(query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var id int64
	vals := make([]string, n)
	ptrs := []any{&id}
	for i := range vals {
		ptrs = append(ptrs, &vals[i])
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row(id, slices.Clone(vals))
	}
	return rows.Err()
}

// Only returns the part of s that the given observers published: their
// observation rows, packet counts and dropped_packets rows, so that one
// database fed by several independent streams can be reconciled stream by
// stream. Transmissions, nodes and advert counts are kept whole (Reconcile
// looks at a stream's own keys only).
func (s *DBState) Only(observers map[string]bool) *DBState {
	out := *s
	out.Observations = map[observation]string{}
	out.ObservationRows = 0
	for k, v := range s.Observations {
		if observers[k.observer] {
			out.Observations[k] = v
			out.ObservationRows++
		}
	}
	// Doubled rows hide behind a map key: count them back in for the
	// observers, as the unfiltered row count does.
	out.ObservationRows += s.doubledRows(observers)
	out.PacketCount = map[string]int{}
	for id, n := range s.PacketCount {
		if observers[id] {
			out.PacketCount[id] = n
		}
	}
	out.Dropped, out.DroppedByReason, out.DroppedRows = map[string]int{}, map[string]int{}, 0
	for row, n := range s.Dropped {
		if observers[droppedObserver(row)] {
			out.Dropped[row] = n
			out.DroppedRows += n
		}
	}
	return &out
}

// doubledRows is how many observation rows of the observers a map key
// hid; s.observationRowsBy counts them per observer while reading.
func (s *DBState) doubledRows(observers map[string]bool) int {
	n := 0
	for id, rows := range s.observationRowsBy {
		if observers[id] {
			n += rows
		}
	}
	for k := range s.Observations {
		if observers[k.observer] {
			n--
		}
	}
	return n
}

// droppedObserver is the observer_id field of a dropped_packets row text.
func droppedObserver(row string) string {
	_, rest, ok := strings.Cut(row, " observer_id=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, " ")
	return id
}

// HasObservation reports whether the observation row of k is there.
func (s *DBState) HasObservation(k loadgen.ObservationKey) bool {
	_, ok := s.Observations[observation{k.Hash, k.ObserverID, k.PathJSON}]
	return ok
}
