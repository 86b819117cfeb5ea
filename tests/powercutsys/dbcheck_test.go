package powercutsys

import (
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/tests/harness"
	"github.com/meshingest/meshingest/tests/loadgen"
)

// fullCheckEvery is how often (in cuts) a check runs the whole
// PRAGMA integrity_check and foreign_key_check; the other cuts run
// PRAGMA quick_check and look for orphans among the rows written since the
// previous check only. integrity_check also checks every index against its
// table (a sort and a lookup per row), foreign_key_check looks every row's
// parent up: both read the whole database, and over 500 cuts of a growing
// database they were most of a cut's time. quick_check still reads every
// page (a torn or lost page shows the cut it happened), a damaged index
// shows within fullEvery cuts, and the last check after the run is full.
const fullCheckEvery = 25

// obsKey is an observation row's natural key: content hash, observer id,
// path_json.
type obsKey struct{ hash, observer, path string }

func keyOf(k loadgen.ObservationKey) obsKey { return obsKey{k.Hash, k.ObserverID, k.PathJSON} }

// dbLedger is what the checks have read of the database so far. Rows are
// only ever added to the tables it follows (no retention runs within a
// run's hours), and their AUTOINCREMENT ids only grow, so each check reads
// the rows above the last id it saw and compares the tables' row counts
// (from their indexes) with the rows it has read: a row lost in a cut, or
// one written below the last id seen, shows as a count that differs.
type dbLedger struct {
	lastObsID, lastDroppedID int64
	rows                     map[obsKey]int // observation key → rows read with it
	rowsBy                   map[string]int // observer id → observation rows read
	droppedBy                map[string]int // observer id → dropped_packets rows read
	// extraBy counts, per observer id, the rows no message explains: a
	// key no stream wanted when it was read, or a key read twice.
	extraBy               map[string]int
	dropped               int
	orphans, nullObserver int // rows read without their transmission / observer
}

func newDBLedger() *dbLedger {
	return &dbLedger{rows: map[obsKey]int{}, rowsBy: map[string]int{}, droppedBy: map[string]int{}, extraBy: map[string]int{}}
}

// dbSnapshot is what one check read: the ledger brought up to date, and
// the small tables whole.
type dbSnapshot struct {
	packetCount, advertCount map[string]int
	// countErrs are the row counts that differ from the ledger's.
	countErrs []string
}

// read brings the ledger up to date with the database and reads the
// observers' packet counts and the nodes' advert counts (tables of a few
// hundred rows). wanted reports whether a stream expects a key; the
// streams take in their generators' keys before, so a row read is
// explained by a message already handed out, or by none.
func (l *dbLedger) read(db *sql.DB, wanted func(obsKey) bool) (*dbSnapshot, error) {
	rows, err := db.Query(`SELECT o.id, t.hash, obs.id, coalesce(o.path_json, '')
		FROM observations o LEFT JOIN transmissions t ON t.id = o.transmission_id
		LEFT JOIN observers obs ON obs.rowid = o.observer_idx
		WHERE o.id > ? ORDER BY o.id`, l.lastObsID)
	if err != nil {
		return nil, fmt.Errorf("read new observations: %w", err)
	}
	for rows.Next() {
		var id int64
		var hash, observer sql.NullString
		var path string
		if err := rows.Scan(&id, &hash, &observer, &path); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read new observations: %w", err)
		}
		l.lastObsID = id
		if !hash.Valid {
			l.orphans++
		}
		if !observer.Valid {
			l.nullObserver++
		}
		k := obsKey{hash.String, observer.String, path}
		l.rows[k]++
		l.rowsBy[observer.String]++
		if l.rows[k] > 1 || !wanted(k) {
			l.extraBy[observer.String]++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read new observations: %w", err)
	}
	if err := scanPairs(db, `SELECT id, coalesce(observer_id, '') FROM dropped_packets WHERE id > ? ORDER BY id`,
		[]any{l.lastDroppedID}, func(id int64, observer string) {
			l.lastDroppedID = id
			l.droppedBy[observer]++
			l.dropped++
		}); err != nil {
		return nil, fmt.Errorf("read new dropped_packets: %w", err)
	}

	snap := &dbSnapshot{packetCount: map[string]int{}, advertCount: map[string]int{}}
	// Row counts through the indexes on observer_idx and observer_id:
	// each a walk of one small index, no table rows.
	counted := map[string]int{}
	if err := scanCounts(db, `SELECT coalesce(obs.id, ''), c.n FROM
		(SELECT observer_idx, count(*) AS n FROM observations GROUP BY observer_idx) c
		LEFT JOIN observers obs ON obs.rowid = c.observer_idx`, func(id string, n int) { counted[id] += n }); err != nil {
		return nil, fmt.Errorf("count observations: %w", err)
	}
	if !maps.Equal(counted, l.rowsBy) {
		snap.countErrs = append(snap.countErrs, fmt.Sprintf("observation rows per observer %v, the rows read since the start %v",
			diffCounts(counted, l.rowsBy), diffCounts(l.rowsBy, counted)))
	}
	var droppedRows int
	if err := db.QueryRow(`SELECT count(*) FROM dropped_packets`).Scan(&droppedRows); err != nil {
		return nil, fmt.Errorf("count dropped_packets: %w", err)
	}
	if droppedRows != l.dropped {
		snap.countErrs = append(snap.countErrs, fmt.Sprintf("%d dropped_packets rows, %d read since the start", droppedRows, l.dropped))
	}
	if err := scanCounts(db, `SELECT id, packet_count FROM observers`, func(id string, n int) { snap.packetCount[id] = n }); err != nil {
		return nil, fmt.Errorf("read observers: %w", err)
	}
	if err := scanCounts(db, `SELECT public_key, advert_count FROM nodes`, func(k string, n int) { snap.advertCount[k] = n }); err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	return snap, nil
}

// diffCounts is the entries of a that b does not have the same.
func diffCounts(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range a {
		if b[k] != v {
			out[k] = v
		}
	}
	return out
}

func scanPairs(db *sql.DB, q string, args []any, row func(int64, string)) error {
	rows, err := db.Query(q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			return err
		}
		row(id, s)
	}
	return rows.Err()
}

func scanCounts(db *sql.DB, q string, row func(string, int)) error {
	rows, err := db.Query(q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k sql.NullString
		var n sql.NullInt64
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		row(k.String, int(n.Int64))
	}
	return rows.Err()
}

// streamLedger is the running expectation of one stream: the observation
// keys its generator has handed out so far (read from the generator a
// tail at a time) and those not yet found in the database.
type streamLedger struct {
	gen       *loadgen.Generator
	observers map[string]bool
	keys      int // generator keys taken in
	want      map[obsKey]bool
	// missing are expected keys not found at the last check, with the
	// check that first missed them.
	missing map[obsKey]missingKey
}

type missingKey struct {
	key   loadgen.ObservationKey
	since int // the cut whose check first missed it
}

func newStreamLedger(gen *loadgen.Generator, observers map[string]bool) *streamLedger {
	return &streamLedger{gen: gen, observers: observers, want: map[obsKey]bool{}, missing: map[obsKey]missingKey{}}
}

// takeNew takes in the keys the generator handed out since the last call;
// it runs before the database is read, so every row read has its key
// wanted already (a message's key is recorded before it is published).
func (sl *streamLedger) takeNew(n int) {
	for _, k := range sl.gen.ExpectedFrom(sl.keys) {
		sl.keys++
		sl.want[keyOf(k)] = true
		sl.missing[keyOf(k)] = missingKey{key: k, since: n}
	}
}

// settle drops the keys found from missing and returns those missed for
// the first time by the check of cut n.
func (sl *streamLedger) settle(l *dbLedger, n int) (newlyMissing []loadgen.ObservationKey) {
	for k, m := range sl.missing {
		if l.rows[k] > 0 {
			delete(sl.missing, k)
		} else if m.since == n {
			newlyMissing = append(newlyMissing, m.key)
		}
	}
	slices.SortFunc(newlyMissing, func(a, b loadgen.ObservationKey) int { return a.FirstSeq - b.FirstSeq })
	return newlyMissing
}

// streamTally is one stream's losses and doubles by the ledger, in the
// terms of harness.Reconciliation.
type streamTally struct {
	lostObservations                    int
	packetCountLost, packetCountDoubled int
	advertCountLost, advertCountDoubled int
	droppedRowsLost, droppedRowsExtra   int
	extraObservations                   int
}

func (st streamTally) messagesLost() int { return st.packetCountLost + st.droppedRowsLost }
func (st streamTally) doubled() int {
	return st.extraObservations + st.packetCountDoubled + st.advertCountDoubled + st.droppedRowsExtra
}

// tally compares the stream with the ledger and the snapshot.
func (sl *streamLedger) tally(l *dbLedger, snap *dbSnapshot) streamTally {
	var out streamTally
	acct := sl.gen.Accounting()
	out.lostObservations = len(sl.missing)
	for id := range sl.observers {
		out.extraObservations += l.extraBy[id]
	}
	for id, n := range acct.PacketCount {
		got := snap.packetCount[id]
		out.packetCountLost += max(n-got, 0)
		out.packetCountDoubled += max(got-n, 0)
	}
	for id, got := range snap.packetCount {
		if _, ok := acct.PacketCount[id]; !ok && sl.observers[id] {
			out.packetCountDoubled += got
		}
	}
	for k, n := range acct.AdvertCount {
		got := snap.advertCount[k]
		out.advertCountLost += max(n-got, 0)
		out.advertCountDoubled += max(got-n, 0)
	}
	found := 0
	for id, n := range l.droppedBy {
		if sl.observers[id] {
			found += n
		}
	}
	want := harness.DroppedRowsExpected(acct)
	out.droppedRowsLost, out.droppedRowsExtra = max(want-found, 0), max(found-want, 0)
	return out
}

// checkIncremental is the check after each cut: the rows written since the
// previous check against the streams' running expectations, the row counts
// against the rows read, the packet and advert counts whole, and
// quick_check (integrity_check and foreign_key_check every fullCheckEvery
// cuts).
func (s *system) checkIncremental(n int) tally {
	t := s.t
	full := n%fullCheckEvery == 0
	ic, fk, err := s.integrityCheck(full)
	if err != nil {
		t.Fatalf("cut %d: open the database: %v", n, err)
	}
	if ic != "ok" {
		t.Errorf("cut %d: %s: %s", n, checkPragma(full), tailText([]byte(ic), 600))
	}
	if fk != 0 {
		t.Errorf("cut %d: foreign_key_check: %d rows", n, fk)
	}
	for _, sl := range []*streamLedger{s.ledger1, s.ledger0, s.ledgerI} {
		sl.takeNew(n)
	}
	db, err := s.openDB()
	if err != nil {
		t.Fatalf("cut %d: open the database: %v", n, err)
	}
	snap, err := s.ledger.read(db, func(k obsKey) bool {
		return s.ledger1.want[k] || s.ledger0.want[k] || s.ledgerI.want[k]
	})
	db.Close()
	if err != nil {
		t.Fatalf("cut %d: %v", n, err)
	}
	for _, e := range snap.countErrs {
		t.Errorf("cut %d: a row vanished or came back below the last id read: %s", n, e)
	}
	if s.ledger.orphans > 0 || s.ledger.nullObserver > 0 {
		t.Errorf("cut %d: %d observation rows without their transmission, %d without their observer", n, s.ledger.orphans, s.ledger.nullObserver)
	}
	var out tally

	// QoS 1: exactly once.
	s.ledger1.settle(s.ledger, n)
	r1 := s.ledger1.tally(s.ledger, snap)
	out.acked = int(s.pub1.Published())
	if s.corpusDone {
		out.acked += len(s.corpus)
	}
	out.lost, out.doubled = r1.messagesLost(), r1.doubled()
	if r1.messagesLost()+r1.lostObservations+r1.advertCountLost > 0 || r1.doubled() > 0 {
		var eg []string
		for _, m := range s.ledger1.missing {
			if len(eg) < 5 {
				eg = append(eg, fmt.Sprintf("message %d: %s from %s path %s", m.key.FirstSeq, m.key.Hash, m.key.ObserverID, m.key.PathJSON))
			}
		}
		t.Errorf("cut %d: QoS 1 stream: %d messages lost (%d observations, %d adverts), %d doubled; e.g. %v",
			n, r1.messagesLost(), r1.lostObservations, r1.advertCountLost, r1.doubled(), eg)
	}

	// The real capture: its observations once each, every message counted
	// once in its observer's packet_count.
	if s.corpusDone {
		rows := 0
		for id := range s.corpusObserver {
			rows += s.ledger.rowsBy[id]
		}
		if rows != corpusObservations {
			t.Errorf("cut %d: corpus: %d observation rows, want %d", n, rows, corpusObservations)
		}
		for id, want := range s.corpusCount {
			got := snap.packetCount[id]
			out.lost += max(want-got, 0)
			out.doubled += max(got-want, 0)
			if got != want {
				t.Errorf("cut %d: corpus observer %s: packet_count %d, want %d", n, id, got, want)
			}
		}
	}

	// Imports: a finished import exactly once; one the power cut short at
	// most once.
	s.ledgerI.settle(s.ledger, n)
	rI := s.ledgerI.tally(s.ledger, snap)
	if rI.doubled() > 0 {
		t.Errorf("cut %d: imports: %d doubled", n, rI.doubled())
	}
	out.doubled += rI.doubled()
	missing := 0
	for k := range s.ledgerI.missing {
		if !s.importsCut[s.ledgerI.missing[k].key] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("cut %d: %d observations of finished imports missing", n, missing)
		out.lost += missing
	}

	// QoS 0: never doubled; lost only in a cut's window. A QoS 0 message
	// is never sent again, so a key missed once is judged once (a later
	// duplicate of the same observation may still bring its row).
	newly0 := s.ledger0.settle(s.ledger, n)
	r0 := s.ledger0.tally(s.ledger, snap)
	if r0.doubled() > 0 {
		t.Errorf("cut %d: QoS 0 stream: %d doubled", n, r0.doubled())
	}
	out.doubled += r0.doubled()
	s.qos0Lost = len(s.ledger0.missing)
	for _, k := range newly0 {
		s.judgeQoS0Loss(n, k)
	}
	return out
}

// judgeQoS0Loss checks that a lost QoS 0 message was published in the
// window of a cut.
func (s *system) judgeQoS0Loss(n int, k loadgen.ObservationKey) {
	at, ok := s.pub0.ObservationPublished(k.Hash, k.ObserverID, k.PathJSON)
	if !ok {
		return // taken from the generator, never published
	}
	if c, ok := s.windowOf(at); ok {
		s.qos0WorstAge = max(s.qos0WorstAge, c.rxDownAt.Sub(at))
	} else {
		s.t.Errorf("cut %d: QoS 0 message %d (published %s) lost outside every cut's window (group window %s)",
			n, k.FirstSeq, at.Format(time.RFC3339Nano), spool.DefaultGroupWindow)
	}
}

func checkPragma(full bool) string {
	if full {
		return "integrity_check"
	}
	return "quick_check"
}
