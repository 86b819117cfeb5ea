package writer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/copies"
)

// A writer drains one spool (New) or every spool of a spoolDir that holds
// receiver instances (NewMerged with a MergedSource): the folder itself if
// it is a spool, and each instance folder below it, found again whenever
// the writer starts reading, so an instance started later is drained too.
// Each spool has its own position in the database, stored in the batch's
// transaction; records of several spools are merged in receive order and
// each publication is applied once (copies.go).

// spoolSlot is one spool the writer drains: its source and the position the
// database holds for it.
type spoolSlot struct {
	src  Source
	info spool.IdentityInfo
	pos  spoolPosition // committed
	// stats are the spool's own counters (stats file, metrics).
	stats *SpoolStats
	// lastReceived is the receive time of the last record applied from
	// it (zero after a start): the merge's idea of how far it got.
	lastReceived time.Time
	// since is the receive time of the first record of its receiver's
	// current incarnation as far as this writer has seen (zero: not
	// known).
	since time.Time
}

// MergedSource finds the spools of a spoolDir: the folder itself when it is
// a spool (it has an identity, or nothing else is there yet), and every
// instance folder below it that has an identity. It takes each one's
// consumer lock as OpenSpoolSource does.
type MergedSource struct {
	dir  string
	opts spool.ReaderOptions

	mu    sync.Mutex
	srcs  map[string]*SpoolSource // by folder
	order []*SpoolSource
}

// OpenMergedSource opens the spools of dir that exist now; Sources finds
// more later.
func OpenMergedSource(dir string, opts spool.ReaderOptions) (*MergedSource, error) {
	m := &MergedSource{dir: dir, opts: opts, srcs: map[string]*SpoolSource{}}
	if _, err := m.Sources(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Dir is the spoolDir.
func (m *MergedSource) Dir() string { return m.dir }

// Sources returns the spools found so far, in a stable order (the
// spoolDir's own first, then instance folders by name), opening those new
// since the last call. A folder that cannot be opened is an error only
// when it is the first: the others are tried again at the next call.
func (m *MergedSource) Sources() ([]Source, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dirs, err := m.spoolDirs()
	if err != nil {
		return m.list(), err
	}
	var firstErr error
	for _, d := range dirs {
		if m.srcs[d] != nil {
			continue
		}
		s, err := OpenSpoolSource(d, m.opts)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		m.srcs[d] = s
		m.order = append(m.order, s)
	}
	if len(m.order) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return m.list(), nil
}

func (m *MergedSource) list() []Source {
	out := make([]Source, len(m.order))
	for i, s := range m.order {
		out[i] = s
	}
	return out
}

// spoolDirs lists the folders to drain: dir itself when it has an
// identity or no instance has one (a single receiver's spool, or a new
// installation where the writer starts first), and each subfolder with an
// identity.
func (m *MergedSource) spoolDirs() ([]string, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, &spool.Error{Op: "list receiver instances", Path: m.dir, Err: err, Hint: "check spoolDir and its permissions"}
	}
	var inst []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		d := filepath.Join(m.dir, e.Name())
		if spool.HasIdentity(d) {
			inst = append(inst, d)
		}
	}
	sort.Strings(inst)
	if spool.HasIdentity(m.dir) || len(inst) == 0 {
		return append([]string{m.dir}, inst...), nil
	}
	return inst, nil
}

// Close closes every spool opened.
func (m *MergedSource) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var first error
	for _, s := range m.order {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	m.order, m.srcs = nil, map[string]*SpoolSource{}
	return first
}

// mergeCursor merges the cursors of several spools in receive order. A
// spool with nothing sealed past its last record is waited for only while
// its receiver is alive (its appender published its status in the last
// few seconds) and at most Window: a receiver that is down or lagging
// holds the others back no longer than that. A copy it seals later is
// still matched to its round (package copies), by receive time.
type mergeCursor struct {
	heads  []*mergeHead
	window time.Duration
	now    func() time.Time
}

type mergeHead struct {
	slot *spoolSlot
	c    Cursor
	rec  Record
	pos  Position
	have bool      // rec is read and not yet returned
	last time.Time // receive time of the last record returned or read
	// polled is when the cursor last said it has nothing more sealed.
	polled time.Time
	alive  bool // the spool's appender was alive at polled
}

// mergePoll is how often a spool with nothing sealed is listed again
// while the others have records: each listing reads the folder.
const mergePoll = 100 * time.Millisecond

// appenderAlive is how fresh an appender's status must be for the merge
// to wait for its spool.
const appenderAlive = 3 * time.Second

func (m *mergeCursor) Next() (Record, Position, error) {
	now := m.now()
	for _, h := range m.heads {
		if h.have || (!h.polled.IsZero() && now.Sub(h.polled) < mergePoll) {
			continue
		}
		rec, pos, err := h.c.Next()
		switch {
		case errors.Is(err, io.EOF):
			h.polled, h.alive = now, appenderRunning(h.slot.src, now)
		case err != nil:
			return Record{}, Position{}, err
		default:
			h.rec, h.pos, h.have, h.polled = rec, pos, true, time.Time{}
		}
	}
	var best *mergeHead
	for _, h := range m.heads {
		if h.have && (best == nil || h.rec.ReceivedAt.Before(best.rec.ReceivedAt)) {
			best = h
		}
	}
	if best == nil {
		return Record{}, Position{}, io.EOF
	}
	t := best.rec.ReceivedAt
	if now.Sub(t) < m.window {
		for _, h := range m.heads {
			// A live spool with nothing sealed may still seal records
			// received before t: hold t back for it, within the window.
			if !h.have && h.alive && t.After(h.last) {
				return Record{}, Position{}, io.EOF
			}
		}
	}
	best.have = false
	best.last = t
	return best.rec, best.pos, nil
}

func (m *mergeCursor) Close() error {
	var first error
	for _, h := range m.heads {
		if err := h.c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// appenderRunning says whether the spool's receiver published its status
// lately and has not closed it.
func appenderRunning(src Source, now time.Time) bool {
	s, ok := src.(*SpoolSource)
	if !ok {
		return false
	}
	st, err := spool.ReadAppenderStatus(s.dir)
	return err == nil && !st.Closed && now.Sub(st.UpdatedAt) < appenderAlive
}

// openCursor opens a cursor over every slot after its committed position:
// the spool's own for one slot, a merge for several.
func (w *Writer) openCursor() (Cursor, error) {
	if len(w.slots) == 1 {
		return w.slots[0].src.Open(w.slots[0].pos.Position)
	}
	m := &mergeCursor{window: w.opts.DedupWindow, now: time.Now}
	for _, s := range w.slots {
		c, err := s.src.Open(s.pos.Position)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.heads = append(m.heads, &mergeHead{slot: s, c: c, last: s.lastReceived})
	}
	return m, nil
}

// refreshSlots adds the spools a MergedSource found since the last call,
// with the positions the database holds for them.
func (w *Writer) refreshSlots(ctx context.Context) error {
	if w.set == nil {
		return nil
	}
	srcs, err := w.set.Sources()
	if err != nil && len(srcs) == 0 {
		return err
	}
	if err != nil {
		w.throttledWarn("spools", err, "a receiver instance's spool cannot be opened; draining the others")
	}
	if len(srcs) > copies.MaxSpools {
		w.throttledWarn("spools-max", fmt.Errorf("%d receiver spools under %s", len(srcs), w.set.Dir()),
			fmt.Sprintf("the writer drains at most %d receiver instances' spools; the others wait", copies.MaxSpools))
		srcs = srcs[:copies.MaxSpools]
	}
	for _, src := range srcs[len(w.slots):] {
		s := w.newSlot(src)
		if w.db != nil {
			// The stats goroutines read s.pos (slotStats) from now on.
			var st writerState
			pos, _, err := readStateInto(ctx, w.db.conn, s.info, &st)
			if err != nil {
				return err
			}
			w.posMu.Lock()
			s.pos = pos
			w.posMu.Unlock()
			w.noteSpool(s, nil)
		}
		w.posMu.Lock()
		w.slots = append(w.slots, s)
		w.posMu.Unlock()
	}
	w.noteSpools()
	return nil
}

// noteSpools tells Options.OnSpools of the spools found since it was last
// called.
func (w *Writer) noteSpools() {
	if len(w.slots) > w.spoolsNoted && w.opts.OnSpools != nil {
		w.opts.OnSpools(len(w.slots))
	}
	w.spoolsNoted = len(w.slots)
}

// The Go memory limit of a writer (runtime/debug.SetMemoryLimit), which
// cmd/meshingest sets unless GOMEMLIMIT is set. Near the limit the
// collector runs more often, the closer the more: the limit trades the
// writer's CPU for its RSS. One spool's limit keeps its writer, with
// SQLite's cache outside the Go heap, within 64 MiB of RSS (a tighter one
// cost a third more CPU). Each further spool holds its own
// records in flight and its receiver's delivery memory: left at one
// spool's limit, a second spool made the collector run every few
// milliseconds and nearly doubled the CPU per publication. The figures,
// before and after, are active-active-cost's in docs/harness-report.md.
const (
	MemoryLimitOneSpool        = 24 << 20
	MemoryLimitPerFurtherSpool = 8 << 20
)

// MemoryLimit is the Go memory limit for a writer draining spools spools.
func MemoryLimit(spools int) int64 {
	return MemoryLimitOneSpool + int64(max(spools-1, 0))*MemoryLimitPerFurtherSpool
}

func (w *Writer) newSlot(src Source) *spoolSlot {
	s := &spoolSlot{src: src, info: src.Spool()}
	s.stats = w.slotStats(s)
	return s
}

// slotStats are the counters of the spool s names.
func (w *Writer) slotStats(s *spoolSlot) *SpoolStats {
	st := w.stats.spoolStats(s.info.ID, spoolDirOf(s.src))
	st.gone.Store(false)
	depth := func() int64 {
		w.posMu.Lock()
		p := s.pos.Position
		w.posMu.Unlock()
		return s.src.Depth(p)
	}
	st.depth.Store(&depth)
	return st
}

func spoolDirOf(src Source) string {
	if s, ok := src.(*SpoolSource); ok {
		return s.dir
	}
	return ""
}

// waitSealed waits until any spool may have more, or ctx ends.
func (w *Writer) waitSealed(ctx context.Context) {
	if len(w.slots) == 1 {
		w.slots[0].src.WaitSealed(ctx)
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range w.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.src.WaitSealed(wctx)
			cancel()
		}()
	}
	wg.Wait()
	cancel()
}

// slotOf is the slot of spool id.
func (w *Writer) slotOf(id spool.Identity) *spoolSlot {
	for _, s := range w.slots {
		if s.info.ID == id {
			return s
		}
	}
	return nil
}

// A spool folder can be replaced under the running writer: deleted and
// made anew by the receiver, or another spool put in its place. Its
// reader then says spool.ErrSpoolReplaced (rather than setting the new
// spool's segments aside as copied in); the writer reopens that spool's
// source and drains the spool now in the folder under its own identity:
// from its first record when the database has not seen it, from its
// position when it has. Each spool of a merged set is reopened on its
// own. The reader's folder_replaced counter says how often.

// reopenReplaced reopens the sources whose folders were replaced, then
// gives their slots the new spools' positions (syncSlots).
func (w *Writer) reopenReplaced(ctx context.Context) error {
	for _, sl := range w.slots {
		src, ok := sl.src.(*SpoolSource)
		if !ok {
			continue
		}
		if _, _, err := src.reopenIfReplaced(); err != nil {
			return err
		}
	}
	return w.syncSlots(ctx)
}

// syncSlots moves every slot whose source now reads another spool than the
// slot names (reopenReplaced) to that spool and the position the database
// holds for it, and logs it once. A slot left behind by a database error
// is moved at the next call.
func (w *Writer) syncSlots(ctx context.Context) error {
	for _, sl := range w.slots {
		info := sl.src.Spool()
		if info.ID == sl.info.ID {
			continue
		}
		var st writerState
		pos, replaced, err := readStateInto(ctx, w.db.conn, info, &st)
		if err != nil {
			return err
		}
		prev, prevPos := sl.info, sl.pos.Position
		sl.stats.gone.Store(true)
		w.posMu.Lock()
		sl.info, sl.pos, sl.lastReceived, sl.since = info, pos, time.Time{}, time.Time{}
		sl.stats = w.slotStats(sl)
		w.posMu.Unlock()
		w.spoolNoted[info.ID] = true
		if len(w.slots) <= 1 {
			w.stats.SetSpool(info.ID, replaced)
		}
		ev := w.log.Warn().Str("spool_dir", spoolDirOf(sl.src)).Str("previous_spool", prev.ID.String()).Stringer("previous_position", prevPos).
			Str("spool", info.ID.String()).Stringer("position", pos.Position)
		if replaced != nil && replaced.UnwrittenRecords >= 0 {
			ev = ev.Int64("previous_unwritten_records", replaced.UnwrittenRecords)
		}
		ev.Msg("the spool folder was replaced under the running writer (deleted and made anew, or another spool put in its place): reopened it; " +
			"the spool now there is drained from its first record (from its stored position if the database knows it). " +
			"The previous spool's records after previous_position were not written (previous_unwritten_records as it last reported them) unless it comes back")
	}
	return nil
}
