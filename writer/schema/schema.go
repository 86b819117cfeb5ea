// Package schema is CoreScope's database schema as meshingest keeps it: the
// tables, indexes and view CoreScope's server reads, the names of the
// one-time migrations CoreScope's ingestor records, and Migrate, which
// brings a new or existing database file to that shape in one transaction.
// The writer runs it at every open; the jobs (writer/jobs) rely on it.
package schema

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
)

// The CoreScope v3 schema as CoreScope a06ac8a leaves it
// (docs/reference/mqtt-formats.md §6), plus meshingest_state. A new file
// gets these tables as they are; an existing file (created by CoreScope
// e857e0b, a06ac8a, or by meshingest) is brought to the same shape by
// adding what is missing, never by rebuilding a table, so observer rowids
// (which observations reference) stay what they are.

// tableDDL creates each table in its final shape. nodes and inactive_nodes
// have the same columns in the same order, so CoreScope's retention
// (`INSERT INTO inactive_nodes SELECT * FROM nodes`) keeps working if it is
// ever run against a database meshingest created.
// Time formats CoreScope stores.
const (
	SecondsLayout  = "2006-01-02T15:04:05Z" // first_seen, last_seen, observer_metrics.timestamp
	DateTimeLayout = "2006-01-02 15:04:05"  // CURRENT_TIMESTAMP, dropped_packets.dropped_at
)

var tableDDL = []struct{ name, ddl string }{
	{"nodes", `CREATE TABLE IF NOT EXISTS nodes (` + nodeColumnsDDL + `)`},
	{"inactive_nodes", `CREATE TABLE IF NOT EXISTS inactive_nodes (` + nodeColumnsDDL + `)`},
	{"observers", `CREATE TABLE IF NOT EXISTS observers (
		id TEXT PRIMARY KEY,
		name TEXT,
		iata TEXT,
		last_seen TEXT,
		first_seen TEXT,
		packet_count INTEGER DEFAULT 0,
		model TEXT,
		firmware TEXT,
		client_version TEXT,
		radio TEXT,
		battery_mv INTEGER,
		uptime_secs INTEGER,
		noise_floor REAL,
		inactive INTEGER DEFAULT 0,
		last_packet_at TEXT DEFAULT NULL,
		clock_skew_seconds INTEGER DEFAULT NULL,
		clock_skew_count_24h INTEGER DEFAULT 0,
		clock_last_naive_at TEXT DEFAULT NULL,
		can_relay INTEGER DEFAULT 1,
		can_relay_seen INTEGER DEFAULT 0)`},
	{"transmissions", `CREATE TABLE IF NOT EXISTS transmissions (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		raw_hex TEXT NOT NULL,
		hash TEXT NOT NULL UNIQUE,
		first_seen TEXT NOT NULL,
		route_type INTEGER,
		payload_type INTEGER,
		payload_version INTEGER,
		decoded_json TEXT,
		from_pubkey TEXT,
		last_seen INTEGER NOT NULL DEFAULT 0,
		created_at TEXT DEFAULT (datetime('now')),
		channel_hash TEXT DEFAULT NULL,
		scope_name TEXT DEFAULT NULL)`},
	{"observations", `CREATE TABLE IF NOT EXISTS observations (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		transmission_id INTEGER NOT NULL REFERENCES transmissions(id),
		observer_idx INTEGER,
		direction TEXT,
		snr REAL,
		rssi REAL,
		score INTEGER,
		path_json TEXT,
		timestamp INTEGER NOT NULL,
		raw_hex TEXT,
		resolved_path TEXT)`},
	{"observer_metrics", `CREATE TABLE IF NOT EXISTS observer_metrics (
		observer_id TEXT NOT NULL,
		timestamp TEXT NOT NULL,
		noise_floor REAL,
		tx_air_secs INTEGER,
		rx_air_secs INTEGER,
		recv_errors INTEGER,
		battery_mv INTEGER,
		packets_sent INTEGER,
		packets_recv INTEGER,
		PRIMARY KEY (observer_id, timestamp))`},
	{"dropped_packets", `CREATE TABLE IF NOT EXISTS dropped_packets (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		hash TEXT,
		raw_hex TEXT,
		reason TEXT NOT NULL,
		observer_id TEXT,
		observer_name TEXT,
		node_pubkey TEXT,
		node_name TEXT,
		dropped_at DATETIME DEFAULT CURRENT_TIMESTAMP)`},
	{"neighbor_edges", `CREATE TABLE IF NOT EXISTS neighbor_edges (
		node_a TEXT NOT NULL,
		node_b TEXT NOT NULL,
		count INTEGER DEFAULT 1,
		last_seen TEXT,
		PRIMARY KEY (node_a, node_b))`},
	{"client_receptions", `CREATE TABLE IF NOT EXISTS client_receptions (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		rx_pubkey TEXT NOT NULL,
		heard_key TEXT NOT NULL,
		heard_keylen INTEGER NOT NULL,
		rssi INTEGER,
		snr REAL,
		lat REAL NOT NULL,
		lon REAL NOT NULL,
		pos_acc_m REAL,
		rx_at TEXT NOT NULL,
		ingested_at TEXT NOT NULL,
		src TEXT NOT NULL,
		UNIQUE (rx_pubkey, heard_key, rx_at))`},
	{"client_observers", `CREATE TABLE IF NOT EXISTS client_observers (
		pubkey TEXT PRIMARY KEY,
		name TEXT,
		last_seen TEXT)`},
	{"_migrations", `CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY)`},
	{"_async_migrations", `CREATE TABLE IF NOT EXISTS _async_migrations (
		name TEXT PRIMARY KEY,
		status TEXT NOT NULL,
		started_at TEXT NOT NULL DEFAULT (datetime('now')),
		ended_at TEXT,
		error TEXT)`},
	// meshingest_state holds the writer's spool position, written in the
	// same transaction as the rows the records up to it produced: the
	// one fact that makes a crash at any point lose or repeat nothing.
	{"meshingest_state", `CREATE TABLE IF NOT EXISTS meshingest_state (
		key TEXT PRIMARY KEY,
		value TEXT NOT NULL)`},
	// meshingest_deliveries remembers the latest QoS 1 deliveries applied
	// (a row per batch, written with its rows), so a broker's redelivery
	// is recognised across writer restarts (redelivery.go).
	{"meshingest_deliveries", `CREATE TABLE IF NOT EXISTS meshingest_deliveries (
		batch INTEGER PRIMARY KEY,
		digests BLOB NOT NULL)`},
	// meshingest_copies remembers the rounds of copies that receivers'
	// spools supplied of each publication (a row per batch, written with
	// its rows), so a copy is recognised across writer restarts
	// (package writer/copies).
	{"meshingest_copies", `CREATE TABLE IF NOT EXISTS meshingest_copies (
		batch INTEGER PRIMARY KEY,
		t_max INTEGER NOT NULL,
		rounds BLOB NOT NULL)`},
	// meshingest_forms holds the receptions counted whose other form
	// (`…/packets` or `…/raw`) has not come yet, as a log: a row per batch
	// that changed them, written with its rows (package writer/forms).
	{"meshingest_forms", `CREATE TABLE IF NOT EXISTS meshingest_forms (
		batch INTEGER PRIMARY KEY,
		changes BLOB NOT NULL)`},
	// meshingest_retained holds, per source and topic, the payload digest
	// (CRC-64) of the last retained message applied, so that the broker's
	// replay of it at the next subscribe changes nothing (retained.go).
	{"meshingest_retained", `CREATE TABLE IF NOT EXISTS meshingest_retained (
		source TEXT NOT NULL,
		topic TEXT NOT NULL,
		digest INTEGER NOT NULL,
		PRIMARY KEY (source, topic)) WITHOUT ROWID`},
	// meshingest_neighbor_reports keeps each `…/neighbors` report verbatim
	// (CoreScope a06ac8a has no place for it; neighbors.go).
	{"meshingest_neighbor_reports", `CREATE TABLE IF NOT EXISTS meshingest_neighbor_reports (
		id INTEGER PRIMARY KEY,
		observer_id TEXT NOT NULL,
		received_at TEXT NOT NULL,
		digest INTEGER NOT NULL,
		payload BLOB NOT NULL)`},
}

const nodeColumnsDDL = `
		public_key TEXT PRIMARY KEY,
		name TEXT,
		role TEXT,
		lat REAL,
		lon REAL,
		last_seen TEXT,
		first_seen TEXT,
		advert_count INTEGER DEFAULT 0,
		battery_mv INTEGER,
		temperature_c REAL,
		foreign_advert INTEGER DEFAULT 0,
		default_scope TEXT DEFAULT NULL,
		multibyte_sup INTEGER NOT NULL DEFAULT 0,
		multibyte_evidence TEXT`

// addedColumns are the columns CoreScope added over time with ALTER TABLE,
// in the order it added them. A table that lacks one gets it the same way.
var addedColumns = []struct{ table, column, decl string }{
	{"nodes", "battery_mv", "INTEGER"},
	{"nodes", "temperature_c", "REAL"},
	{"inactive_nodes", "battery_mv", "INTEGER"},
	{"inactive_nodes", "temperature_c", "REAL"},
	{"observers", "inactive", "INTEGER DEFAULT 0"},
	{"observer_metrics", "packets_sent", "INTEGER"},
	{"observer_metrics", "packets_recv", "INTEGER"},
	{"transmissions", "channel_hash", "TEXT DEFAULT NULL"},
	{"observations", "raw_hex", "TEXT"},
	{"observers", "last_packet_at", "TEXT DEFAULT NULL"},
	{"observers", "clock_skew_seconds", "INTEGER DEFAULT NULL"},
	{"observers", "clock_skew_count_24h", "INTEGER DEFAULT 0"},
	{"observers", "clock_last_naive_at", "TEXT DEFAULT NULL"},
	{"observers", "can_relay", "INTEGER DEFAULT 1"},
	{"observers", "can_relay_seen", "INTEGER DEFAULT 0"},
	{"observers", "iata", "TEXT"},
	{"nodes", "foreign_advert", "INTEGER DEFAULT 0"},
	{"inactive_nodes", "foreign_advert", "INTEGER DEFAULT 0"},
	{"transmissions", "from_pubkey", "TEXT"},
	{"transmissions", "last_seen", "INTEGER NOT NULL DEFAULT 0"},
	{"transmissions", "scope_name", "TEXT DEFAULT NULL"},
	{"nodes", "default_scope", "TEXT DEFAULT NULL"},
	{"inactive_nodes", "default_scope", "TEXT DEFAULT NULL"},
	{"nodes", "multibyte_sup", "INTEGER NOT NULL DEFAULT 0"},
	{"nodes", "multibyte_evidence", "TEXT"},
	{"inactive_nodes", "multibyte_sup", "INTEGER NOT NULL DEFAULT 0"},
	{"inactive_nodes", "multibyte_evidence", "TEXT"},
	{"observations", "resolved_path", "TEXT"},
}

// IndexDDL is every index of the schema. All are IF NOT EXISTS, so a
// database that has them is left alone.
var IndexDDL = []string{
	`CREATE INDEX IF NOT EXISTS idx_nodes_last_seen ON nodes(last_seen)`,
	`CREATE INDEX IF NOT EXISTS idx_nodes_foreign_advert ON nodes(foreign_advert) WHERE foreign_advert = 1`,
	`CREATE INDEX IF NOT EXISTS idx_inactive_nodes_last_seen ON inactive_nodes(last_seen)`,
	`CREATE INDEX IF NOT EXISTS idx_observers_last_seen ON observers(last_seen)`,
	`CREATE INDEX IF NOT EXISTS idx_transmissions_hash ON transmissions(hash)`,
	`CREATE INDEX IF NOT EXISTS idx_transmissions_first_seen ON transmissions(first_seen)`,
	`CREATE INDEX IF NOT EXISTS idx_transmissions_payload_type ON transmissions(payload_type)`,
	`CREATE INDEX IF NOT EXISTS idx_transmissions_from_pubkey ON transmissions(from_pubkey)`,
	`CREATE INDEX IF NOT EXISTS idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 5`,
	`CREATE INDEX IF NOT EXISTS idx_tx_scope_name ON transmissions(scope_name) WHERE scope_name IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS idx_tx_last_seen_zero ON transmissions(id) WHERE last_seen = 0`,
	`CREATE INDEX IF NOT EXISTS idx_observations_transmission_id ON observations(transmission_id)`,
	`CREATE INDEX IF NOT EXISTS idx_observations_observer_idx ON observations(observer_idx)`,
	`CREATE INDEX IF NOT EXISTS idx_observations_timestamp ON observations(timestamp)`,
	`CREATE INDEX IF NOT EXISTS idx_observations_tx_ts ON observations(transmission_id, timestamp)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))`,
	// CoreScope builds this one in the background (obs_observer_ts_idx_v1)
	// because it takes minutes on 10 M rows. The writer builds it before
	// it reports ready: the receiver keeps spooling meanwhile, so nothing
	// waits on it but the catch-up.
	`CREATE INDEX IF NOT EXISTS idx_observations_observer_idx_timestamp ON observations(observer_idx, timestamp)`,
	`CREATE INDEX IF NOT EXISTS idx_observer_metrics_timestamp ON observer_metrics(timestamp)`,
	`CREATE INDEX IF NOT EXISTS idx_dropped_observer ON dropped_packets(observer_id)`,
	`CREATE INDEX IF NOT EXISTS idx_dropped_node ON dropped_packets(node_pubkey)`,
	`CREATE INDEX IF NOT EXISTS idx_client_recept_heard_geo ON client_receptions(heard_key, heard_keylen, lat, lon)`,
	`CREATE INDEX IF NOT EXISTS idx_client_recept_latlon ON client_receptions(lat, lon)`,
	`CREATE INDEX IF NOT EXISTS idx_client_recept_rxat ON client_receptions(rx_at)`,
	`CREATE INDEX IF NOT EXISTS idx_meshingest_neighbor_reports_observer ON meshingest_neighbor_reports(observer_id, digest)`,
}

// packetsViewDDL is CoreScope's compatibility view, dropped and recreated
// at every start as CoreScope's ingestor does.
const packetsViewDDL = `CREATE VIEW packets_v AS
	SELECT o.id, COALESCE(o.raw_hex, t.raw_hex) AS raw_hex,
	       datetime(o.timestamp, 'unixepoch') AS timestamp,
	       obs.id AS observer_id, obs.name AS observer_name,
	       o.direction, o.snr, o.rssi, o.score, t.hash, t.route_type,
	       t.payload_type, t.payload_version, o.path_json, t.decoded_json,
	       t.created_at
	FROM observations o
	JOIN transmissions t ON t.id = o.transmission_id
	LEFT JOIN observers obs ON obs.rowid = o.observer_idx AND (obs.inactive IS NULL OR obs.inactive = 0)`

// MigrationNames are the 20 `_migrations` rows of a database CoreScope
// a06ac8a created. All are present after the writer opened a database, so
// CoreScope's ingestor, if it is ever pointed at it again, re-runs none of
// its one-time steps (some of which recount or delete rows).
var MigrationNames = []string{
	"advert_count_unique_v1",
	"noise_floor_real_v1",
	"node_telemetry_v1",
	"obs_timestamp_index_v1",
	"observer_metrics_v1",
	"observer_metrics_ts_idx",
	"observers_inactive_v1",
	"observer_metrics_packets_v1",
	"channel_hash_v1",
	"dropped_packets_v1",
	"observers_last_packet_at_v1",
	"observers_clock_naive_v1",
	"cleanup_legacy_null_hash_ts",
	"foreign_advert_v1",
	"from_pubkey_v1",
	"channel_hash_casing_v1",
	"scope_name_v1",
	"nodes_default_scope_v1",
	"observations_raw_hex_v1",
	"obs_observer_ts_idx_v1",
}

// dataMigrations are the named CoreScope migrations that change rows, not
// only the shape. On a database that lacks the name they run once, as in
// CoreScope, before the name is recorded; on a new database the tables are
// empty and they cost nothing.
var dataMigrations = []struct {
	name  string
	stmts []string
}{
	// Older CoreScope counted every advert observation; count each
	// distinct advert transmission once. Databases old enough to lack
	// this name predate from_pubkey, hence the JSON match.
	{"advert_count_unique_v1", []string{`UPDATE nodes SET advert_count = (
		SELECT COUNT(*) FROM transmissions t
		WHERE t.payload_type = 4 AND t.decoded_json LIKE '%' || nodes.public_key || '%')`}},
	{"noise_floor_real_v1", []string{`UPDATE observers SET noise_floor = CAST(noise_floor AS REAL)
		WHERE noise_floor IS NOT NULL AND typeof(noise_floor) = 'integer'`}},
	{"channel_hash_v1", []string{
		`UPDATE transmissions SET channel_hash = json_extract(decoded_json, '$.channel')
		 WHERE payload_type = 5 AND channel_hash IS NULL AND json_extract(decoded_json, '$.type') = 'CHAN'`,
		`UPDATE transmissions SET channel_hash = 'enc_' || json_extract(decoded_json, '$.channelHashHex')
		 WHERE payload_type = 5 AND channel_hash IS NULL AND json_extract(decoded_json, '$.type') = 'GRP_TXT'`,
	}},
	{"observers_last_packet_at_v1", []string{`UPDATE observers SET last_packet_at = last_seen
		WHERE last_packet_at IS NULL
		  AND rowid IN (SELECT DISTINCT observer_idx FROM observations WHERE observer_idx IS NOT NULL)`}},
	{"cleanup_legacy_null_hash_ts", []string{
		`DELETE FROM observations WHERE transmission_id IN (SELECT id FROM transmissions WHERE hash = '' OR first_seen = '')`,
		`DELETE FROM transmissions WHERE hash = '' OR first_seen = ''`,
	}},
	{"channel_hash_casing_v1", []string{`UPDATE transmissions SET channel_hash = 'Public'
		WHERE channel_hash = 'public' AND payload_type = 5`}},
}

// asyncObserverTimestampIndex is one of CoreScope's background migrations
// (_async_migrations); the writer builds the index synchronously.
const asyncObserverTimestampIndex = "obs_observer_ts_idx_v1"

// TxLastSeenBackfill is CoreScope's background migration that fills
// transmissions.last_seen of rows older than the column. The schema
// migration records it as pending on an upgraded database with such rows;
// the backfill job (writer/jobs) picks it up.
const TxLastSeenBackfill = "tx_last_seen_backfill_v1"

// Report says what Migrate found and did, for the start-up log.
type Report struct {
	Created         bool     // the file had no tables: everything was created
	AddedTables     []string // tables that were missing
	AddedColumns    []string // table.column added with ALTER TABLE
	RanMigrations   []string // named data migrations that ran
	AutoVacuum      int      // PRAGMA auto_vacuum: 2 is INCREMENTAL
	PendingBackfill bool     // transmissions.last_seen needs the async backfill
}

// Migrate brings the database to the current CoreScope schema. It is
// idempotent and safe on a database CoreScope created, and it runs in one
// transaction: a crash or a lock in the middle leaves the file as it was.
func Migrate(ctx context.Context, conn *sql.Conn, log zerolog.Logger) (Report, error) {
	var rep Report
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return rep, fmt.Errorf("migrate schema: begin: %w", err)
	}
	err := migrateInTx(ctx, conn, &rep)
	if err != nil {
		conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return rep, fmt.Errorf("migrate schema: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return rep, fmt.Errorf("migrate schema: commit: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&rep.AutoVacuum); err != nil {
		return rep, fmt.Errorf("migrate schema: read auto_vacuum: %w", err)
	}
	ev := log.Info()
	if rep.Created {
		ev.Msg("created a new database with the CoreScope schema")
	} else if len(rep.AddedTables)+len(rep.AddedColumns)+len(rep.RanMigrations) > 0 {
		ev.Strs("added_tables", rep.AddedTables).Strs("added_columns", rep.AddedColumns).
			Strs("ran_migrations", rep.RanMigrations).Msg("upgraded the database schema")
	} else {
		ev.Msg("database schema is current")
	}
	if rep.AutoVacuum != 2 {
		log.Warn().Int("auto_vacuum", rep.AutoVacuum).
			Msg("database does not use incremental auto-vacuum, so deleted rows never give space back; stop the writer and run `PRAGMA auto_vacuum=INCREMENTAL; VACUUM;` (see writer/MAINTENANCE.md)")
	}
	return rep, nil
}

func migrateInTx(ctx context.Context, conn *sql.Conn, rep *Report) error {
	existing, err := tableNames(ctx, conn)
	if err != nil {
		return err
	}
	rep.Created = len(existing) == 0
	_, hadMigrations := existing["_migrations"]
	_, hadTransmissions := existing["transmissions"]
	for _, t := range tableDDL {
		if _, ok := existing[t.name]; ok {
			continue
		}
		if _, err := conn.ExecContext(ctx, t.ddl); err != nil {
			return fmt.Errorf("create table %s: %w", t.name, err)
		}
		if !rep.Created {
			rep.AddedTables = append(rep.AddedTables, t.name)
		}
	}
	lastSeenWasMissing := false
	for _, c := range addedColumns {
		has, err := hasColumn(ctx, conn, c.table, c.column)
		if err != nil {
			return err
		}
		if has {
			continue
		}
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", c.table, c.column, c.decl)); err != nil {
			return fmt.Errorf("add column %s.%s: %w", c.table, c.column, err)
		}
		rep.AddedColumns = append(rep.AddedColumns, c.table+"."+c.column)
		if c.table == "transmissions" && c.column == "last_seen" {
			lastSeenWasMissing = true
		}
	}
	for _, ddl := range IndexDDL {
		if _, err := conn.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("create index: %w (%s)", err, firstLine(ddl))
		}
	}
	if _, err := conn.ExecContext(ctx, "DROP VIEW IF EXISTS packets_v"); err != nil {
		return fmt.Errorf("drop view packets_v: %w", err)
	}
	if _, err := conn.ExecContext(ctx, packetsViewDDL); err != nil {
		return fmt.Errorf("create view packets_v: %w", err)
	}
	done, err := recordedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	// A database without _migrations was not made by CoreScope's ingestor
	// (or is new): its rows, if any, were not written under the old rules
	// the data migrations repair.
	if hadMigrations && hadTransmissions {
		for _, m := range dataMigrations {
			if done[m.name] {
				continue
			}
			for _, s := range m.stmts {
				if _, err := conn.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("migration %s: %w", m.name, err)
				}
			}
			rep.RanMigrations = append(rep.RanMigrations, m.name)
		}
	}
	for _, name := range MigrationNames {
		if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO _migrations (name) VALUES (?)`, name); err != nil {
			return fmt.Errorf("record migration %s: %w", name, err)
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO _async_migrations (name, status, ended_at)
		VALUES (?, 'done', datetime('now'))`, asyncObserverTimestampIndex); err != nil {
		return fmt.Errorf("record async migration: %w", err)
	}
	backfillStatus := "done"
	if lastSeenWasMissing {
		var zero int
		if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM transmissions WHERE last_seen = 0)`).Scan(&zero); err != nil {
			return fmt.Errorf("check transmissions.last_seen: %w", err)
		}
		if zero == 1 {
			backfillStatus = "pending_async"
			rep.PendingBackfill = true
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO _async_migrations (name, status, ended_at)
		VALUES (?, ?, CASE WHEN ? = 'done' THEN datetime('now') END)`, TxLastSeenBackfill, backfillStatus, backfillStatus); err != nil {
		return fmt.Errorf("record async migration: %w", err)
	}
	return nil
}

func tableNames(ctx context.Context, conn *sql.Conn) (map[string]struct{}, error) {
	rows, err := conn.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	names := map[string]struct{}{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		if !strings.HasPrefix(n, "sqlite_") {
			names[n] = struct{}{}
		}
	}
	return names, rows.Err()
}

func hasColumn(ctx context.Context, conn *sql.Conn, table, column string) (bool, error) {
	var n int
	err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("inspect %s.%s: %w", table, column, err)
	}
	return n > 0, nil
}

func recordedMigrations(ctx context.Context, conn *sql.Conn) (map[string]bool, error) {
	rows, err := conn.QueryContext(ctx, `SELECT name FROM _migrations`)
	if err != nil {
		return nil, fmt.Errorf("read _migrations: %w", err)
	}
	defer rows.Close()
	done := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("read _migrations: %w", err)
		}
		done[n] = true
	}
	return done, rows.Err()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// AssertedColumns are the columns CoreScope's server checks at start
// (dbschema.AssertReady); it refuses to serve a database without them.
var AssertedColumns = []struct{ Table, Column string }{
	{"observations", "resolved_path"}, {"observations", "raw_hex"},
	{"observers", "inactive"}, {"observers", "last_packet_at"}, {"observers", "iata"},
	{"observers", "clock_skew_seconds"}, {"observers", "clock_skew_count_24h"}, {"observers", "clock_last_naive_at"},
	{"observers", "can_relay"}, {"observers", "can_relay_seen"},
	{"nodes", "foreign_advert"}, {"nodes", "default_scope"}, {"nodes", "multibyte_sup"}, {"nodes", "multibyte_evidence"},
	{"inactive_nodes", "foreign_advert"}, {"inactive_nodes", "default_scope"},
	{"inactive_nodes", "multibyte_sup"}, {"inactive_nodes", "multibyte_evidence"},
	{"transmissions", "from_pubkey"}, {"transmissions", "last_seen"}, {"transmissions", "scope_name"},
}
