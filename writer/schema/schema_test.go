package schema

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/rs/zerolog"
	_ "modernc.org/sqlite"
)

// e857e0bSchema is a database as CoreScope's ingestor at e857e0b (April
// 2026) left it (docs/reference/mqtt-formats.md §6: 11 migrations; no
// from_pubkey, transmissions.last_seen, scope_name, observer clock/relay/
// last_packet_at columns, node foreign/default_scope/multibyte columns,
// client tables or _async_migrations), in rollback-journal mode and without
// auto-vacuum, with a few rows.
const e857e0bSchema = `
CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL,
	last_seen TEXT, first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL);
CREATE TABLE observers (id TEXT PRIMARY KEY, name TEXT, iata TEXT, last_seen TEXT, first_seen TEXT,
	packet_count INTEGER DEFAULT 0, model TEXT, firmware TEXT, client_version TEXT, radio TEXT,
	battery_mv INTEGER, uptime_secs INTEGER, noise_floor REAL, inactive INTEGER DEFAULT 0);
CREATE INDEX idx_nodes_last_seen ON nodes(last_seen);
CREATE INDEX idx_observers_last_seen ON observers(last_seen);
CREATE TABLE inactive_nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL,
	last_seen TEXT, first_seen TEXT, advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL);
CREATE INDEX idx_inactive_nodes_last_seen ON inactive_nodes(last_seen);
CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, raw_hex TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
	first_seen TEXT NOT NULL, route_type INTEGER, payload_type INTEGER, payload_version INTEGER, decoded_json TEXT,
	created_at TEXT DEFAULT (datetime('now')));
CREATE INDEX idx_transmissions_hash ON transmissions(hash);
CREATE INDEX idx_transmissions_first_seen ON transmissions(first_seen);
CREATE INDEX idx_transmissions_payload_type ON transmissions(payload_type);
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT,
	transmission_id INTEGER NOT NULL REFERENCES transmissions(id), observer_idx INTEGER, direction TEXT,
	snr REAL, rssi REAL, score INTEGER, path_json TEXT, timestamp INTEGER NOT NULL);
CREATE INDEX idx_observations_transmission_id ON observations(transmission_id);
CREATE INDEX idx_observations_observer_idx ON observations(observer_idx);
CREATE INDEX idx_observations_timestamp ON observations(timestamp);
CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''));
CREATE TABLE _migrations (name TEXT PRIMARY KEY);
CREATE TABLE observer_metrics (observer_id TEXT NOT NULL, timestamp TEXT NOT NULL, noise_floor REAL,
	tx_air_secs INTEGER, rx_air_secs INTEGER, recv_errors INTEGER, battery_mv INTEGER,
	PRIMARY KEY (observer_id, timestamp));
CREATE INDEX idx_observer_metrics_timestamp ON observer_metrics(timestamp);
ALTER TABLE observer_metrics ADD COLUMN packets_sent INTEGER;
ALTER TABLE observer_metrics ADD COLUMN packets_recv INTEGER;
ALTER TABLE transmissions ADD COLUMN channel_hash TEXT DEFAULT NULL;
CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 5;
CREATE TABLE dropped_packets (id INTEGER PRIMARY KEY AUTOINCREMENT, hash TEXT, raw_hex TEXT, reason TEXT NOT NULL,
	observer_id TEXT, observer_name TEXT, node_pubkey TEXT, node_name TEXT, dropped_at DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_dropped_observer ON dropped_packets(observer_id);
CREATE INDEX idx_dropped_node ON dropped_packets(node_pubkey);
ALTER TABLE observations ADD COLUMN raw_hex TEXT;
INSERT INTO _migrations (name) VALUES ('advert_count_unique_v1'), ('noise_floor_real_v1'), ('node_telemetry_v1'),
	('obs_timestamp_index_v1'), ('observer_metrics_v1'), ('observer_metrics_ts_idx'), ('observers_inactive_v1'),
	('observer_metrics_packets_v1'), ('channel_hash_v1'), ('dropped_packets_v1'), ('observations_raw_hex_v1');
-- rows: two observers (the second has packets), one node, two transmissions
INSERT INTO observers (id, name, iata, last_seen, first_seen, packet_count) VALUES
	('STATUSONLY', 'quiet', 'SJC', '2026-04-01T10:00:00Z', '2026-04-01T10:00:00Z', 1),
	('AB12', 'busy', 'OAK', '2026-04-02T11:00:00Z', '2026-04-01T09:00:00Z', 7);
INSERT INTO nodes (public_key, name, role, last_seen, first_seen, advert_count) VALUES
	('aabbcc', 'R1', 'repeater', '2026-04-02T11:00:00Z', '2026-04-01T09:00:00Z', 3);
INSERT INTO transmissions (raw_hex, hash, first_seen, route_type, payload_type, payload_version, decoded_json, channel_hash) VALUES
	('1500AA', '1111111111111111', '2026-04-02T10:59:00Z', 1, 5, 0, '{"type":"CHAN","channel":"public"}', 'public'),
	('1100BB', '2222222222222222', '2026-04-02T11:00:00Z', 1, 4, 0, '{"type":"ADVERT","pubKey":"aabbcc"}', NULL);
INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp, raw_hex) VALUES
	(1, 2, '[]', 1775127540, '1500AA'), (2, 2, '["AA"]', 1775127600, '1100BB');
`

// a06ac8aSchema is a database CoreScope's ingestor at a06ac8a (July 2026)
// created: its CREATE TABLEs, then its ALTERs, 20 migrations, async
// migrations done, and a few rows.
const a06ac8aSchema = `
CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL, last_seen TEXT, first_seen TEXT,
	advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL, foreign_advert INTEGER DEFAULT 0);
CREATE TABLE observers (id TEXT PRIMARY KEY, name TEXT, iata TEXT, last_seen TEXT, first_seen TEXT, packet_count INTEGER DEFAULT 0,
	model TEXT, firmware TEXT, client_version TEXT, radio TEXT, battery_mv INTEGER, uptime_secs INTEGER, noise_floor REAL,
	inactive INTEGER DEFAULT 0, last_packet_at TEXT DEFAULT NULL, clock_skew_seconds INTEGER DEFAULT NULL,
	clock_skew_count_24h INTEGER DEFAULT 0, clock_last_naive_at TEXT DEFAULT NULL, can_relay INTEGER DEFAULT 1,
	can_relay_seen INTEGER DEFAULT 0);
CREATE INDEX idx_nodes_last_seen ON nodes(last_seen);
CREATE INDEX idx_observers_last_seen ON observers(last_seen);
CREATE TABLE inactive_nodes (public_key TEXT PRIMARY KEY, name TEXT, role TEXT, lat REAL, lon REAL, last_seen TEXT, first_seen TEXT,
	advert_count INTEGER DEFAULT 0, battery_mv INTEGER, temperature_c REAL, foreign_advert INTEGER DEFAULT 0);
CREATE INDEX idx_inactive_nodes_last_seen ON inactive_nodes(last_seen);
CREATE TABLE transmissions (id INTEGER PRIMARY KEY AUTOINCREMENT, raw_hex TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
	first_seen TEXT NOT NULL, route_type INTEGER, payload_type INTEGER, payload_version INTEGER, decoded_json TEXT,
	from_pubkey TEXT, last_seen INTEGER NOT NULL DEFAULT 0, created_at TEXT DEFAULT (datetime('now')));
CREATE INDEX idx_transmissions_hash ON transmissions(hash);
CREATE INDEX idx_transmissions_first_seen ON transmissions(first_seen);
CREATE INDEX idx_transmissions_payload_type ON transmissions(payload_type);
CREATE INDEX idx_tx_last_seen_zero ON transmissions(id) WHERE last_seen = 0;
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, transmission_id INTEGER NOT NULL REFERENCES transmissions(id),
	observer_idx INTEGER, direction TEXT, snr REAL, rssi REAL, score INTEGER, path_json TEXT, timestamp INTEGER NOT NULL);
CREATE INDEX idx_observations_transmission_id ON observations(transmission_id);
CREATE INDEX idx_observations_observer_idx ON observations(observer_idx);
CREATE INDEX idx_observations_timestamp ON observations(timestamp);
CREATE INDEX idx_observations_tx_ts ON observations(transmission_id, timestamp);
CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''));
CREATE TABLE _migrations (name TEXT PRIMARY KEY);
CREATE TABLE observer_metrics (observer_id TEXT NOT NULL, timestamp TEXT NOT NULL, noise_floor REAL, tx_air_secs INTEGER,
	rx_air_secs INTEGER, recv_errors INTEGER, battery_mv INTEGER, PRIMARY KEY (observer_id, timestamp));
CREATE INDEX idx_observer_metrics_timestamp ON observer_metrics(timestamp);
ALTER TABLE observer_metrics ADD COLUMN packets_sent INTEGER;
ALTER TABLE observer_metrics ADD COLUMN packets_recv INTEGER;
ALTER TABLE transmissions ADD COLUMN channel_hash TEXT DEFAULT NULL;
CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 5;
CREATE TABLE dropped_packets (id INTEGER PRIMARY KEY AUTOINCREMENT, hash TEXT, raw_hex TEXT, reason TEXT NOT NULL,
	observer_id TEXT, observer_name TEXT, node_pubkey TEXT, node_name TEXT, dropped_at DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX idx_dropped_observer ON dropped_packets(observer_id);
CREATE INDEX idx_dropped_node ON dropped_packets(node_pubkey);
CREATE INDEX idx_nodes_foreign_advert ON nodes(foreign_advert) WHERE foreign_advert = 1;
CREATE INDEX idx_transmissions_from_pubkey ON transmissions(from_pubkey);
CREATE TABLE neighbor_edges (node_a TEXT NOT NULL, node_b TEXT NOT NULL, count INTEGER DEFAULT 1, last_seen TEXT,
	PRIMARY KEY (node_a, node_b));
ALTER TABLE observations ADD COLUMN resolved_path TEXT;
ALTER TABLE transmissions ADD COLUMN scope_name TEXT DEFAULT NULL;
CREATE INDEX idx_tx_scope_name ON transmissions(scope_name) WHERE scope_name IS NOT NULL;
ALTER TABLE nodes ADD COLUMN default_scope TEXT DEFAULT NULL;
ALTER TABLE inactive_nodes ADD COLUMN default_scope TEXT DEFAULT NULL;
ALTER TABLE observations ADD COLUMN raw_hex TEXT;
ALTER TABLE nodes ADD COLUMN multibyte_sup INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN multibyte_evidence TEXT;
ALTER TABLE inactive_nodes ADD COLUMN multibyte_sup INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inactive_nodes ADD COLUMN multibyte_evidence TEXT;
CREATE TABLE client_receptions (id INTEGER PRIMARY KEY AUTOINCREMENT, rx_pubkey TEXT NOT NULL, heard_key TEXT NOT NULL,
	heard_keylen INTEGER NOT NULL, rssi INTEGER, snr REAL, lat REAL NOT NULL, lon REAL NOT NULL, pos_acc_m REAL,
	rx_at TEXT NOT NULL, ingested_at TEXT NOT NULL, src TEXT NOT NULL, UNIQUE (rx_pubkey, heard_key, rx_at));
CREATE TABLE client_observers (pubkey TEXT PRIMARY KEY, name TEXT, last_seen TEXT);
CREATE TABLE _async_migrations (name TEXT PRIMARY KEY, status TEXT NOT NULL,
	started_at TEXT NOT NULL DEFAULT (datetime('now')), ended_at TEXT, error TEXT);
CREATE INDEX idx_observations_observer_idx_timestamp ON observations(observer_idx, timestamp);
INSERT INTO _async_migrations (name, status, ended_at) VALUES ('obs_observer_ts_idx_v1', 'done', datetime('now')),
	('tx_last_seen_backfill_v1', 'done', datetime('now'));
INSERT INTO observers (id, name, iata, last_seen, first_seen, packet_count, last_packet_at) VALUES
	('AB12', 'busy', 'OAK', '2026-07-20T11:00:00Z', '2026-07-01T09:00:00Z', 9, '2026-07-20T11:00:00Z');
INSERT INTO transmissions (raw_hex, hash, first_seen, last_seen, route_type, payload_type, payload_version, channel_hash) VALUES
	('1500AA', '1111111111111111', '2026-07-20T10:59:00Z', 1784545140, 1, 5, 0, 'public');
INSERT INTO observations (transmission_id, observer_idx, path_json, timestamp, raw_hex) VALUES (1, 1, '[]', 1784545140, '1500AA');
`

func fixtureDB(t *testing.T, ddl string, extra ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meshcore.db")
	db := writertest.OpenRaw(t, path)
	if _, err := db.Exec(ddl); err != nil {
		t.Fatalf("fixture DDL: %v", err)
	}
	for _, s := range extra {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("fixture: %v", err)
		}
	}
	db.Close()
	return path
}

// openMigrated opens path as the writer does (incremental auto-vacuum,
// which only a new file takes, and WAL) and migrates it.
func openMigrated(t *testing.T, path string) (*sql.Conn, Report) {
	t.Helper()
	ctx := context.Background()
	db := writertest.OpenRaw(t, path)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for _, pragma := range []string{`PRAGMA auto_vacuum = INCREMENTAL`, `PRAGMA journal_mode = WAL`} {
		if _, err := conn.ExecContext(ctx, pragma); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Migrate(ctx, conn, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return conn, rep
}

// checkSchema asserts the database has the current CoreScope schema: what
// CoreScope's server asserts, every table, index and migration name, the
// view, WAL.
func checkSchema(t *testing.T, path string) {
	t.Helper()
	db := writertest.OpenRaw(t, path)
	for _, c := range AssertedColumns {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, c.Table, c.Column).Scan(&n); err != nil || n != 1 {
			t.Errorf("asserted column %s.%s missing (n=%d, err=%v)", c.Table, c.Column, n, err)
		}
	}
	for _, tbl := range tableDDL {
		var n int
		db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, tbl.name).Scan(&n)
		if n != 1 {
			t.Errorf("table %s missing", tbl.name)
		}
	}
	for _, c := range addedColumns {
		var n int
		db.QueryRow(`SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, c.table, c.column).Scan(&n)
		if n != 1 {
			t.Errorf("column %s.%s missing", c.table, c.column)
		}
	}
	for _, ddl := range IndexDDL {
		name := strings.Fields(strings.SplitN(ddl, " ON ", 2)[0])
		idx := name[len(name)-1]
		var n int
		db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?`, idx).Scan(&n)
		if n != 1 {
			t.Errorf("index %s missing", idx)
		}
	}
	var unique int
	db.QueryRow(`SELECT "unique" FROM pragma_index_list('observations') WHERE name = 'idx_observations_dedup'`).Scan(&unique)
	if unique != 1 {
		t.Error("idx_observations_dedup is not UNIQUE")
	}
	rows, err := db.Query(`SELECT name FROM _migrations`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	for _, want := range MigrationNames {
		if !slices.Contains(names, want) {
			t.Errorf("_migrations lacks %s", want)
		}
	}
	if _, err := db.Exec(`SELECT id, raw_hex, timestamp, observer_id, observer_name, direction, snr, rssi, score,
		hash, route_type, payload_type, payload_version, path_json, decoded_json, created_at FROM packets_v LIMIT 1`); err != nil {
		t.Errorf("packets_v: %v", err)
	}
	var mode string
	db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "wal" {
		t.Errorf("journal_mode = %s, want wal", mode)
	}
	for _, name := range []string{asyncObserverTimestampIndex, TxLastSeenBackfill} {
		var n int
		db.QueryRow(`SELECT COUNT(*) FROM _async_migrations WHERE name = ?`, name).Scan(&n)
		if n != 1 {
			t.Errorf("_async_migrations lacks %s", name)
		}
	}
}

func TestMigrate_NewDatabase_CreatesCurrentSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshcore.db")
	_, rep := openMigrated(t, path)
	if !rep.Created {
		t.Error("report does not say the database was created")
	}
	if rep.AutoVacuum != 2 {
		t.Errorf("auto_vacuum = %d, want 2 (INCREMENTAL)", rep.AutoVacuum)
	}
	checkSchema(t, path)
	// nodes and inactive_nodes must be column-compatible for CoreScope's
	// `INSERT INTO inactive_nodes SELECT * FROM nodes`.
	db := writertest.OpenRaw(t, path)
	cols := func(table string) []string {
		rows, _ := db.Query(`SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			out = append(out, n)
		}
		return out
	}
	if a, b := cols("nodes"), cols("inactive_nodes"); !slices.Equal(a, b) {
		t.Errorf("nodes columns %v != inactive_nodes columns %v", a, b)
	}
}

func TestMigrate_Twice_ChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshcore.db")
	conn, _ := openMigrated(t, path)
	rep, err := Migrate(context.Background(), conn, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Created || len(rep.AddedTables)+len(rep.AddedColumns)+len(rep.RanMigrations) > 0 {
		t.Errorf("second migrate changed things: %+v", rep)
	}
}

func TestMigrate_E857e0bDatabase_UpgradesKeepingRows(t *testing.T) {
	path := fixtureDB(t, e857e0bSchema)
	_, rep := openMigrated(t, path)
	if rep.Created {
		t.Fatal("existing database reported as created")
	}
	sort.Strings(rep.RanMigrations)
	want := []string{"channel_hash_casing_v1", "cleanup_legacy_null_hash_ts", "observers_last_packet_at_v1"}
	if !slices.Equal(rep.RanMigrations, want) {
		t.Errorf("ran migrations %v, want %v", rep.RanMigrations, want)
	}
	if !rep.PendingBackfill {
		t.Error("transmissions.last_seen was added to rows: the backfill must be recorded as pending")
	}
	checkSchema(t, path)
	db := writertest.OpenRaw(t, path)
	// Rows and observer rowids are untouched; the data migrations did what
	// CoreScope's do.
	var rowid int64
	var lastPacketAt sql.NullString
	db.QueryRow(`SELECT rowid, last_packet_at FROM observers WHERE id = 'AB12'`).Scan(&rowid, &lastPacketAt)
	if rowid != 2 {
		t.Errorf("observer AB12 rowid = %d, want 2 (observations reference it)", rowid)
	}
	if lastPacketAt.String != "2026-04-02T11:00:00Z" {
		t.Errorf("last_packet_at backfill = %v, want the observer's last_seen", lastPacketAt)
	}
	db.QueryRow(`SELECT last_packet_at FROM observers WHERE id = 'STATUSONLY'`).Scan(&lastPacketAt)
	if lastPacketAt.Valid {
		t.Errorf("status-only observer got last_packet_at %v", lastPacketAt)
	}
	var ch string
	db.QueryRow(`SELECT channel_hash FROM transmissions WHERE hash = '1111111111111111'`).Scan(&ch)
	if ch != "Public" {
		t.Errorf("channel_hash = %q, want Public (channel_hash_casing_v1)", ch)
	}
	var count, adverts int
	db.QueryRow(`SELECT COUNT(*) FROM observations`).Scan(&count)
	db.QueryRow(`SELECT advert_count FROM nodes WHERE public_key = 'aabbcc'`).Scan(&adverts)
	if count != 2 || adverts != 3 {
		t.Errorf("observations = %d, advert_count = %d; want 2 and 3 (untouched)", count, adverts)
	}
	var status string
	db.QueryRow(`SELECT status FROM _async_migrations WHERE name = ?`, TxLastSeenBackfill).Scan(&status)
	if status != "pending_async" {
		t.Errorf("%s status = %q, want pending_async", TxLastSeenBackfill, status)
	}
}

func TestMigrate_A06ac8aDatabase_NeedsNothing(t *testing.T) {
	names := make([]string, len(MigrationNames))
	for i, n := range MigrationNames {
		names[i] = "('" + n + "')"
	}
	path := fixtureDB(t, a06ac8aSchema,
		`INSERT INTO _migrations (name) VALUES `+strings.Join(names, ", "),
		`PRAGMA journal_mode = WAL`)
	_, rep := openMigrated(t, path)
	if len(rep.RanMigrations) > 0 || len(rep.AddedColumns) > 0 {
		t.Errorf("a current CoreScope database was changed: columns %v, migrations %v", rep.AddedColumns, rep.RanMigrations)
	}
	if !slices.Equal(rep.AddedTables, []string{"meshingest_state", "meshingest_deliveries", "meshingest_copies", "meshingest_forms", "meshingest_retained", "meshingest_neighbor_reports"}) {
		t.Errorf("added tables %v, want only meshingest's own", rep.AddedTables)
	}
	checkSchema(t, path)
	db := writertest.OpenRaw(t, path)
	var ch string
	db.QueryRow(`SELECT channel_hash FROM transmissions`).Scan(&ch)
	if ch != "public" {
		t.Errorf("channel_hash rewritten to %q although channel_hash_casing_v1 was recorded", ch)
	}
}
