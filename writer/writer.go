package writer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/copies"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/recent"
	"github.com/meshingest/meshingest/writer/retention"
	"github.com/meshingest/meshingest/writer/schema"
	"github.com/meshingest/meshingest/writer/stats"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Defaults of the options the configuration can set (writer.*). `meshingest
// config check` prints them and docs/configuration.md is tested against
// them. The connection's own are dbfile's (DefaultCacheKiB, DefaultPageSize,
// DefaultWALAutoCheckpointPages).
const (
	DefaultBatchMaxRecords = 16000
	DefaultBatchMaxTime    = time.Second
	DefaultRetryMax        = time.Second
	// DefaultNotReadyAfter is how long records may wait while the
	// database refuses writes before /-/ready answers 503: longer than a
	// VACUUM or a backup of a mid-sized database holds the lock, shorter
	// than anyone waiting for the map notices.
	DefaultNotReadyAfter = time.Minute
)

// Options configure a Writer. Config is required; zero values elsewhere
// mean the defaults.
type Options struct {
	// Config is CoreScope's config.json with meshingest's keys (dbPath,
	// channel keys, filters, retention, writer.*).
	Config *shared.Config
	Log    zerolog.Logger

	// BatchMaxRecords and BatchMaxTime bound one transaction: whichever
	// comes first ends the batch. Fewer, larger commits write each hot
	// index page less often (measured on a 270,000-message catch-up: 1.6
	// KiB of disk writes per message with 4,000-record batches, 1.1 KiB
	// with 16,000) and cost fewer fsyncs; larger batches only grow the
	// WAL and the time the write lock is held. The time bound keeps any
	// other writer from waiting long for the lock and makes progress
	// visible to CoreScope's poller (its readers never wait: WAL).
	// Defaults: config writer.batchMaxRecords / writer.batchMaxMs, else
	// DefaultBatchMaxRecords and DefaultBatchMaxTime.
	BatchMaxRecords int
	BatchMaxTime    time.Duration
	// RetryMax caps the back-off while the database refuses writes.
	// Default: config writer.retryMaxMs, else DefaultRetryMax.
	RetryMax time.Duration
	// DedupWindow is how far apart, by receive time, two receivers'
	// copies of one publication may be and still be recognised as one
	// (copies.go); it is also the most a silent receiver's spool holds
	// the others back. Wider tolerates slower receivers; too wide merges
	// an observer's deliberate re-publication of the same bytes with the
	// first one. Default: config writer.dedupWindowMs, else
	// DefaultDedupWindow; at most a minute.
	DedupWindow time.Duration
	// DedupMemory is how far behind the newest record, by receive time, a
	// late copy is still recognised (a receiver whose records were sealed
	// only after it resumed): memory grows with it, about 30 bytes per
	// publication (225,000 at 250/s over 15 minutes). Default: config
	// writer.dedupMemoryMinutes, else DefaultDedupMemory.
	DedupMemory time.Duration
	// NotReadyAfter is how long records may wait while the database
	// refuses writes before the writer reports itself not ready (/-/ready,
	// the stats file, `meshingest status`). Default: config
	// writer.notReadyAfterSec, else DefaultNotReadyAfter.
	NotReadyAfter time.Duration

	DB    dbfile.Options
	Cache CacheOptions

	// Hook sees every observation inside the batch's transaction (nil:
	// none). Tasks run between batches, after retention, which is always
	// there. The writer registers nothing else itself: the caller passes
	// CoreScope's jobs here (writer/jobs; cmd/meshingest does).
	Hook  BatchHook
	Tasks []Task
	// Stats receive the writer's counters; nil: New makes them. Pass your
	// own when something built before the writer counts into them (the
	// jobs' backfills, Stats.AddBackfill).
	Stats *Stats

	// StatsFile is where the CoreScope stats file is written ("" to not
	// write one); default Config.Writer.StatsFile. ReceiverStatsFile is
	// the receiver's, merged in; default Config.Receiver.StatsFile.
	StatsFile         string
	ReceiverStatsFile string
	StatsInterval     time.Duration // default 1 s
	// Registry receives the Prometheus metrics (nil: none).
	Registry prometheus.Registerer
	Notifier *shared.Notifier
	// OnSpools is called with the number of spools drained whenever it
	// grows: once New or NewMerged has found the first ones, and when a
	// receiver instance's spool appears later. The first call runs in New
	// or NewMerged, the later ones on the goroutine running Run.
	// cmd/meshingest sets the Go memory limit from it (MemoryLimit). Nil:
	// not called.
	OnSpools func(spools int)
}

// Source is the spool as the writer reads it: sealed records in order from
// a position, the deletion of what is durably written, and a wake-up when
// more is sealed.
type Source interface {
	// Open returns a cursor over the records after pos.
	Open(after Position) (Cursor, error)
	// Release deletes what is at or before pos (idempotent).
	Release(pos Position) error
	// WaitSealed returns when more records may be readable, or ctx ends.
	WaitSealed(ctx context.Context) error
	// Depth is the number of records not yet consumed after pos, or -1
	// when it cannot be known cheaply. It may be called from another
	// goroutine.
	Depth(after Position) int64
	// SavePosition writes the advisory copy of the position for
	// `meshingest spool status` (the database holds the real one).
	SavePosition(pos Position) error
	// Spool is the identity of the spool read: the writer keeps its
	// position per identity (state.go).
	Spool() spool.IdentityInfo
}

// Cursor reads records in order; io.EOF at the end of what is sealed.
type Cursor interface {
	Next() (Record, Position, error)
	Close() error
}

// Writer drains a spool into CoreScope's database.
type Writer struct {
	opts Options
	// slots are the spools drained; set finds more (nil: one spool).
	// slots only grows, on the drain goroutine, under posMu.
	slots []*spoolSlot
	// spoolsNoted is len(slots) when Options.OnSpools was last called.
	spoolsNoted int
	set         *MergedSource
	log         zerolog.Logger
	in          *ingester
	stats       *Stats
	trouble     *dbfile.Tracker
	notify      *shared.Notifier
	tasks       []*taskRun

	// Owned by the drain goroutine.
	dbLock    *dbfile.Lock // the database's writer lock, held for all of Run
	db        *database
	store     *store
	pipe      *pipeline // reads and prepares records ahead; nil between reads
	state     writerState
	dbChecked time.Time
	// schemaVersion is PRAGMA schema_version after the last migrate: it
	// changes whenever anyone changes the schema.
	schemaVersion int64
	lastPet       time.Time

	spoolNoted map[spool.Identity]bool // the spools noteSpool logged

	posMu sync.Mutex // guards slots (the list and positions) for other goroutines
	ready atomic.Bool

	// reloads hands a reloaded ingest configuration (channel keys,
	// regions) to the drain goroutine, which applies it between batches.
	reloads chan ingestConfig
	// keys is the configuration whose keys are in force; only Reload uses
	// it.
	keysMu sync.Mutex
	keys   *shared.Config
}

type taskRun struct {
	task    Task
	next    time.Time // when the next pass may start
	running bool      // a pass is in progress
}

// New prepares a writer of one spool; nothing is opened until Run.
func New(src Source, opts Options) (*Writer, error) {
	w, err := newWriter(opts)
	if err != nil {
		return nil, err
	}
	w.slots = []*spoolSlot{w.newSlot(src)}
	w.noteSpools()
	return w, nil
}

// NewMerged prepares a writer of every spool set finds (receiver
// instances, spools.go), applying each publication once (copies.go).
func NewMerged(set *MergedSource, opts Options) (*Writer, error) {
	w, err := newWriter(opts)
	if err != nil {
		return nil, err
	}
	w.set = set
	if err := w.refreshSlots(context.Background()); err != nil {
		return nil, err
	}
	return w, nil
}

func newWriter(opts Options) (*Writer, error) {
	if opts.Config == nil {
		return nil, errors.New("writer: Options.Config is required")
	}
	cfg := opts.Config
	if opts.BatchMaxRecords <= 0 {
		opts.BatchMaxRecords = cfg.Writer.BatchMaxRecords
	}
	if opts.BatchMaxRecords <= 0 {
		opts.BatchMaxRecords = DefaultBatchMaxRecords
	}
	if opts.BatchMaxTime <= 0 {
		opts.BatchMaxTime = time.Duration(cfg.Writer.BatchMaxMs) * time.Millisecond
	}
	if opts.BatchMaxTime <= 0 {
		opts.BatchMaxTime = DefaultBatchMaxTime
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Duration(cfg.Writer.RetryMaxMs) * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	if opts.NotReadyAfter <= 0 {
		opts.NotReadyAfter = time.Duration(cfg.Writer.NotReadyAfterSec) * time.Second
	}
	if opts.NotReadyAfter <= 0 {
		opts.NotReadyAfter = DefaultNotReadyAfter
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = time.Duration(cfg.Writer.DedupWindowMs) * time.Millisecond
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.DedupWindow > copies.MaxWindow {
		return nil, fmt.Errorf("writer: writer.dedupWindowMs %d is over %d: copies a minute apart are no longer one publication", opts.DedupWindow.Milliseconds(), copies.MaxWindow.Milliseconds())
	}
	if opts.DedupMemory <= 0 {
		opts.DedupMemory = time.Duration(cfg.Writer.DedupMemoryMinutes) * time.Minute
	}
	if opts.DedupMemory <= 0 {
		opts.DedupMemory = DefaultDedupMemory
	}
	opts.DedupMemory = max(opts.DedupMemory, opts.DedupWindow)
	if opts.DB.CacheKiB <= 0 {
		opts.DB.CacheKiB = cfg.Writer.CacheKiB
	}
	if opts.DB.PageSize <= 0 {
		opts.DB.PageSize = cfg.Writer.PageSize
	}
	if opts.DB.WALAutoCheckpointPages <= 0 {
		opts.DB.WALAutoCheckpointPages = cfg.Writer.WALAutoCheckpointPages
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = time.Second
	}
	if opts.StatsFile == "" {
		opts.StatsFile = cfg.Writer.StatsFile
	}
	if opts.ReceiverStatsFile == "" {
		opts.ReceiverStatsFile = cfg.Receiver.StatsFile
	}
	ic, err := newIngestConfig(cfg)
	if err != nil {
		return nil, err
	}
	notify := opts.Notifier
	if notify == nil {
		notify = shared.NewNotifier()
	}
	if opts.Stats == nil {
		opts.Stats = NewStats()
	}
	w := &Writer{
		opts:       opts,
		log:        opts.Log,
		stats:      opts.Stats,
		trouble:    dbfile.NewTracker(opts.Log, opts.RetryMax),
		notify:     notify,
		reloads:    make(chan ingestConfig, 1),
		keys:       cfg,
		spoolNoted: map[spool.Identity]bool{},
	}
	w.in = &ingester{cfg: ic, hook: w.opts.Hook, log: opts.Log, throttle: shared.NewThrottle(time.Minute),
		decoded: recent.New[ContentKey, struct{}](opts.Cache.withDefaults().Transmissions)}
	tasks := append([]Task{retentionTask{retention.New(cfg, w.forgetTransmissions)}}, w.opts.Tasks...)
	for _, t := range tasks {
		w.tasks = append(w.tasks, &taskRun{task: t})
	}
	if opts.Registry != nil {
		w.stats.Register(opts.Registry, w.depth, func() dbfile.Snapshot { return w.trouble.Snapshot(time.Now()) }, w.Health(), w.readerStats, w.stats.spoolFigures)
	}
	return w, nil
}

// Stats returns the writer's counters.
func (w *Writer) Stats() *Stats { return w.stats }

// Run takes the database's writer lock, opens the database (creating and
// migrating it as needed), reports ready, and drains the spool until ctx
// ends. Then it finishes the batch in progress, closes the database and
// returns nil. A database that cannot be opened or migrated is retried, as
// an episode, until it can or ctx ends, unless retrying cannot help (a
// *dbfile.Error that is Permanent: a folder, not a database, permission
// denied, a read-only file system): then Run returns that error, whose
// message carries the hint. When another writer holds the database
// (dbfile.LockDatabase), Run returns a *dbfile.LockError (errors.Is
// ErrLocked) at once, or, if another process takes the lock file over
// while it runs, after the batch in progress. Configuration errors are New's.
func (w *Writer) Run(ctx context.Context) error {
	statsCtx, stopStats := context.WithCancel(context.WithoutCancel(ctx))
	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		w.statsLoop(statsCtx)
	}()
	defer func() {
		stopStats()
		<-statsDone
	}()

	if err := w.lock(ctx); err != nil {
		w.log.Error().Err(err).Str("lock_file", dbfile.DatabaseLockPath(w.opts.Config.DBPath)).Msg("another writer holds the database; not starting")
		return err
	}
	defer w.dbLock.Release()
	if err := w.start(ctx); err != nil {
		w.notify.Status("cannot use the database: " + err.Error())
		w.shutdown()
		return err
	}
	if ctx.Err() != nil {
		w.shutdown()
		return nil
	}
	w.notify.Ready(fmt.Sprintf("database %s open; draining the spool", w.opts.Config.DBPath))
	w.ready.Store(true)
	for _, s := range w.slots {
		p := s.pos.Position
		w.log.Info().Str("db", w.opts.Config.DBPath).Stringer("spool", p.Spool).Str("spool_dir", spoolDirOf(s.src)).Uint64("segment", p.Segment).Uint64("seq", p.Seq).
			Int("batch_max_records", w.opts.BatchMaxRecords).Int64("batch_max_ms", w.opts.BatchMaxTime.Milliseconds()).
			Msg("writer ready; resuming after the position stored in the database")
	}

	err := w.drain(ctx)
	w.shutdown()
	return err
}

// lock takes the database's writer lock. Another writer holding it is an
// error at once; a lock file that cannot be created (a folder not yet
// writable) is retried as an episode until ctx ends.
func (w *Writer) lock(ctx context.Context) error {
	for ctx.Err() == nil {
		l, err := dbfile.LockDatabase(w.opts.Config.DBPath)
		if err == nil {
			w.dbLock = l
			return nil
		}
		if errors.Is(err, ErrLocked) {
			return err
		}
		w.refused(ctx, err)
	}
	return nil
}

// start opens and migrates the database, retrying (as an episode) while it
// is locked or otherwise refuses, until it succeeds or ctx ends. A
// database retrying cannot fix is returned at once.
func (w *Writer) start(ctx context.Context) error {
	for ctx.Err() == nil {
		w.stats.LoopTickUnix.Store(time.Now().Unix())
		err := w.openDB(ctx, true)
		if err == nil {
			w.trouble.Succeeded(time.Now())
			return nil
		}
		if de := (*dbfile.Error)(nil); errors.As(err, &de) && de.Permanent() {
			return err
		}
		w.refused(ctx, err)
	}
	return nil
}

// openDB opens the database, migrates it and reads the writer's position.
func (w *Writer) openDB(ctx context.Context, create bool) error {
	d, err := openDatabase(ctx, w.opts.Config.DBPath, create, w.opts.DB)
	if err != nil {
		return err
	}
	if d.Created {
		// Right for a new installation, wrong after a typo in dbPath
		// (CoreScope would go on reading the old file): say where.
		abs, _ := filepath.Abs(d.Path)
		w.log.Warn().Str("db", abs).Msg("no database at dbPath: created a new, empty one here")
	}
	if _, err := schema.Migrate(ctx, d.conn, w.log); err != nil {
		d.Close()
		return err
	}
	var st writerState
	positions := make([]spoolPosition, len(w.slots))
	for i, sl := range w.slots {
		sp, replaced, err := readStateInto(ctx, d.conn, sl.info, &st)
		if err != nil {
			d.Close()
			return err
		}
		if len(w.slots) > 1 {
			// Instances are new spools beside the others, not
			// replacements of the spool drained before.
			replaced = nil
		}
		positions[i] = sp
		w.noteSpool(&spoolSlot{info: sl.info, pos: sp}, replaced)
	}
	s, err := newStore(ctx, d.conn, w.opts.Cache)
	if err != nil {
		d.Close()
		return err
	}
	if w.schemaVersion, err = schemaVersion(ctx, d.conn); err != nil {
		s.close()
		d.Close()
		return err
	}
	w.db, w.store, w.state = d, s, st
	w.posMu.Lock()
	for i, sl := range w.slots {
		sl.pos = positions[i]
	}
	w.posMu.Unlock()
	w.dbChecked = time.Now()
	return nil
}

// noteSpool logs, once per spool, which position the writer resumes from
// in it, and says so in the stats file: above all when a new spool
// replaced the one drained before (its unwritten records are lost unless
// that spool comes back).
func (w *Writer) noteSpool(sl *spoolSlot, replaced *stats.SpoolReplaced) {
	info, st := sl.info, sl.pos
	if len(w.slots) <= 1 {
		w.stats.SetSpool(info.ID, replaced)
	}
	if w.spoolNoted[info.ID] {
		return
	}
	w.spoolNoted[info.ID] = true
	switch {
	case replaced != nil:
		ev := w.log.Warn().Str("spool", info.ID.String()).Str("previous_spool", replaced.Previous).
			Str("previous_position", replaced.PreviousPosition)
		if replaced.UnwrittenRecords >= 0 {
			ev = ev.Int64("previous_unwritten_records", replaced.UnwrittenRecords)
		}
		ev.Msg("a new spool replaced the one drained before; draining it from its first record. The previous spool's records after its position were not written (unwritten_records, as it last reported them; -1 unknown) unless it is mounted back")
	case st.legacy:
		w.log.Info().Str("spool", info.ID.String()).Stringer("position", st.Position).
			Msg("spool adopted from before spool identities: resuming at the position stored then")
	case st.Position.IsZero():
		w.log.Info().Str("spool", info.ID.String()).Msg("a spool new to this database: draining it from its first record")
	}
}

func (w *Writer) closeDB() {
	w.stopReading()
	if w.store != nil {
		w.store.close()
		w.store = nil
	}
	if w.db != nil {
		w.db.Close()
		w.db = nil
	}
}

// stopReading stops the pipeline: the next batch reads from the committed
// position again.
func (w *Writer) stopReading() {
	if w.pipe != nil {
		w.pipe.close()
		w.pipe = nil
	}
}

// refused handles a batch (or an open) the database refused: everything
// the attempt learned is forgotten, the cursor goes back to the committed
// position, and the loop waits before trying the same records again.
func (w *Writer) refused(ctx context.Context, err error) {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return
	}
	kind, reopen := classify(err)
	w.stats.WriteErrors.Add(1)
	w.stopReading()
	if w.store != nil {
		w.store.forget()
	}
	if reopen {
		w.closeDB()
	}
	delay := w.trouble.Failed(kind, err, time.Now())
	w.notify.Status(fmt.Sprintf("database refuses writes (%s); retrying", kind))
	w.sleep(ctx, delay)
}

// sleep waits d or until ctx ends, petting the watchdog meanwhile: the
// loop is alive, it is waiting for the database on purpose.
func (w *Writer) sleep(ctx context.Context, d time.Duration) {
	end := time.Now().Add(d)
	for {
		w.petWatchdog()
		left := time.Until(end)
		if left <= 0 {
			return
		}
		if iv := shared.WatchdogInterval(); iv > 0 {
			left = min(left, iv)
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// ensureDB (re)opens the database when it is closed, and once a second
// checks what others did to it: a file replaced or removed under the writer
// (a restore; writing on into the old, unlinked file would lose
// everything), or a schema changed by another process (a table dropped or
// altered is put back before CoreScope's server notices).
func (w *Writer) ensureDB(ctx context.Context) error {
	if w.db != nil && time.Since(w.dbChecked) >= time.Second {
		w.dbChecked = time.Now()
		if renewed, err := w.dbLock.Check(); err != nil {
			return err
		} else if renewed {
			w.log.Warn().Str("lock_file", w.dbLock.Path()).Msg("the writer's lock file was deleted or replaced; locked it again")
		}
		replaced, err := w.db.Replaced()
		if err != nil {
			w.closeDB()
			return err
		}
		if replaced {
			w.log.Warn().Str("db", w.db.Path).Msg("the database file was replaced under the writer; reopening it and resuming from the position stored in it")
			w.closeDB()
		} else if v, err := schemaVersion(ctx, w.db.conn); err != nil {
			return err
		} else if v != w.schemaVersion {
			w.log.Warn().Str("db", w.db.Path).Msg("another process changed the database schema; checking it again")
			if _, err := schema.Migrate(ctx, w.db.conn, w.log); err != nil {
				return err
			}
			if w.schemaVersion, err = schemaVersion(ctx, w.db.conn); err != nil {
				return err
			}
		}
	}
	if w.db == nil {
		if err := w.openDB(ctx, false); err != nil {
			return err
		}
	}
	return nil
}

var warnThrottle = shared.NewThrottle(time.Minute)

func (w *Writer) throttledWarn(key string, err error, msg string) {
	if ok, suppressed := warnThrottle.Allow(key, time.Now()); ok {
		w.log.Warn().Err(err).Int("suppressed", suppressed).Msg(msg)
	}
}

func (w *Writer) petWatchdog() {
	iv := shared.WatchdogInterval()
	if iv <= 0 || time.Since(w.lastPet) < iv {
		return
	}
	w.lastPet = time.Now()
	w.notify.Watchdog()
}

func (w *Writer) shutdown() {
	w.notify.Stopping()
	w.stopReading()
	if w.db != nil {
		// Leave a small WAL behind for the next start or for maintenance.
		w.db.conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
	}
	w.closeDB()
	w.log.Info().Int64("messages", w.stats.Messages.Load()).Msg("writer stopped")
}

// slotsNow is a copy of the slots list, for other goroutines.
func (w *Writer) slotsNow() []*spoolSlot {
	w.posMu.Lock()
	defer w.posMu.Unlock()
	return slices.Clone(w.slots)
}

// depth is the records the spools hold unwritten, -1 when one cannot
// tell. Safe from any goroutine.
func (w *Writer) depth() int64 {
	var total int64
	for _, s := range w.slotsNow() {
		w.posMu.Lock()
		p := s.pos.Position
		w.posMu.Unlock()
		d := s.src.Depth(p)
		if d < 0 {
			return -1
		}
		total += d
	}
	return total
}

// readerStats are the spool readers' counters (summed over the spools),
// nil for sources that have none. Safe from any goroutine.
func (w *Writer) readerStats() *spool.ReaderStats {
	var sum *spool.ReaderStats
	for _, s := range w.slotsNow() {
		r, ok := s.src.(interface{ ReaderStats() spool.ReaderStats })
		if !ok {
			continue
		}
		st := r.ReaderStats()
		if sum == nil {
			sum = &spool.ReaderStats{}
		}
		*sum = sum.Add(st)
	}
	return sum
}

func (w *Writer) forgetTransmissions() {
	if w.store != nil {
		w.store.transmissions.Clear()
	}
}

// tasksRunnable reports whether a task may run: tasks need the database
// and the stream time, which the first record written sets.
func (w *Writer) tasksRunnable() bool { return w.db != nil && !w.state.StreamTime.IsZero() }

// runTaskStep runs one step of a maintenance task that is due, in its own
// short transaction, and reports whether a task has more to do now.
func (w *Writer) runTaskStep(ctx context.Context) (more bool) {
	if !w.tasksRunnable() || ctx.Err() != nil {
		return false
	}
	now := time.Now()
	for _, t := range w.tasks {
		if !t.running && now.Before(t.next) {
			continue
		}
		t.running = true
		sctx := context.WithoutCancel(ctx)
		conn := w.db.conn
		waitStart := time.Now()
		if _, err := conn.ExecContext(sctx, "BEGIN IMMEDIATE"); err != nil {
			w.throttledWarn("task-"+t.task.Name(), err, "maintenance step could not start; retrying later")
			t.running, t.next = false, now.Add(time.Minute)
			return false
		}
		holdStart := time.Now()
		stepMore, err := t.task.Step(sctx, conn, w.state.StreamTime)
		if err == nil {
			_, err = conn.ExecContext(sctx, "COMMIT")
		}
		if err != nil {
			conn.ExecContext(sctx, "ROLLBACK")
		}
		if sw, ok := t.task.(StepWatcher); ok {
			sw.StepEnded(err == nil)
		}
		if err != nil {
			w.throttledWarn("task-"+t.task.Name(), err, "maintenance step failed; retrying later")
			t.running, t.next = false, now.Add(time.Minute)
			return false
		}
		w.stats.AddMaintenance(t.task.Name(), holdStart.Sub(waitStart), time.Since(holdStart))
		if !stepMore {
			t.running, t.next = false, time.Now().Add(t.task.Interval())
		}
		return stepMore
	}
	return false
}

// loopStale is how long the drain loop, which goes round at least every
// second or two (a batch, a retry, a wait for records), may be silent
// before the writer reports itself unhealthy.
const loopStale = 30 * time.Second

// Health is the writer's /-/healthy and /-/ready: healthy while its drain
// loop goes round; ready once the database is open, unless records have
// waited longer than NotReadyAfter while the database refuses writes.
func (w *Writer) Health() shared.Health {
	return shared.Health{
		Healthy: func() string { return w.unhealthy(time.Now()) },
		Ready:   func() string { return w.notReady(time.Now()) },
	}
}

func (w *Writer) unhealthy(now time.Time) string {
	if t := w.stats.LoopTickUnix.Load(); t != 0 && now.Sub(time.Unix(t, 0)) > loopStale {
		return fmt.Sprintf("the drain loop last ran %s ago", now.Sub(time.Unix(t, 0)).Round(time.Second))
	}
	return ""
}

func (w *Writer) notReady(now time.Time) string {
	tr := w.trouble.Snapshot(now)
	if e := tr.Current; e != nil && time.Duration(e.Seconds*float64(time.Second)) > w.opts.NotReadyAfter && w.depth() != 0 {
		return fmt.Sprintf("records have waited %s while the database refuses writes (%s: %s); %s",
			time.Duration(e.Seconds*float64(time.Second)).Round(time.Second), e.Kind, e.LastError, dbfile.Kind(e.Kind).Hint())
	}
	if !w.ready.Load() {
		return "starting: opening and checking the database " + w.opts.Config.DBPath
	}
	return ""
}

// Reload applies the channel keys (channelKeys, hashChannels,
// channelKeysPath) and transport regions (hashRegions) of cfg, from the
// next batch on; the log says which keys and regions were added, removed
// or changed, by name, never a key. What else differs from the running
// configuration is the caller's to report. An unreadable channelKeysPath
// or a bad key changes nothing.
func (w *Writer) Reload(cfg *shared.Config) error {
	w.keysMu.Lock()
	defer w.keysMu.Unlock()
	next := *w.keys
	next.ChannelKeys, next.HashChannels, next.ChannelKeysPath, next.HashRegions = cfg.ChannelKeys, cfg.HashChannels, cfg.ChannelKeysPath, cfg.HashRegions
	ic, err := newIngestConfig(&next)
	if err != nil {
		return err
	}
	changes := keyChanges(w.keys, &next)
	if len(changes) == 0 {
		return nil
	}
	select {
	case <-w.reloads: // replaced by this newer one
	default:
	}
	w.reloads <- ic
	w.keys = &next
	ev := w.log.Info()
	for _, c := range changes {
		ev = ev.Strs(c.field, c.names)
	}
	ev.Msg("SIGHUP: channel keys and regions reloaded; they decode new transmissions from the next batch (meshingest redecode decodes stored ones again)")
	return nil
}

// applyReload puts a reloaded configuration in force, on the drain
// goroutine between batches: the reader is stopped first (it prepares
// records with the configuration) and restarts from the committed
// position, so no record is prepared with one set of keys and applied
// with another.
func (w *Writer) applyReload() {
	select {
	case ic := <-w.reloads:
		w.stopReading()
		w.in.cfg = ic
		w.in.decoded.Clear()
	default:
	}
}

// keyChange is what changed in one of the reloadable lists, by name.
type keyChange struct {
	field string
	names []string
}

// keyChanges names the channels and regions added, removed or changed
// between two configurations.
func keyChanges(a, b *shared.Config) []keyChange {
	var out []keyChange
	add := func(field string, names []string) {
		if len(names) > 0 {
			sort.Strings(names)
			out = append(out, keyChange{field, names})
		}
	}
	var added, removed, changed []string
	for name, k := range b.ChannelKeys {
		if old, ok := a.ChannelKeys[name]; !ok {
			added = append(added, name)
		} else if old != k {
			changed = append(changed, name)
		}
	}
	for name := range a.ChannelKeys {
		if _, ok := b.ChannelKeys[name]; !ok {
			removed = append(removed, name)
		}
	}
	add("channelKeys_added", added)
	add("channelKeys_removed", removed)
	add("channelKeys_changed", changed)
	for _, l := range []struct {
		field string
		a, b  []string
	}{{"hashChannels", a.HashChannels, b.HashChannels}, {"hashRegions", a.HashRegions, b.HashRegions}} {
		add(l.field+"_added", minus(l.b, l.a))
		add(l.field+"_removed", minus(l.a, l.b))
	}
	if a.ChannelKeysPath != b.ChannelKeysPath {
		add("channelKeysPath", []string{b.ChannelKeysPath})
	} else if b.ChannelKeysPath != "" {
		// The file's contents may have changed: it is read again.
		add("channelKeysPath_reread", []string{b.ChannelKeysPath})
	}
	return out
}

// minus is the names in a that are not in b.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// statsLoop writes the stats file every interval until ctx ends, and a
// last one after.
func (w *Writer) statsLoop(ctx context.Context) {
	if w.opts.StatsFile == "" {
		return
	}
	stats.Loop{
		Path: w.opts.StatsFile, ReceiverPath: w.opts.ReceiverStatsFile, Interval: w.opts.StatsInterval,
		Sample: func(now time.Time, rx *shared.ReceiverSnapshot) stats.File {
			f := w.stats.snapshot(now, rx, w.depth(), w.trouble.Snapshot(now))
			f.Meshingest.Health = w.Health().State()
			f.Meshingest.Spool.Reader = w.readerStats()
			f.WatchdogLastTickUnix = w.stats.LoopTickUnix.Load()
			return f
		},
		Ready:  w.ready.Load,
		Status: func(line string) { w.notify.Status(line) },
		Warn:   func(err error) { w.throttledWarn("statsfile", err, "could not write the stats file") },
	}.Run(ctx)
}

func schemaVersion(ctx context.Context, conn *sql.Conn) (int64, error) {
	var v int64
	if err := conn.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema_version: %w", err)
	}
	return v, nil
}
