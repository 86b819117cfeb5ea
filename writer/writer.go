package writer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/internal/recent"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
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
	// 16000 and 1 s.
	BatchMaxRecords int
	BatchMaxTime    time.Duration
	// RetryMax caps the back-off while the database refuses writes.
	// Default: config writer.retryMaxMs, else 1 s.
	RetryMax time.Duration

	DB    DBOptions
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
}

// Cursor reads records in order; io.EOF at the end of what is sealed.
type Cursor interface {
	Next() (Record, Position, error)
	Close() error
}

// Writer drains a spool into CoreScope's database.
type Writer struct {
	opts    Options
	src     Source
	log     zerolog.Logger
	in      *ingester
	stats   *Stats
	trouble *troubleTracker
	notify  *shared.Notifier
	tasks   []*taskRun

	// Owned by the drain goroutine.
	db        *database
	store     *store
	pipe      *pipeline // reads and prepares records ahead; nil between reads
	state     writerState
	dbChecked time.Time
	// schemaVersion is PRAGMA schema_version after the last migrate: it
	// changes whenever anyone changes the schema.
	schemaVersion int64
	lastPet       time.Time

	posMu     sync.Mutex // guards committedPos for the stats goroutine
	committed Position
	ready     atomic.Bool
}

type taskRun struct {
	task    Task
	next    time.Time // when the next pass may start
	running bool      // a pass is in progress
}

// New prepares a writer; nothing is opened until Run.
func New(src Source, opts Options) (*Writer, error) {
	if opts.Config == nil {
		return nil, errors.New("writer: Options.Config is required")
	}
	cfg := opts.Config
	if opts.BatchMaxRecords <= 0 {
		opts.BatchMaxRecords = cfg.Writer.BatchMaxRecords
	}
	if opts.BatchMaxRecords <= 0 {
		opts.BatchMaxRecords = 16000
	}
	if opts.BatchMaxTime <= 0 {
		opts.BatchMaxTime = time.Duration(cfg.Writer.BatchMaxMs) * time.Millisecond
	}
	if opts.BatchMaxTime <= 0 {
		opts.BatchMaxTime = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Duration(cfg.Writer.RetryMaxMs) * time.Millisecond
	}
	if opts.DB.CacheKiB <= 0 {
		opts.DB.CacheKiB = cfg.Writer.CacheKiB
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
		opts:    opts,
		src:     src,
		log:     opts.Log,
		stats:   opts.Stats,
		trouble: newTroubleTracker(opts.Log, opts.RetryMax),
		notify:  notify,
	}
	w.in = &ingester{cfg: ic, hook: w.opts.Hook, log: opts.Log, throttle: shared.NewThrottle(time.Minute),
		decoded: recent.New[ContentKey, struct{}](opts.Cache.withDefaults().Transmissions)}
	tasks := append([]Task{newRetention(cfg, w.forgetTransmissions)}, w.opts.Tasks...)
	for _, t := range tasks {
		w.tasks = append(w.tasks, &taskRun{task: t})
	}
	if opts.Registry != nil {
		w.stats.registerMetrics(opts.Registry, w.depth, func() troubleSnapshot { return w.trouble.snapshot(time.Now()) })
	}
	return w, nil
}

// Stats returns the writer's counters.
func (w *Writer) Stats() *Stats { return w.stats }

// Run opens the database (creating and migrating it as needed), reports
// ready, and drains the spool until ctx ends. Then it finishes the batch in
// progress, closes the database and returns nil. A database that cannot be
// opened or migrated is retried, as an episode, until it can or ctx ends;
// configuration errors are New's.
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

	w.start(ctx)
	if ctx.Err() != nil {
		w.shutdown()
		return nil
	}
	w.notify.Ready(fmt.Sprintf("database %s open; draining the spool", w.opts.Config.DBPath))
	w.ready.Store(true)
	w.log.Info().Str("db", w.opts.Config.DBPath).Uint64("segment", w.state.Position.Segment).Uint64("seq", w.state.Position.Seq).
		Int("batch_max_records", w.opts.BatchMaxRecords).Dur("batch_max_time", w.opts.BatchMaxTime).
		Msg("writer ready; resuming after the position stored in the database")

	w.drain(ctx)
	w.shutdown()
	return nil
}

// start opens and migrates the database, retrying (as an episode) while it
// is locked or otherwise refuses, until it succeeds or ctx ends.
func (w *Writer) start(ctx context.Context) {
	for ctx.Err() == nil {
		err := w.openDB(ctx, true)
		if err == nil {
			w.trouble.succeeded(time.Now())
			return
		}
		w.refused(ctx, err)
	}
}

// openDB opens the database, migrates it and reads the writer's position.
func (w *Writer) openDB(ctx context.Context, create bool) error {
	d, err := openDatabase(ctx, w.opts.Config.DBPath, create, w.opts.DB)
	if err != nil {
		return err
	}
	if _, err := migrate(ctx, d.conn, w.log); err != nil {
		d.close()
		return err
	}
	st, err := readState(ctx, d.conn)
	if err != nil {
		d.close()
		return err
	}
	s, err := newStore(ctx, d.conn, w.opts.Cache)
	if err != nil {
		d.close()
		return err
	}
	if w.schemaVersion, err = schemaVersion(ctx, d.conn); err != nil {
		s.close()
		d.close()
		return err
	}
	w.db, w.store, w.state = d, s, st
	w.setCommitted(st.Position)
	w.dbChecked = time.Now()
	return nil
}

func (w *Writer) closeDB() {
	w.stopReading()
	if w.store != nil {
		w.store.close()
		w.store = nil
	}
	if w.db != nil {
		w.db.close()
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
	delay := w.trouble.failed(kind, err, time.Now())
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
		replaced, err := w.db.replaced()
		if err != nil {
			w.closeDB()
			return err
		}
		if replaced {
			w.log.Warn().Str("db", w.db.path).Msg("the database file was replaced under the writer; reopening it and resuming from the position stored in it")
			w.closeDB()
		} else if v, err := schemaVersion(ctx, w.db.conn); err != nil {
			return err
		} else if v != w.schemaVersion {
			w.log.Warn().Str("db", w.db.path).Msg("another process changed the database schema; checking it again")
			if _, err := migrate(ctx, w.db.conn, w.log); err != nil {
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

func (w *Writer) setCommitted(p Position) {
	w.posMu.Lock()
	w.committed = p
	w.posMu.Unlock()
}

func (w *Writer) depth() int64 {
	w.posMu.Lock()
	p := w.committed
	w.posMu.Unlock()
	return w.src.Depth(p)
}

func (w *Writer) forgetTransmissions() {
	if w.store != nil {
		w.store.transmissions.Clear()
	}
}

// runTaskStep runs one step of a maintenance task that is due, in its own
// short transaction, and reports whether a task has more to do now.
func (w *Writer) runTaskStep(ctx context.Context) (more bool) {
	if w.db == nil || w.state.StreamTime.IsZero() || ctx.Err() != nil {
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
		w.stats.addMaintenance(t.task.Name(), holdStart.Sub(waitStart), time.Since(holdStart))
		if !stepMore {
			t.running, t.next = false, time.Now().Add(t.task.Interval())
		}
		return stepMore
	}
	return false
}

// statsLoop writes the stats file every interval until ctx ends.
func (w *Writer) statsLoop(ctx context.Context) {
	if w.opts.StatsFile == "" {
		return
	}
	tick := time.NewTicker(w.opts.StatsInterval)
	defer tick.Stop()
	var prevIO *shared.ProcIO
	var prevAt, lastStatus time.Time
	var lastKey string
	for final := false; ; {
		now := time.Now()
		rx, rxErr := shared.ReadReceiverSnapshot(w.opts.ReceiverStatsFile, 5*time.Second, now)
		f := w.stats.snapshot(now, rx, w.depth(), w.trouble.snapshot(now))
		f.Meshingest.PID = os.Getpid()
		if rxErr != nil {
			f.Meshingest.ReceiverStats = rxErr.Error()
		}
		if cur, err := shared.ReadProcIO(0); err == nil {
			if prevIO != nil {
				sec := now.Sub(prevAt).Seconds()
				f.ProcIO = &procIORates{
					ReadBytesPerSec:           float64(cur.ReadBytes-prevIO.ReadBytes) / sec,
					WriteBytesPerSec:          float64(cur.WriteBytes-prevIO.WriteBytes) / sec,
					CancelledWriteBytesPerSec: float64(cur.CancelledWriteBytes-prevIO.CancelledWriteBytes) / sec,
					SyscallsRead:              float64(cur.SyscR-prevIO.SyscR) / sec,
					SyscallsWrite:             float64(cur.SyscW-prevIO.SyscW) / sec,
					SampledAt:                 f.SampledAt,
				}
			}
			prevIO, prevAt = &cur, now
		}
		f.WatchdogLastTickUnix = w.stats.LoopTickUnix.Load()
		// The status line follows state changes at once and the figures
		// every few seconds; nothing before READY, which carries its own.
		if key := statusKey(&f); !final && w.ready.Load() && (key != lastKey || now.Sub(lastStatus) >= 5*time.Second) {
			lastStatus, lastKey = now, key
			w.notify.Status(statusLine(&f))
		}
		if err := shared.WriteJSONAtomic(w.opts.StatsFile, f); err != nil {
			w.throttledWarn("statsfile", err, "could not write the stats file")
		}
		if final {
			return
		}
		select {
		case <-ctx.Done():
			// Run has stopped the drain loop: one last file, with the
			// counters of the last batches.
			final = true
		case <-tick.C:
		}
	}
}

func statusKey(f *StatsFile) string {
	return fmt.Sprint(f.Meshingest.CaughtUp, f.Meshingest.Database.State)
}

// statusLine is the one line `systemctl status` shows.
func statusLine(f *StatsFile) string {
	ex := &f.Meshingest
	state := "caught up"
	if !ex.CaughtUp {
		state = "catching up"
	}
	db := "database ok"
	if ex.Database.Current != nil {
		db = fmt.Sprintf("database refuses writes (%s) for %.0fs", ex.Database.Current.Kind, ex.Database.Current.Seconds)
	}
	return fmt.Sprintf("%s; lag %.0fs; %d messages written; %s", state, ex.LagSeconds, ex.Messages, db)
}

func schemaVersion(ctx context.Context, conn *sql.Conn) (int64, error) {
	var v int64
	if err := conn.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema_version: %w", err)
	}
	return v, nil
}
