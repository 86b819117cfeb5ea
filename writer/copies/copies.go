package copies

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"slices"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// Defaults of writer.dedupWindowMs and writer.dedupMemoryMinutes.
const (
	// DefaultWindow: two receivers on one broker hear a publication
	// milliseconds apart; a few seconds also covers a receiver whose
	// clock or network is slower, and stays far below the interval at
	// which an observer re-publishes the same bytes on purpose.
	DefaultWindow = 5 * time.Second
	// DefaultMemory covers a receiver frozen or cut off for ten minutes
	// whose records are sealed when it resumes.
	DefaultMemory = 15 * time.Minute
	// MaxWindow keeps a round within two memory buckets.
	MaxWindow = time.Minute
	// maxRounds bounds the memory whatever the rate: at 250
	// publications/s, 15 minutes are 225,000 rounds.
	// Past it the oldest minute is forgotten early (counted).
	maxRounds = 1 << 19
	// MaxSpools is how many spools a round counts copies for: with the
	// offset and the applied count, a round is 8 bytes.
	MaxSpools = 5
)

// bucketMs is the width of a bucket of rounds, by receive time.
const bucketMs = int64(time.Minute / time.Millisecond)

// Round is one publication's copies within the window.
type Round struct {
	// off is the receive time of its first copy, in ms after the start
	// of its bucket (a minute fits 16 bits).
	off     uint16
	applied uint8 // copies applied
	counts  [MaxSpools]uint8
}

// t0 is the receive time of the round's first copy, Unix ms.
func (ref Ref) t0(r Round) int64 { return ref.bucket*bucketMs + int64(r.off) }

// Ref names a round: its bucket and identity.
type Ref struct {
	bucket int64
	key    uint64
}

// Memory is the committed rounds, in buckets of a minute of receive time.
type Memory struct {
	buckets map[int64]map[uint64]Round
	// spare is the last committed batch's map of changed rounds, emptied,
	// for the next batch: a batch changes thousands, and growing a new
	// map each time was a good part of what a second copy allocates.
	spare map[Ref]Round
	// qualified is "<identity>/<source>" by spool and source, the
	// delivery memory's source names when several spools are drained
	// (writer deliveryOf): built once, not for every record.
	qualified map[spoolSource]string
	rounds    int
	spools    []spool.Identity // ordinal → spool
	rows      []Row            // stored rows, oldest first
	evicted   uint64           // rounds forgotten early (maxRounds)
}

// Row is a stored row of rounds (meshingest_copies).
type Row struct {
	Batch int64
	TMax  int64 // the newest round's t0 in it, Unix ms
}

// NewMemory is an empty memory whose rounds count the copies of spools,
// by ordinal (as stored, writer stateCopySpools).
func NewMemory(spools []spool.Identity) *Memory {
	return &Memory{buckets: map[int64]map[uint64]Round{}, spools: spools}
}

// Load adds a stored row and its rounds (Encode's form), oldest row first.
func (m *Memory) Load(row Row, rounds []byte) error {
	if err := Decode(rounds, m.put); err != nil {
		return err
	}
	m.rows = append(m.rows, row)
	return nil
}

// Identity is a record's publication identity: its topic and payload. It
// is stored (meshingest_copies), so it must not change between versions.
func Identity(rec *spool.Record) uint64 {
	var buf []byte
	return identityWith(sha256.New(), &buf, rec)
}

// identityWith is Identity with a hasher and a buffer the caller reuses
// (the topic is copied into buf: writing a string to a hash allocates).
func identityWith(h hash.Hash, buf *[]byte, rec *spool.Record) uint64 {
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

func (m *Memory) qualifiedSource(sp spool.Identity, source string) string {
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
func (m *Memory) changedMap() map[Ref]Round {
	ch := m.spare
	m.spare = nil
	if ch == nil {
		return map[Ref]Round{}
	}
	clear(ch)
	return ch
}

func (m *Memory) get(ref Ref) (Round, bool) {
	r, ok := m.buckets[ref.bucket][ref.key]
	return r, ok
}

func (m *Memory) put(ref Ref, r Round) {
	b := m.buckets[ref.bucket]
	if b == nil {
		b = map[uint64]Round{}
		m.buckets[ref.bucket] = b
	}
	if _, ok := b[ref.key]; !ok {
		m.rounds++
	}
	b[ref.key] = r
}

// forgetBefore drops the buckets wholly before ms, and the oldest ones
// while more than maxRounds rounds are held.
func (m *Memory) forgetBefore(ms int64) {
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
		if (oldest+1)*bucketMs > ms && m.rounds <= maxRounds {
			return
		}
		if (oldest+1)*bucketMs > ms {
			m.evicted += uint64(len(m.buckets[oldest]))
		}
		m.rounds -= len(m.buckets[oldest])
		delete(m.buckets, oldest)
	}
}

// View is a batch's view of the rounds: what it changed, over the
// committed memory.
type View struct {
	m       *Memory
	window  int64 // ms
	memory  int64 // ms: how far back a late copy is looked for
	changed map[Ref]Round
	spools  []spool.Identity // ordinals the batch added
	// live are the spools the writer drains now; reassigned the ordinals
	// the batch took from spools no longer drained.
	live       []spool.Identity
	reassigned []reassign
}

// View starts a batch's view of m: copies within window of each other
// are one publication's, a late copy is looked for memory back; live are
// the spools the writer drains now.
func (m *Memory) View(window, memory time.Duration, live []spool.Identity) *View {
	return &View{m: m, window: window.Milliseconds(), memory: memory.Milliseconds(), changed: m.changedMap(), live: live}
}

// QualifiedSource is source qualified by spool sp, "<identity>/<source>":
// the delivery memory's source name when several spools are drained.
func (c *View) QualifiedSource(sp spool.Identity, source string) string {
	return c.m.qualifiedSource(sp, source)
}

// ordinal is spool id's index in the rounds' counts, assigned on first use.
// When every index is taken (spools replaced over time), the index of a
// spool the writer no longer drains is given to id: its counts in rounds
// still remembered become id's, which can drop one of id's copies as a
// duplicate within the memory after the swap (the writer drains at most
// MaxSpools spools, writer refreshSlots, so one is always free).
func (c *View) ordinal(id spool.Identity) int {
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
	if len(all) < MaxSpools {
		c.spools = append(c.spools, id)
		return len(all)
	}
	for i, s := range all {
		if !slices.Contains(c.live, s) {
			c.reassigned = append(c.reassigned, reassign{i, id})
			return i
		}
	}
	return MaxSpools - 1 // not reached: refreshSlots drains at most MaxSpools
}

// reassign gives ordinal i to spool id.
type reassign struct {
	i  int
	id spool.Identity
}

// ordinals is the ordinal → spool list as the batch sees it.
func (c *View) ordinals() []spool.Identity {
	all := append(slices.Clone(c.m.spools), c.spools...)
	for _, r := range c.reassigned {
		all[r.i] = r.id
	}
	return all
}

func (c *View) lookup(ref Ref) (Round, bool) {
	if r, ok := c.changed[ref]; ok {
		return r, true
	}
	return c.m.get(ref)
}

// Admit decides whether rec, from spool id, is a copy to apply (true) or
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
// key is rec's Identity, computed by the caller.
func (c *View) Admit(rec *spool.Record, key uint64, id spool.Identity, since, stream time.Time) (apply, late bool) {
	ord := c.ordinal(id)
	t := rec.ReceivedAt.UnixMilli()
	horizon := max(t, stream.UnixMilli()) - c.memory
	// The round is in t's bucket or a neighbour: its first copy lies
	// within the window of this one.
	ref, r, found := Ref{}, Round{}, false
	for _, b := range []int64{floorDiv(t, bucketMs), floorDiv(t-c.window, bucketMs), floorDiv(t+c.window, bucketMs)} {
		cand := Ref{b, key}
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
		for b := floorDiv(t+c.window, bucketMs); b >= floorDiv(oldest, bucketMs) && !found; b-- {
			cand := Ref{b, key}
			if got, ok := c.lookup(cand); ok && got.counts[ord] < got.applied && cand.t0(got) >= oldest {
				ref, r, found, late = cand, got, true, true
			}
		}
	}
	if !found {
		ref = Ref{floorDiv(t, bucketMs), key}
		r = Round{off: uint16(t - ref.bucket*bucketMs)}
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

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// Spools is the ordinal → spool list to store, and whether the batch
// changed it (added or reassigned an ordinal).
func (c *View) Spools() ([]spool.Identity, bool) {
	if len(c.spools) == 0 && len(c.reassigned) == 0 {
		return nil, false
	}
	return c.ordinals(), true
}

// Encode is the stored form of the rounds the batch changed and the
// newest round's t0 in it; false when it changed none.
func (c *View) Encode() ([]byte, int64, bool) {
	if len(c.changed) == 0 {
		return nil, 0, false
	}
	blob, tMax := Encode(c.changed)
	return blob, tMax, true
}

// Stale is how many of the stored rows, oldest first, hold only rounds
// past the memory (horizon is the oldest receive time still remembered,
// Unix ms), and the last of them's Batch.
func (c *View) Stale(horizon int64) (drop int, through int64) {
	for drop < len(c.m.rows) && c.m.rows[drop].TMax < horizon-bucketMs {
		drop++
	}
	if drop > 0 {
		through = c.m.rows[drop-1].Batch
	}
	return drop, through
}

// Commit moves the batch's rounds into the committed memory: row is the
// row the batch stored (zero Batch: none), drop how many of the oldest
// it deleted (Stale).
func (c *View) Commit(row Row, drop int, horizon int64) {
	m := c.m
	m.spools = c.ordinals()
	for ref, r := range c.changed {
		m.put(ref, r)
	}
	m.spare, c.changed = c.changed, nil
	m.rows = m.rows[drop:]
	if row.Batch != 0 {
		m.rows = append(m.rows, row)
	}
	m.forgetBefore(horizon)
}

// Encode is the stored form of rounds: per round, the bucket (varint),
// the identity (8 bytes), t0 (varint, Unix ms), applied (1 byte) and the
// counts (MaxSpools bytes); and the newest round's t0, Unix ms.
func Encode(rs map[Ref]Round) ([]byte, int64) {
	out := make([]byte, 0, len(rs)*(8+8+1+MaxSpools+4))
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

// ErrDamaged is a stored list of rounds that does not decode.
var ErrDamaged = errors.New("damaged list of receiver copies")

// Decode reads Encode's form, handing each round to put.
func Decode(b []byte, put func(Ref, Round)) error {
	for len(b) > 0 {
		var ref Ref
		var r Round
		var k int
		if ref.bucket, k = binary.Varint(b); k <= 0 || len(b)-k < 8 {
			return ErrDamaged
		}
		b = b[k:]
		ref.key = binary.LittleEndian.Uint64(b)
		b = b[8:]
		t0, k := binary.Varint(b)
		if k <= 0 || len(b)-k < 1+MaxSpools || t0 < ref.bucket*bucketMs || t0 >= (ref.bucket+1)*bucketMs {
			return ErrDamaged
		}
		r.off = uint16(t0 - ref.bucket*bucketMs)
		b = b[k:]
		r.applied = b[0]
		copy(r.counts[:], b[1:1+MaxSpools])
		b = b[1+MaxSpools:]
		put(ref, r)
	}
	return nil
}

// Guess foresees, on the pipeline's goroutine, which records Admit will
// recognise as another receiver's copy, so that the writer's prepare does
// not decode them: without it the second copy of a publication cost two
// thirds of the first (harness active-active-cost, 1.69×). It applies
// Admit's rule within the window to the records the pipeline has read,
// which the drain loop applies in the same order; it knows nothing of
// the rounds committed before the pipeline started nor of late copies, so
// it can be wrong, and Admit decides: a record guessed a copy that Admit
// applies after all is prepared then (writer ingester.applyRecord).
type Guess struct {
	window int64 // ms
	h      hash.Hash
	buf    []byte
	spools []spool.Identity // ordinal → spool, in the order first read
	// Two generations of rounds (copies counted per spool) by identity,
	// each started at a receive time a window after the last: a round is
	// forgotten one to two windows after it began (Admit: exactly one),
	// at 5 bytes a round.
	cur, prev map[uint64][MaxSpools]uint8
	curStart  int64 // ms
}

// NewGuess is a Guess for copies within window of each other.
func NewGuess(window time.Duration) *Guess {
	return &Guess{window: window.Milliseconds(), h: sha256.New(), cur: map[uint64][MaxSpools]uint8{}, prev: map[uint64][MaxSpools]uint8{}}
}

// Note computes rec's Identity and says whether rec looks like a copy
// another spool supplied already.
func (g *Guess) Note(rec *spool.Record, id spool.Identity) (key uint64, copy bool) {
	key = identityWith(g.h, &g.buf, rec)
	ord := slices.Index(g.spools, id)
	if ord < 0 {
		if len(g.spools) == MaxSpools {
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
