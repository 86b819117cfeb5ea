package writer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer/copies"
	"github.com/meshingest/meshingest/writer/forms"
	"github.com/meshingest/meshingest/writer/internal/recent"
	"github.com/meshingest/meshingest/writer/redelivery"
)

// observationChunk is how many observations one multi-row INSERT writes.
const observationChunk = 32

// store owns the prepared statements and the caches of one open database.
// It is used by one goroutine only (the drain loop), like the connection.
type store struct {
	conn *sql.Conn

	// committed caches: they only ever hold what is durable in the
	// database, so a rolled-back batch cannot leave a wrong id behind.
	transmissions *recent.Cache[ContentKey, txEntry]
	observers     *recent.Cache[string, int64] // observers.id → rowid
	// badAdverts are adverts whose signature failed, by content hash: a
	// verdict of the bytes, so each is checked once.
	badAdverts *recent.Cache[ContentKey, decoder.Node]
	// memory is what committed batches applied under a QoS 1 packet id,
	// to recognise a broker's redelivery (redelivery.go); nil until read
	// from meshingest_deliveries.
	memory *redelivery.Memory
	// copies is the committed rounds of receivers' copies (copies.go,
	// package copies); nil until read from meshingest_copies.
	copies *copies.Memory
	// forms is the committed unpaired receptions (forms.go), retained the
	// last retained digest per source and topic (retained.go); nil until
	// read from meshingest_state and meshingest_retained.
	forms    *forms.Memory
	retained map[retainedKey]int64

	stmt struct {
		txByHash, insertTx, txFirstSeen, txLastSeen   *sql.Stmt
		insertObservation, insertObservations         *sql.Stmt
		observerRowid, insertObserver, updateObserver *sql.Stmt
		observerClock                                 *sql.Stmt
		upsertNode, inactiveNodeScope                 *sql.Stmt
		insertMetrics, insertDropped, saveState       *sql.Stmt
		insertDeliveries, pruneDeliveries             *sql.Stmt
		insertForms, pruneForms                       *sql.Stmt
	}
}

// txEntry is what the writer remembers of a transmission: its id, and the
// times it last knew were stored, so that an observation that changes
// neither costs no statement.
type txEntry struct {
	id        int64
	firstSeen int64 // unix seconds
	lastSeen  int64 // unix seconds
	// advert is kept for ADVERT transmissions: a duplicate observation of
	// an advert refreshes its node without decoding (or verifying) the
	// payload again.
	advert *NodeAdvert
}

// CacheOptions bound the writer's memory. Zero values mean the defaults.
type CacheOptions struct {
	// Transmissions is how many recent content hashes are remembered
	// (up to twice this many). Observations of one transmission arrive
	// within seconds, so minutes of traffic is plenty; a miss costs one
	// indexed SELECT. Default 16384 (at 250 msg/s, about half an hour of
	// transmissions; a catch-up reads them in order, seconds apart).
	Transmissions int
	// Observers is how many observer ids are remembered. Default 4096.
	Observers int
}

func (co CacheOptions) withDefaults() CacheOptions {
	if co.Transmissions <= 0 {
		co.Transmissions = 16384
	}
	if co.Observers <= 0 {
		co.Observers = 4096
	}
	return co
}

// The observation insert, for one row and for observationChunk rows:
// CoreScope's upsert, in which a repeated (transmission, observer, path)
// keeps the row and fills what it lacked.
const (
	observationColumns = `(transmission_id, observer_idx, direction, snr, rssi, score, path_json, timestamp, raw_hex, resolved_path)`
	observationValues  = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	observationUpsert  = `
			ON CONFLICT(transmission_id, observer_idx, COALESCE(path_json, '')) DO UPDATE SET
				snr           = COALESCE(excluded.snr, snr),
				rssi          = COALESCE(excluded.rssi, rssi),
				score         = COALESCE(excluded.score, score),
				direction     = COALESCE(excluded.direction, direction),
				raw_hex       = COALESCE(excluded.raw_hex, raw_hex),
				resolved_path = COALESCE(excluded.resolved_path, resolved_path)`
)

func newStore(ctx context.Context, conn *sql.Conn, co CacheOptions) (*store, error) {
	co = co.withDefaults()
	s := &store{
		conn:          conn,
		transmissions: recent.New[ContentKey, txEntry](co.Transmissions),
		observers:     recent.New[string, int64](co.Observers),
		badAdverts:    recent.New[ContentKey, decoder.Node](1024),
	}
	if err := s.prepare(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *store) prepare(ctx context.Context) error {
	st := &s.stmt
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&st.txByHash, `SELECT id, first_seen, last_seen, from_pubkey FROM transmissions WHERE hash = ?`},
		{&st.insertTx, `INSERT INTO transmissions
			(raw_hex, hash, first_seen, last_seen, route_type, payload_type, payload_version,
			 decoded_json, channel_hash, scope_name, from_pubkey)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&st.txFirstSeen, `UPDATE transmissions SET first_seen = ?1 WHERE id = ?2 AND first_seen > ?1`},
		{&st.txLastSeen, `UPDATE transmissions SET last_seen = ?1 WHERE id = ?2 AND last_seen < ?1`},
		{&st.insertObservation, `INSERT INTO observations ` + observationColumns + `
			VALUES ` + observationValues + observationUpsert},
		// The same for observationChunk rows at once: one statement
		// execution per chunk instead of per row, which saves the
		// per-statement work (cursors on the table and its six indexes).
		// OR FAIL: a constraint error (a NOT NULL one would be a bug)
		// stops the statement without undoing its earlier rows, so SQLite
		// keeps no statement journal for it (a copy of every page the
		// chunk touches; 6 % of the 1 M / 10 M catch-up profile); the
		// writer rolls the whole batch back on any error anyway.
		{&st.insertObservations, `INSERT OR FAIL INTO observations ` + observationColumns + `
			VALUES ` + strings.TrimSuffix(strings.Repeat(observationValues+", ", observationChunk), ", ") + observationUpsert},
		{&st.observerRowid, `SELECT rowid FROM observers WHERE id = ?`},
		// A new observer row is created before its first observation (so
		// observer_idx is never NULL) with packet_count 0; the batch's
		// aggregated update then adds what the messages say.
		{&st.insertObserver, `INSERT INTO observers (id, name, iata, first_seen, last_seen, packet_count)
			VALUES (?, ?, ?, ?, ?, 0)`},
		// One update per observer per batch. ?4 is the wall clock: a
		// last_seen in the future (left by an old bug) is first clamped
		// to now, then raised to the newest receive time, so it never
		// moves backwards when an old backlog is replayed.
		{&st.updateObserver, `UPDATE observers SET
			name           = COALESCE(?1, name),
			iata           = COALESCE(?2, iata),
			last_seen      = CASE WHEN ?3 IS NULL THEN last_seen ELSE MAX(MIN(COALESCE(last_seen, ''), ?4), ?3) END,
			last_packet_at = CASE WHEN ?5 IS NULL THEN last_packet_at ELSE MAX(MIN(COALESCE(last_packet_at, ''), ?4), ?5) END,
			packet_count   = COALESCE(packet_count, 0) + ?6,
			model          = COALESCE(?7, model),
			firmware       = COALESCE(?8, firmware),
			client_version = COALESCE(?9, client_version),
			radio          = COALESCE(?10, radio),
			battery_mv     = COALESCE(?11, battery_mv),
			uptime_secs    = COALESCE(?12, uptime_secs),
			noise_floor    = COALESCE(?13, noise_floor),
			can_relay      = COALESCE(?14, can_relay),
			can_relay_seen = CASE WHEN ?14 IS NULL THEN can_relay_seen ELSE 1 END,
			inactive       = CASE WHEN ?15 THEN 0 ELSE inactive END
			WHERE rowid = ?16`},
		// Naive envelope clocks: the count of events restarts when the
		// previous one is more than 24 h older than this one.
		{&st.observerClock, `UPDATE observers SET
			clock_skew_seconds   = ?1,
			clock_skew_count_24h = CASE WHEN clock_last_naive_at IS NULL OR clock_last_naive_at < ?3 THEN 1
			                            ELSE COALESCE(clock_skew_count_24h, 0) + 1 END,
			clock_last_naive_at  = ?2
			WHERE rowid = ?4`},
		{&st.upsertNode, `INSERT INTO nodes
			(public_key, name, role, lat, lon, last_seen, first_seen, advert_count, battery_mv, temperature_c, foreign_advert, default_scope)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
			ON CONFLICT(public_key) DO UPDATE SET
				name           = COALESCE(excluded.name, name),
				role           = COALESCE(excluded.role, role),
				lat            = COALESCE(excluded.lat, lat),
				lon            = COALESCE(excluded.lon, lon),
				last_seen      = MAX(MIN(COALESCE(last_seen, ''), ?13), excluded.last_seen),
				advert_count   = COALESCE(advert_count, 0) + excluded.advert_count,
				battery_mv     = COALESCE(excluded.battery_mv, battery_mv),
				temperature_c  = COALESCE(excluded.temperature_c, temperature_c),
				foreign_advert = MAX(COALESCE(foreign_advert, 0), excluded.foreign_advert),
				default_scope  = COALESCE(excluded.default_scope, default_scope)`},
		{&st.inactiveNodeScope, `UPDATE inactive_nodes SET default_scope = ? WHERE public_key = ?`},
		{&st.insertMetrics, `INSERT OR REPLACE INTO observer_metrics
			(observer_id, timestamp, noise_floor, tx_air_secs, rx_air_secs, recv_errors, battery_mv, packets_sent, packets_recv)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&st.insertDropped, `INSERT INTO dropped_packets
			(hash, raw_hex, reason, observer_id, observer_name, node_pubkey, node_name, dropped_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`},
		{&st.saveState, `INSERT INTO meshingest_state (key, value) VALUES (?, ?)
			ON CONFLICT(key) DO UPDATE SET value = excluded.value`},
		{&st.insertDeliveries, `INSERT INTO meshingest_deliveries (digests) VALUES (?)`},
		{&st.pruneDeliveries, `DELETE FROM meshingest_deliveries WHERE batch <= ?`},
		{&st.insertForms, `INSERT INTO meshingest_forms (changes) VALUES (?)`},
		{&st.pruneForms, `DELETE FROM meshingest_forms WHERE batch <= ?`},
	} {
		stmt, err := s.conn.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("prepare statement %q: %w", firstLine(p.sql), err)
		}
		*p.dst = stmt
	}
	return nil
}

func (s *store) close() {
	st := &s.stmt
	for _, p := range []*sql.Stmt{st.txByHash, st.insertTx, st.txFirstSeen, st.txLastSeen,
		st.insertObservation, st.insertObservations, st.observerRowid, st.insertObserver, st.updateObserver, st.observerClock,
		st.upsertNode, st.inactiveNodeScope, st.insertMetrics, st.insertDropped, st.saveState,
		st.insertDeliveries, st.pruneDeliveries, st.insertForms, st.pruneForms} {
		if p != nil {
			p.Close()
		}
	}
}

// forget empties the caches. The writer calls it whenever a batch failed:
// whatever made the database refuse it (a restore, a table rebuilt by hand,
// rows deleted by another process) may have invalidated ids.
func (s *store) forget() {
	s.transmissions.Clear()
	s.observers.Clear()
	s.memory = nil
	s.copies = nil
	s.forms = nil
	s.retained = nil
}

// lookupTransmission finds a stored transmission by content hash: in the
// cache, else with one indexed SELECT (whose answer is then cached).
func (s *store) lookupTransmission(ctx context.Context, key ContentKey, hash string) (txEntry, bool, error) {
	if e, ok := s.transmissions.Get(key); ok {
		return e, true, nil
	}
	var (
		e         txEntry
		firstSeen string
		fromKey   sql.NullString
	)
	err := s.stmt.txByHash.QueryRowContext(ctx, hash).Scan(&e.id, &firstSeen, &e.lastSeen, &fromKey)
	if errors.Is(err, sql.ErrNoRows) {
		return txEntry{}, false, nil
	}
	if err != nil {
		return txEntry{}, false, fmt.Errorf("look up transmission %s: %w", hash, err)
	}
	if fs, ok := ParseSeconds(firstSeen); ok {
		e.firstSeen = fs
	} else {
		// An unreadable first_seen compares as "later than anything", so
		// the next observation rewrites it with a good value.
		e.firstSeen = 1<<62 - 1
	}
	if fromKey.Valid {
		// The node fields are filled in by the caller when it needs them.
		e.advert = &NodeAdvert{PublicKey: fromKey.String}
	}
	s.transmissions.Put(key, e)
	return e, true, nil
}

// lookupObserver returns the rowid of an observer, from the cache or the
// table; ok is false if there is no such row.
func (s *store) lookupObserver(ctx context.Context, id string) (int64, bool, error) {
	if rowid, ok := s.observers.Get(id); ok {
		return rowid, true, nil
	}
	var rowid int64
	err := s.stmt.observerRowid.QueryRowContext(ctx, id).Scan(&rowid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up observer %q: %w", id, err)
	}
	s.observers.Put(id, rowid)
	return rowid, true, nil
}

// wallClock is the clamp for last_seen values in the future, as CoreScope
// does it; a variable so tests can pin it.
var wallClock = func() time.Time { return time.Now() }

// firstLine is a statement's first line, to name it in an error.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
