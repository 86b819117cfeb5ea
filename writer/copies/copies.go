package writer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"slices"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// Two receivers with full subscriptions (receive --instance) each spool
// every publication: the writer must apply each MQTT publication once, and
// still count twice what an observer deliberately published twice (the
// corpus has such pairs, byte for byte equal).
//
// A publication is known by its identity: a digest of its topic and
// payload. Copies of one identity received within Window of each other
// (by their receive times) form a round. In a round, the k-th copy from a
// spool is applied only if no spool has supplied a k-th copy yet: the
// round's count is the maximum over the receivers, not the sum. A
// receiver that heard both of an observer's copies supplies the second
// one; a receiver that was down for one of them adds nothing.
//
// Rounds are looked up by the record's own receive time, never by the
// time the writer reads it, so a copy that reaches the writer late (a
// receiver whose disk lagged, or that froze with a group in memory) is
// matched to its round as long as the round is remembered: Memory of
// receive time behind the newest record applied. A copy with no round
// within the window is late in another way: a receiver that froze (a
// paused VM, SIGSTOP) reads what the broker buffered for it when it
// resumes and stamps it with that time. Such a copy joins the newest
// remembered round of its identity that its spool has not supplied a
// copy for, so it applies nothing again; but never a round older than the
// receiver's current subscription (a restarted receiver's Seqs jump), since
// a new QoS 0 subscription receives nothing published before it. Later than
// the memory a copy is applied (the limit the README states). The price:
// the same bytes published again more than a window later, and heard only
// by a receiver whose connection (not process) dropped during the first
// publication, count once, not twice.
//
// The memory is stored with the rows, like the QoS 1 delivery memory: each
// batch writes one row to meshingest_copies with the rounds it changed, so
// a writer that crashed between two copies of a publication does not apply
// the second. Rows whose rounds are all past the memory are deleted.

// Defaults of writer.dedupWindowMs and writer.dedupMemoryMinutes.
const (
	// DefaultDedupWindow: two receivers on one broker hear a publication
	// milliseconds apart; a few seconds also covers a receiver whose
	// clock or network is slower, and stays far below the interval at
	// which an observer re-publishes the same bytes on purpose.
	DefaultDedupWindow = 5 * time.Second
	// DefaultDedupMemory covers a receiver frozen or cut off for ten
	// minutes whose records are sealed when it resumes.
	DefaultDedupMemory = 15 * time.Minute
	// maxDedupWindow keeps a round within two memory buckets.
	maxDedupWindow = time.Minute
	// copiesMaxRounds bounds the memory whatever the rate: at 250
	// publications/s, 15 minutes are 225,000 rounds.
	// Past it the oldest minute is forgotten early (counted).
	copiesMaxRounds = 1 << 19
	// maxCopySpools is how many spools a round counts copies for: with
	// the offset and the applied count, a round is 8 bytes.
	maxCopySpools = 5
)

// DropOtherReceiver is a copy of a publication that another receiver's
// spool supplied already.
const DropOtherReceiver = "other_receiver_copy"

// stateCopySpools lists the spools (identities, in ordinal order) whose
// copies the rounds count: a round's counts are indexed by ordinal.
const stateCopySpools = "copies_spools"

// copyBucketMs is the width of a bucket of rounds, by receive time.
const copyBucketMs = int64(time.Minute / time.Millisecond)

// round is one publication's copies within the window.
type round struct {
	// off is the receive time of its first copy, in ms after the start
	// of its bucket (a minute fits 16 bits).
	off     uint16
	applied uint8 // copies applied
	counts  [maxCopySpools]uint8
}

// t0 is the receive time of the round's first copy, Unix ms.
func (ref roundRef) t0(r round) int64 { return ref.bucket*copyBucketMs + int64(r.off) }

// roundRef names a round: its bucket and identity.
type roundRef struct {
	bucket int64
	key    uint64
}

// copyMemory is the committed rounds, in buckets of a minute of receive
// time.
type copyMemory struct {
	buckets map[int64]map[uint64]round
	// spare is the last committed batch's map of changed rounds, emptied,
	// for the next batch: a batch changes thousands, and growing a new
	// map each time was a good part of what a second copy allocates.
	spare map[roundRef]round
	// qualified is "<identity>/<source>" by spool and source, the
	// delivery memory's source names when several spools are drained
	// (deliveryOf): built once, not for every record.
	qualified map[spoolSource]string
	rounds    int
	spools    []spool.Identity // ordinal → spool
	rows      []copyRow        // stored rows, oldest first
	evicted   uint64           // rounds forgotten early (copiesMaxRounds)
}

type copyRow struct {
	batch int64
	tMax  int64 // the newest round's t0 in it, Unix ms
}

func newCopyMemory() *copyMemory {
	return &copyMemory{buckets: map[int64]map[uint64]round{}}
}

// identity is a record's publication identity: its topic and payload. It
// is stored (meshingest_copies), so it must not change between versions.
func identity(rec *Record) uint64 {
	var buf []byte
	return identityWith(sha256.New(), &buf, rec)
}

// identityWith is identity with a hasher and a buffer the caller reuses
// (the topic is copied into buf: writing a string to a hash allocates).
func identityWith(h hash.Hash, buf *[]byte, rec *Record) uint64 {
	h.Reset()
	*buf = append(append((*buf)[:0], rec.Topic...), 0)
	h.Write(*buf)
	h.Write(rec.Payload)
	var sum [sha256.Size]byte
	return binary.LittleEndian.Uint64(h.Sum(sum[:0]))
}

type spoolSource struct {
	sp     spool.Identity
	source string
}

func (m *copyMemory) qualifiedSource(sp spool.Identity, source string) string {
	k := spoolSource{sp, source}
	q, ok := m.qualified[k]
	if !ok {
		if m.qualified == nil || len(m.qualified) > 64 {
			m.qualified = map[spoolSource]string{} // sources come and go with reloads
		}
		q = sp.String() + "/" + source
		m.qualified[k] = q
	}
	return q
}

// changedMap is an empty map for a batch's changed rounds.
func (m *copyMemory) changedMap() map[roundRef]round {
	ch := m.spare
	m.spare = nil
	if ch == nil {
		return map[roundRef]round{}
	}
	clear(ch)
	return ch
}

func (m *copyMemory) get(ref roundRef) (round, bool) {
	r, ok := m.buckets[ref.bucket][ref.key]
	return r, ok
}

func (m *copyMemory) put(ref roundRef, r round) {
	b := m.buckets[ref.bucket]
	if b == nil {
		b = map[uint64]round{}
		m.buckets[ref.bucket] = b
	}
	if _, ok := b[ref.key]; !ok {
		m.rounds++
	}
	b[ref.key] = r
}

// forgetBefore drops the buckets wholly before ms, and the oldest ones
// while more than copiesMaxRounds rounds are held.
func (m *copyMemory) forgetBefore(ms int64) {
	for {
		oldest, found := int64(0), false
		for k := range m.buckets {
			if !found || k < oldest {
				oldest, found = k, true
			}
		}
		if !found {
			return
		}
		if (oldest+1)*copyBucketMs > ms && m.rounds <= copiesMaxRounds {
			return
		}
		if (oldest+1)*copyBucketMs > ms {
			m.evicted += uint64(len(m.buckets[oldest]))
		}
		m.rounds -= len(m.buckets[oldest])
		delete(m.buckets, oldest)
	}
}

// copies is a batch's view of the rounds: what it changed, over the
// committed memory.
type copies struct {
	m       *copyMemory
	window  int64 // ms
	memory  int64 // ms: how far back a late copy is looked for
	changed map[roundRef]round
	spools  []spool.Identity // ordinals the batch added
	// live are the spools the writer drains now; reassigned the ordinals
	// the batch took from spools no longer drained.
	live       []spool.Identity
	reassigned []reassign
}

// ordinal is spool id's index in the rounds' counts, assigned on first use.
// When every index is taken (spools replaced over time), the index of a
// spool the writer no longer drains is given to id: its counts in rounds
// still remembered become id's, which can drop one of id's copies as a
// duplicate within the memory after the swap (the writer drains at most
// maxCopySpools spools, refreshSlots, so one is always free).
func (c *copies) ordinal(id spool.Identity) int {
	if len(c.reassigned) == 0 {
		// The common case, without building the list: once per record.
		if i := slices.Index(c.m.spools, id); i >= 0 {
			return i
		}
		if i := slices.Index(c.spools, id); i >= 0 {
			return len(c.m.spools) + i
		}
	}
	all := c.ordinals()
	for i, s := range all {
		if s == id {
			return i
		}
	}
	if len(all) < maxCopySpools {
		c.spools = append(c.spools, id)
		return len(all)
	}
	for i, s := range all {
		if !slices.Contains(c.live, s) {
			c.reassigned = append(c.reassigned, reassign{i, id})
			return i
		}
	}
	return maxCopySpools - 1 // not reached: refreshSlots drains at most maxCopySpools
}

// reassign gives ordinal i to spool id.
type reassign struct {
	i  int
	id spool.Identity
}

// ordinals is the ordinal → spool list as the batch sees it.
func (c *copies) ordinals() []spool.Identity {
	all := append(slices.Clone(c.m.spools), c.spools...)
	for _, r := range c.reassigned {
		all[r.i] = r.id
	}
	return all
}

func (c *copies) lookup(ref roundRef) (round, bool) {
	if r, ok := c.changed[ref]; ok {
		return r, true
	}
	return c.m.get(ref)
}

// admit decides whether rec, from spool id, is a copy to apply (true) or
// a copy of a publication another spool supplied already (false), and
// notes it in the batch. late: it was matched to a round outside the
// window.
//
// since is when the receiver's current subscription began (zero:
// unknown): a late copy belongs to a round no older than that, since a
// new subscription at QoS 0 receives nothing published before it.
//
// stream is the newest receive time applied before rec: rounds older than
// the memory behind it are forgotten, whether or not forgetBefore has
// dropped them yet. forgetBefore runs at commit and a restarted writer
// loads whole stored rows, so without this a copy past the memory was
// recognised or not depending on where batches happened to end.
//
// key is rec's identity (identity), computed by the caller.
func (c *copies) admit(rec *Record, key uint64, id spool.Identity, since, stream time.Time) (apply, late bool) {
	ord := c.ordinal(id)
	t := rec.ReceivedAt.UnixMilli()
	horizon := max(t, stream.UnixMilli()) - c.memory
	// The round is in t's bucket or a neighbour: its first copy lies
	// within the window of this one.
	ref, r, found := roundRef{}, round{}, false
	for _, b := range []int64{floorDiv(t, copyBucketMs), floorDiv(t-c.window, copyBucketMs), floorDiv(t+c.window, copyBucketMs)} {
		cand := roundRef{b, key}
		if got, ok := c.lookup(cand); ok && abs64(t-cand.t0(got)) <= c.window && cand.t0(got) >= horizon {
			ref, r, found = cand, got, true
			break
		}
	}
	if !found {
		// A late copy: a receiver frozen or cut off gets what the broker
		// buffered for it when it resumes, stamped with the time it reads
		// it, long after the others' copies. It belongs to the newest
		// remembered round of the identity that this spool has not
		// supplied its copy for yet.
		oldest := horizon
		if !since.IsZero() {
			oldest = max(oldest, since.UnixMilli()-c.window)
		}
		for b := floorDiv(t+c.window, copyBucketMs); b >= floorDiv(oldest, copyBucketMs) && !found; b-- {
			cand := roundRef{b, key}
			if got, ok := c.lookup(cand); ok && got.counts[ord] < got.applied && cand.t0(got) >= oldest {
				ref, r, found, late = cand, got, true, true
			}
		}
	}
	if !found {
		ref = roundRef{floorDiv(t, copyBucketMs), key}
		r = round{off: uint16(t - ref.bucket*copyBucketMs)}
	}
	if r.counts[ord] < 255 {
		r.counts[ord]++
	}
	apply = r.counts[ord] > r.applied
	if apply {
		r.applied = r.counts[ord]
	}
	c.changed[ref] = r
	return apply, late
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// loadCopies reads the stored rounds once per store (and again after
// forget), inside the batch's transaction.
func (s *store) loadCopies(ctx context.Context) error {
	if s.copies != nil {
		return nil
	}
	m := newCopyMemory()
	raw, ok, err := stateValue(ctx, s.conn, stateCopySpools)
	if err != nil {
		return err
	}
	if ok {
		if err := json.Unmarshal([]byte(raw), &m.spools); err != nil {
			return fmt.Errorf("read %s from meshingest_state: %q: %w; delete the row and meshingest_copies (copies then within the memory may be applied twice)", stateCopySpools, raw, err)
		}
	}
	rows, err := s.conn.QueryContext(ctx, `SELECT batch, t_max, rounds FROM meshingest_copies ORDER BY batch`)
	if err != nil {
		return fmt.Errorf("read the receivers' copies from meshingest_copies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r copyRow
		var blob []byte
		if err := rows.Scan(&r.batch, &r.tMax, &blob); err != nil {
			return fmt.Errorf("read the receivers' copies from meshingest_copies: %w", err)
		}
		if err := decodeRounds(blob, m.put); err != nil {
			return fmt.Errorf("read row %d of meshingest_copies: %w; delete the row (copies it lists may then be applied twice)", r.batch, err)
		}
		m.rows = append(m.rows, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the receivers' copies from meshingest_copies: %w", err)
	}
	s.copies = m
	return nil
}

// saveCopies stores the rounds the batch changed as one row, and deletes
// the rows past the memory, in the batch's transaction. horizon is the
// oldest receive time still remembered, Unix ms.
func (c *copies) save(ctx context.Context, s *store, horizon int64) (copyRow, int, error) {
	if len(c.spools) > 0 || len(c.reassigned) > 0 {
		raw, _ := json.Marshal(c.ordinals())
		if _, err := s.stmt.saveState.ExecContext(ctx, stateCopySpools, string(raw)); err != nil {
			return copyRow{}, 0, fmt.Errorf("store the receivers' spools: %w", err)
		}
	}
	var row copyRow
	if len(c.changed) > 0 {
		blob, tMax := encodeRounds(c.changed)
		res, err := s.conn.ExecContext(ctx, `INSERT INTO meshingest_copies (t_max, rounds) VALUES (?, ?)`, tMax, blob)
		if err != nil {
			return copyRow{}, 0, fmt.Errorf("store the batch's receiver copies: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return copyRow{}, 0, fmt.Errorf("store the batch's receiver copies: %w", err)
		}
		row = copyRow{batch: id, tMax: tMax}
	}
	drop := 0
	for drop < len(c.m.rows) && c.m.rows[drop].tMax < horizon-copyBucketMs {
		drop++
	}
	if drop > 0 {
		if _, err := s.conn.ExecContext(ctx, `DELETE FROM meshingest_copies WHERE batch <= ?`, c.m.rows[drop-1].batch); err != nil {
			return copyRow{}, 0, fmt.Errorf("delete old receiver copies: %w", err)
		}
	}
	return row, drop, nil
}

// commit moves the batch's rounds into the committed memory.
func (c *copies) commit(row copyRow, drop int, horizon int64) {
	m := c.m
	m.spools = c.ordinals()
	for ref, r := range c.changed {
		m.put(ref, r)
	}
	m.spare, c.changed = c.changed, nil
	m.rows = m.rows[drop:]
	if row.batch != 0 {
		m.rows = append(m.rows, row)
	}
	m.forgetBefore(horizon)
}

// The stored form of a batch's rounds: per round, the bucket (varint),
// the identity (8 bytes), t0 (varint, Unix ms), applied (1 byte) and the
// counts (maxCopySpools bytes).
func encodeRounds(rs map[roundRef]round) ([]byte, int64) {
	out := make([]byte, 0, len(rs)*(8+8+1+maxCopySpools+4))
	var tMax int64
	for ref, r := range rs {
		out = binary.AppendVarint(out, ref.bucket)
		out = binary.LittleEndian.AppendUint64(out, ref.key)
		out = binary.AppendVarint(out, ref.t0(r))
		out = append(out, r.applied)
		out = append(out, r.counts[:]...)
		tMax = max(tMax, ref.t0(r))
	}
	return out, tMax
}

var errRoundsDamaged = errors.New("damaged list of receiver copies")

func decodeRounds(b []byte, put func(roundRef, round)) error {
	for len(b) > 0 {
		var ref roundRef
		var r round
		var k int
		if ref.bucket, k = binary.Varint(b); k <= 0 || len(b)-k < 8 {
			return errRoundsDamaged
		}
		b = b[k:]
		ref.key = binary.LittleEndian.Uint64(b)
		b = b[8:]
		t0, k := binary.Varint(b)
		if k <= 0 || len(b)-k < 1+maxCopySpools || t0 < ref.bucket*copyBucketMs || t0 >= (ref.bucket+1)*copyBucketMs {
			return errRoundsDamaged
		}
		r.off = uint16(t0 - ref.bucket*copyBucketMs)
		b = b[k:]
		r.applied = b[0]
		copy(r.counts[:], b[1:1+maxCopySpools])
		b = b[1+maxCopySpools:]
		put(ref, r)
	}
	return nil
}

// copyGuess foresees, on the pipeline's goroutine, which records admit
// will recognise as another receiver's copy, so that prepare does not
// decode them: without it the second copy of a publication cost two
// thirds of the first (harness active-active-cost, 1.69×). It applies
// admit's rule within the window to the records the pipeline has read,
// which the drain loop applies in the same order; it knows nothing of
// the rounds committed before the pipeline started nor of late copies, so
// it can be wrong, and admit decides: a record guessed a copy that admit
// applies after all is prepared then (ingester.applyRecord).
type copyGuess struct {
	window int64 // ms
	h      hash.Hash
	buf    []byte
	spools []spool.Identity // ordinal → spool, in the order first read
	// Two generations of rounds (copies counted per spool) by identity,
	// each started at a receive time a window after the last: a round is
	// forgotten one to two windows after it began (admit: exactly one),
	// at 5 bytes a round.
	cur, prev map[uint64][maxCopySpools]uint8
	curStart  int64 // ms
}

func newCopyGuess(window time.Duration) *copyGuess {
	return &copyGuess{window: window.Milliseconds(), h: sha256.New(), cur: map[uint64][maxCopySpools]uint8{}, prev: map[uint64][maxCopySpools]uint8{}}
}

// note computes rec's identity and says whether rec looks like a copy
// another spool supplied already.
func (g *copyGuess) note(rec *Record, id spool.Identity) (key uint64, copy bool) {
	key = identityWith(g.h, &g.buf, rec)
	ord := slices.Index(g.spools, id)
	if ord < 0 {
		if len(g.spools) == maxCopySpools {
			return key, false
		}
		g.spools = append(g.spools, id)
		ord = len(g.spools) - 1
	}
	t := rec.ReceivedAt.UnixMilli()
	if t-g.curStart > g.window {
		clear(g.prev)
		g.prev, g.cur, g.curStart = g.cur, g.prev, t
	}
	counts, ok := g.cur[key]
	if !ok {
		counts = g.prev[key]
	}
	if counts[ord] < 255 {
		counts[ord]++
	}
	g.cur[key] = counts
	for i, n := range counts {
		if i != ord && n >= counts[ord] {
			return key, true
		}
	}
	return key, false
}
