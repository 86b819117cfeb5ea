// Package stats are the writer's figures: its counters (Counters), the
// stats file CoreScope's server reads (File) and the Prometheus metrics
// over the same counters (Register). The writer counts what it commits
// into them; they know nothing of how a batch is applied.
package stats

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/prometheus/client_golang/prometheus"
)

// Counters are the writer's counters. Only committed work is counted: a
// batch that is rolled back adds nothing. The drain loop writes them; the
// stats file and the Prometheus collectors read them.
type Counters struct {
	Messages        atomic.Int64 // records consumed from the spool
	TxInserted      atomic.Int64
	ObsWritten      atomic.Int64
	TxDupes         atomic.Int64
	NodeUpserts     atomic.Int64
	ObserverUpserts atomic.Int64
	SigDrops        atomic.Int64
	MetricsRows     atomic.Int64
	NeighborReports atomic.Int64 // `…/neighbors` reports stored
	WriteErrors     atomic.Int64 // failed batch attempts
	Commits         atomic.Int64 // transactions committed (ingest and maintenance)
	Batches         atomic.Int64 // ingest batches committed
	LastBatchSize   atomic.Int64
	LastCommitUnix  atomic.Int64 // wall clock of the last ingest commit
	LastReceivedNs  atomic.Int64 // receive time of the last committed record
	CaughtUp        atomic.Bool  // the last read reached the end of the sealed segments
	LoopTickUnix    atomic.Int64 // last iteration of the drain loop (watchdogLastTickUnix)

	// txSeconds and lockWaitSeconds are the ingest transactions' time
	// holding the write lock and waiting for it, for Prometheus.
	txSeconds, lockWaitSeconds prometheus.Histogram

	reasons []string // every drop reason, shown from zero

	mu          sync.Mutex
	drops       map[string]int64 // reason → messages
	lastMessage map[string]int64 // source → unix time its last message was committed
	backfills   map[string]int64
	txTimes     *window // ms, transaction time of ingest batches
	perf        map[string]*lockWindow
	spool       spool.Identity // the spool being drained
	replaced    *SpoolReplaced // it replaced another one (SetSpool)
}

// New returns zeroed counters. Every drop reason in reasons is there from
// the start, at 0 (the writer's DropReasons).
func New(reasons []string) *Counters {
	drops := map[string]int64{}
	for _, r := range reasons {
		drops[r] = 0
	}
	return &Counters{
		reasons:     reasons,
		drops:       drops,
		lastMessage: map[string]int64{},
		backfills:   map[string]int64{},
		txTimes:     newWindow(1024),
		perf:        map[string]*lockWindow{},
		txSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "meshingest", Subsystem: "writer", Name: "transaction_seconds",
			Help: "Time an ingest transaction held the write lock, from BEGIN IMMEDIATE to COMMIT.", Buckets: lockBuckets}),
		lockWaitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "meshingest", Subsystem: "writer", Name: "lock_wait_seconds",
			Help: "Time an ingest transaction waited for the write lock (BEGIN IMMEDIATE).", Buckets: lockBuckets}),
	}
}

// lockBuckets span a lock wait absorbed by busy_timeout to a batch held
// for its whole writer.batchMaxMs and a slow commit after it.
var lockBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Batch is what one committed ingest batch wrote.
type Batch struct {
	Messages, TxInserted, TxDupes, ObsWritten, NodeUpserts, ObserverUpserts int
	SigDrops, MetricsRows, NeighborReports                                  int
	Drops                                                                   map[string]int // reason → messages dropped
}

// AddBatch counts a committed ingest batch: its rows, the sources it
// had messages from, the receive time of its last record, and how long
// its transaction waited for the write lock and held it.
func (s *Counters) AddBatch(c Batch, sources map[string]struct{}, lastReceived time.Time, wait, hold time.Duration, now time.Time) {
	s.Messages.Add(int64(c.Messages))
	s.TxInserted.Add(int64(c.TxInserted))
	s.ObsWritten.Add(int64(c.ObsWritten))
	s.TxDupes.Add(int64(c.TxDupes))
	s.NodeUpserts.Add(int64(c.NodeUpserts))
	s.ObserverUpserts.Add(int64(c.ObserverUpserts))
	s.SigDrops.Add(int64(c.SigDrops))
	s.MetricsRows.Add(int64(c.MetricsRows))
	s.NeighborReports.Add(int64(c.NeighborReports))
	s.Commits.Add(1)
	s.Batches.Add(1)
	s.LastBatchSize.Store(int64(c.Messages))
	s.LastCommitUnix.Store(now.Unix())
	if !lastReceived.IsZero() {
		s.LastReceivedNs.Store(lastReceived.UnixNano())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for r, n := range c.Drops {
		s.drops[r] += int64(n)
	}
	for src := range sources {
		s.lastMessage[src] = now.Unix()
	}
	s.txTimes.add(float64(hold) / float64(time.Millisecond))
	s.lockWindowLocked("ingest").add(wait, hold)
	s.txSeconds.Observe(hold.Seconds())
	s.lockWaitSeconds.Observe(wait.Seconds())
}

// AddMaintenance counts a committed maintenance transaction.
func (s *Counters) AddMaintenance(component string, wait, hold time.Duration) {
	s.Commits.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockWindowLocked(component).add(wait, hold)
}

// SetSpool notes the spool being drained and, when it is new to the
// database, the one it replaced.
func (s *Counters) SetSpool(id spool.Identity, replaced *SpoolReplaced) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spool != id || replaced != nil {
		s.replaced = replaced
	}
	s.spool = id
}

// AddBackfill counts rows a named backfill job updated (stats file
// `backfillUpdates`).
func (s *Counters) AddBackfill(name string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backfills[name] += n
}

func (s *Counters) lockWindowLocked(component string) *lockWindow {
	w := s.perf[component]
	if w == nil {
		w = &lockWindow{wait: newWindow(1024), hold: newWindow(1024)}
		s.perf[component] = w
	}
	return w
}

// Drops returns the messages dropped so far, by reason.
func (s *Counters) Drops() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.drops)
}

// window keeps the last n values for percentiles.
type window struct {
	vals []float64
	next int
	full bool
}

func newWindow(n int) *window { return &window{vals: make([]float64, n)} }

func (w *window) add(v float64) {
	w.vals[w.next] = v
	w.next++
	if w.next == len(w.vals) {
		w.next, w.full = 0, true
	}
}

func (w *window) sorted() []float64 {
	n := w.next
	if w.full {
		n = len(w.vals)
	}
	out := slices.Clone(w.vals[:n])
	slices.Sort(out)
	return out
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// lockWindow is CoreScope's writer_perf: how long a component waited for
// the write lock and how long it held it, over its last 1024 transactions.
type lockWindow struct {
	count      int64
	contention int64
	wait, hold *window
}

// contentionWait is CoreScope's threshold for counting a wait as contention.
const contentionWait = 100 * time.Millisecond

func (l *lockWindow) add(wait, hold time.Duration) {
	l.count++
	if wait > contentionWait {
		l.contention++
	}
	l.wait.add(float64(wait) / float64(time.Millisecond))
	l.hold.add(float64(hold) / float64(time.Millisecond))
}

// writerPerf is one writer_perf entry of the stats file.
type writerPerf struct {
	Count           int64   `json:"count"`
	ContentionTotal int64   `json:"contention_total"`
	WaitP50         float64 `json:"wait_ms_p50"`
	WaitP95         float64 `json:"wait_ms_p95"`
	WaitP99         float64 `json:"wait_ms_p99"`
	WaitMax         float64 `json:"wait_ms_max"`
	HoldP50         float64 `json:"hold_ms_p50"`
	HoldP95         float64 `json:"hold_ms_p95"`
	HoldP99         float64 `json:"hold_ms_p99"`
	HoldMax         float64 `json:"hold_ms_max"`
}

// ProcIORates is the stats file's procIO object.
type ProcIORates struct {
	ReadBytesPerSec           float64 `json:"readBytesPerSec"`
	WriteBytesPerSec          float64 `json:"writeBytesPerSec"`
	CancelledWriteBytesPerSec float64 `json:"cancelledWriteBytesPerSec"`
	SyscallsRead              float64 `json:"syscallsRead"`
	SyscallsWrite             float64 `json:"syscallsWrite"`
	SampledAt                 string  `json:"sampledAt"`
}

// File is the JSON CoreScope's server reads at CORESCOPE_INGESTOR_STATS
// (docs/reference/stats-contract.md), with meshingest's additions under
// "meshingest" (ignored by the server).
type File struct {
	SampledAt            string                           `json:"sampledAt"`
	TxInserted           int64                            `json:"tx_inserted"`
	ObsInserted          int64                            `json:"obs_inserted"`
	TxDupes              int64                            `json:"tx_dupes"`
	NodeUpserts          int64                            `json:"node_upserts"`
	ObserverUpserts      int64                            `json:"observer_upserts"`
	WriteErrors          int64                            `json:"write_errors"`
	SigDrops             int64                            `json:"sig_drops"`
	WALCommits           int64                            `json:"walCommits"`
	GroupCommitFlushes   int64                            `json:"groupCommitFlushes"`
	BackfillUpdates      map[string]int64                 `json:"backfillUpdates"`
	ProcIO               *ProcIORates                     `json:"procIO,omitempty"`
	WriterPerf           map[string]writerPerf            `json:"writer_perf,omitempty"`
	SourceLiveness       map[string]shared.SourceLiveness `json:"source_liveness,omitempty"`
	SourceStatuses       []shared.SourceStatus            `json:"source_statuses,omitempty"`
	WatchdogLastTickUnix int64                            `json:"watchdogLastTickUnix,omitempty"`
	Meshingest           WriterExtra                      `json:"meshingest"`
}

// WriterExtra is what meshingest adds to the stats file.
type WriterExtra struct {
	PID               int              `json:"pid"`
	Messages          int64            `json:"messages"`
	LagSeconds        float64          `json:"lag_seconds"` // now − receive time of the last committed record
	CaughtUp          bool             `json:"caught_up"`
	SpoolDepthRecords int64            `json:"spool_depth_records"`
	SpoolDepthKnown   bool             `json:"spool_depth_known"`
	LastBatchSize     int64            `json:"last_batch_size"`
	Batches           int64            `json:"batches"`
	TxMsP50           float64          `json:"transaction_ms_p50"`
	TxMsP99           float64          `json:"transaction_ms_p99"`
	LastCommitUnix    int64            `json:"last_commit_unix"`
	MetricsRows       int64            `json:"observer_metrics_rows"`
	NeighborReports   int64            `json:"neighbor_reports"`
	Drops             map[string]int64 `json:"drops"`
	Database          dbfile.Snapshot  `json:"database"`
	Spool             SpoolExtra       `json:"spool"`
	// Spools are each spool's figures: with receiver instances, one per
	// receiver (depth, lag, records applied, other receivers' copies).
	Spools []SpoolFigures `json:"spools"`
	// Health is what /-/healthy and /-/ready answer, for `meshingest
	// status`.
	Health        shared.HealthState `json:"health"`
	ReceiverStats string             `json:"receiver_stats,omitempty"` // why the receiver's part is missing
}

// SpoolReplaced says that the spool being read is new to the database and
// another one was drained before it: a spool folder made anew (a replaced
// disk, `rm -rf`, a disk not mounted at boot).
type SpoolReplaced struct {
	Previous         string `json:"previous"`          // its identity
	PreviousPosition string `json:"previous_position"` // where the writer stopped in it
	// UnwrittenRecords is how many records the previous spool still held
	// after that position at the writer's last commit in it, -1 unknown:
	// they were never written, unless that spool is drained again.
	UnwrittenRecords int64 `json:"unwritten_records"`
}

// SpoolExtra is the stats file's spool object: the spool drained, and
// whether it replaced another one.
type SpoolExtra struct {
	Identity string         `json:"identity"`
	Replaced *SpoolReplaced `json:"replaced,omitempty"`
	// Reader is what the spool reader did since the writer started:
	// segments and records read and released, and every record it could
	// not return, in exactly one of records_quarantined (damaged, kept in
	// quarantine/ for requeue), records_set_aside (in a segment of another
	// spool, or out of place) and records_lost (unreadable; a lower bound
	// when records_lost_unbounded). nil for a source that is no spool.
	Reader *spool.ReaderStats `json:"reader,omitempty"`
}

// Snapshot builds the stats file. rx is the receiver's snapshot (nil when
// stale or missing); depth is the spool depth, negative when unknown;
// spools are each spool's figures.
func (s *Counters) Snapshot(now time.Time, rx *shared.ReceiverSnapshot, depth int64, trouble dbfile.Snapshot, spools []SpoolFigures) File {
	f := File{
		SampledAt:          now.UTC().Format(time.RFC3339Nano),
		TxInserted:         s.TxInserted.Load(),
		ObsInserted:        s.ObsWritten.Load(),
		TxDupes:            s.TxDupes.Load(),
		NodeUpserts:        s.NodeUpserts.Load(),
		ObserverUpserts:    s.ObserverUpserts.Load(),
		WriteErrors:        s.WriteErrors.Load(),
		SigDrops:           s.SigDrops.Load(),
		WALCommits:         s.Commits.Load(),
		GroupCommitFlushes: s.Batches.Load(),
	}
	ex := &f.Meshingest
	ex.Messages = s.Messages.Load()
	ex.CaughtUp = s.CaughtUp.Load()
	ex.LastBatchSize = s.LastBatchSize.Load()
	ex.Batches = s.Batches.Load()
	ex.LastCommitUnix = s.LastCommitUnix.Load()
	ex.MetricsRows = s.MetricsRows.Load()
	ex.NeighborReports = s.NeighborReports.Load()
	if ns := s.LastReceivedNs.Load(); ns != 0 {
		ex.LagSeconds = max(now.Sub(time.Unix(0, ns)).Seconds(), 0)
	}
	ex.SpoolDepthRecords, ex.SpoolDepthKnown = max(depth, 0), depth >= 0
	ex.Database = trouble

	s.mu.Lock()
	f.BackfillUpdates = maps.Clone(s.backfills)
	ex.Spool = SpoolExtra{Identity: s.spool.String(), Replaced: s.replaced}
	ex.Drops = maps.Clone(s.drops)
	tx := s.txTimes.sorted()
	ex.TxMsP50, ex.TxMsP99 = percentile(tx, 0.50), percentile(tx, 0.99)
	f.WriterPerf = map[string]writerPerf{}
	for name, w := range s.perf {
		wait, hold := w.wait.sorted(), w.hold.sorted()
		f.WriterPerf[name] = writerPerf{
			Count: w.count, ContentionTotal: w.contention,
			WaitP50: percentile(wait, 0.5), WaitP95: percentile(wait, 0.95), WaitP99: percentile(wait, 0.99), WaitMax: percentile(wait, 1),
			HoldP50: percentile(hold, 0.5), HoldP95: percentile(hold, 0.95), HoldP99: percentile(hold, 0.99), HoldMax: percentile(hold, 1),
		}
	}
	lastMessage := maps.Clone(s.lastMessage)
	s.mu.Unlock()
	ex.Spools = spools

	// source_liveness: the receiver knows when each source last delivered
	// a message, the writer when one from it was last written.
	f.SourceLiveness = map[string]shared.SourceLiveness{}
	if rx != nil {
		f.SourceStatuses = rx.SourceStatuses
		for name, l := range rx.SourceLiveness {
			f.SourceLiveness[name] = shared.SourceLiveness{LastReceiptUnix: l.LastReceiptUnix}
		}
	}
	for name, at := range lastMessage {
		l := f.SourceLiveness[name]
		l.LastMessageUnix = at
		f.SourceLiveness[name] = l
	}
	return f
}

// Register exposes the same figures as Prometheus metrics. The counters
// read the Counters' atomics, so the file and the metrics never disagree.
// Durations are in seconds (Prometheus' base unit).
func (s *Counters) Register(reg prometheus.Registerer, depth func() int64, trouble func() dbfile.Snapshot, health shared.Health, reader func() *spool.ReaderStats, spools func(now time.Time) []SpoolFigures) {
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meshingest", Subsystem: "writer", Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "meshingest", Subsystem: "writer", Name: name, Help: help}, f)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		counter("messages_total", "Spool records consumed and committed.", &s.Messages),
		counter("transmissions_inserted_total", "New transmissions rows.", &s.TxInserted),
		counter("observations_written_total", "Observation rows written (inserted or filled).", &s.ObsWritten),
		counter("duplicate_transmissions_total", "Packets whose content hash was already stored.", &s.TxDupes),
		counter("signature_drops_total", "Adverts dropped for a bad signature.", &s.SigDrops),
		counter("neighbor_reports_total", "Neighbor reports (…/neighbors) stored in meshingest_neighbor_reports.", &s.NeighborReports),
		counter("batches_total", "Ingest transactions committed.", &s.Batches),
		counter("commits_total", "SQLite transactions committed (ingest and maintenance).", &s.Commits),
		counter("write_errors_total", "Batch attempts the database refused (each was rolled back and retried).", &s.WriteErrors),
		gauge("last_batch_records", "Records in the last committed batch.", func() float64 { return float64(s.LastBatchSize.Load()) }),
		gauge("lag_seconds", "Now minus the receive time of the last committed record.", func() float64 {
			ns := s.LastReceivedNs.Load()
			if ns == 0 {
				return 0
			}
			return max(time.Since(time.Unix(0, ns)).Seconds(), 0)
		}),
		gauge("last_commit_timestamp_seconds", "Unix time of the last ingest commit.", func() float64 { return float64(s.LastCommitUnix.Load()) }),
		gauge("spool_depth_records", "Records in the spool not yet written (-1 unknown).", func() float64 { return float64(depth()) }),
		gauge("caught_up", "1 when the last read reached the end of the sealed segments.", func() float64 { return bit(s.CaughtUp.Load()) }),
		gauge("database_refusing", "1 while the database refuses writes (an episode is open).", func() float64 { return bit(trouble().Current != nil) }),
		gauge("database_refusing_seconds", "How long the current episode of refused writes has lasted (0 when none).", func() float64 {
			if e := trouble().Current; e != nil {
				return e.Seconds
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meshingest", Subsystem: "writer", Name: "database_episodes_total",
			Help: "Episodes during which the database refused writes."}, func() float64 { return float64(trouble().Episodes) }),
		gauge("ready", "1 while /-/ready answers 200: the database is open and records have not waited past writer.notReadyAfterSec for it.", func() float64 {
			return bit(health.State().Ready)
		}),
		gauge("healthy", "1 while /-/healthy answers 200: the drain loop goes round.", func() float64 { return bit(health.State().Healthy) }),
		s.txSeconds,
		s.lockWaitSeconds,
		&statsCollector{s: s}, &spoolCollector{figures: spools},
	)
	// The spool reader's counters: what it could not return, by fate.
	readerCounter := func(name, help string, v func(*spool.ReaderStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meshingest", Subsystem: "writer", Name: name, Help: help},
			func() float64 {
				if st := reader(); st != nil {
					return float64(v(st))
				}
				return 0
			})
	}
	reg.MustRegister(
		readerCounter("spool_records_read_total", "Spool records the reader returned.", func(st *spool.ReaderStats) uint64 { return st.RecordsRead }),
		readerCounter("spool_segments_damaged_total", "Spool segments that failed their checks (their intact records were read).", func(st *spool.ReaderStats) uint64 { return st.SegmentsDamaged }),
		readerCounter("spool_records_quarantined_total", "Damaged spool records moved to quarantine/ (requeue can put them back).", func(st *spool.ReaderStats) uint64 { return st.RecordsQuarantined }),
		readerCounter("spool_segments_set_aside_total", "Spool segments of another spool, or out of place, set aside whole.", func(st *spool.ReaderStats) uint64 { return st.SegmentsSetAside }),
		readerCounter("spool_records_set_aside_total", "Records in spool segments set aside whole.", func(st *spool.ReaderStats) uint64 { return st.RecordsSetAside }),
		readerCounter("spool_folders_replaced_total", "Times a spool folder was found replaced under the writer (deleted and made anew), which reopened it.", func(st *spool.ReaderStats) uint64 { return st.FolderReplaced }),
		readerCounter("spool_records_lost_total", "Spool records in damaged segments that could not be read at all (a lower bound when a trailer was unreadable).", func(st *spool.ReaderStats) uint64 { return st.RecordsLost }),
	)
}

// statsCollector exposes the drops by reason, every reason from zero.
type statsCollector struct{ s *Counters }

var descDrops = prometheus.NewDesc("meshingest_writer_drops_total", "Messages dropped, by reason (every reason from zero).", []string{"reason"}, nil)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descDrops }

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	drops := maps.Clone(c.s.drops)
	c.s.mu.Unlock()
	for _, r := range c.s.reasons {
		if _, ok := drops[r]; !ok {
			drops[r] = 0
		}
	}
	for r, n := range drops {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), r)
	}
}
