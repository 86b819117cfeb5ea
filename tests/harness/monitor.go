package harness

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"sync"
	"time"
)

// Arrival is one row seen in the database: when its message was published
// and when the poller first saw the row. The poller's interval is the
// resolution of every latency (the database's own times have one-second
// precision, too coarse for a p99 against a 2 s goal).
type Arrival struct {
	Published, Arrived time.Time
}

func (a Arrival) Latency() time.Duration { return a.Arrived.Sub(a.Published) }

// Poller watches the database for new transmissions and observations and
// times their arrival against the publisher's records. It reopens the
// database on every poll, so it follows a file swapped underneath it, and
// reads with query_only, so it never takes the write lock.
type Poller struct {
	path     string
	pub      *Publisher
	interval time.Duration

	mu              sync.Mutex
	lastTx, lastObs int64
	tx, obs         []Arrival
	observations    int64 // rows seen
	errors          int
	lastErr         string
	unknownArrivals int // rows whose message the publisher did not record
}

func newPoller(path string, pub *Publisher, interval time.Duration) *Poller {
	return &Poller{path: path, pub: pub, interval: interval}
}

// Run polls until ctx ends.
func (p *Poller) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.poll()
		}
	}
}

func (p *Poller) poll() {
	if _, err := os.Stat(p.path); err != nil {
		return // not created yet, or being swapped
	}
	db, err := openDB(p.path)
	if err != nil {
		p.fail(err)
		return
	}
	defer db.Close()
	p.mu.Lock()
	lastTx, lastObs := p.lastTx, p.lastObs
	p.mu.Unlock()
	type txRow struct {
		id   int64
		hash string
	}
	var txs []txRow
	err = scanRowsAny(db, `SELECT id, hash FROM transmissions WHERE id > ? ORDER BY id LIMIT 50000`, []any{lastTx}, func(id int64, s []string) {
		txs = append(txs, txRow{id, s[0]})
	}, 1)
	if err != nil {
		p.fail(err)
		return
	}
	type obsRow struct {
		id int64
		k  observation
	}
	var obs []obsRow
	err = scanRowsAny(db, `SELECT o.id, t.hash, COALESCE(obs.id, ''), COALESCE(o.path_json, '')
		FROM observations o JOIN transmissions t ON t.id = o.transmission_id
		LEFT JOIN observers obs ON obs.rowid = o.observer_idx
		WHERE o.id > ? ORDER BY o.id LIMIT 50000`, []any{lastObs}, func(id int64, s []string) {
		obs = append(obs, obsRow{id, observation{s[0], s[1], s[2]}})
	}, 3)
	if err != nil {
		p.fail(err)
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range txs {
		p.lastTx = max(p.lastTx, r.id)
		if at, ok := p.pub.firstPublished(r.hash); ok {
			p.tx = append(p.tx, Arrival{at, now})
		} else {
			p.unknownArrivals++
		}
	}
	for _, r := range obs {
		p.lastObs = max(p.lastObs, r.id)
		p.observations++
		if at, ok := p.pub.observationPublished(r.k); ok {
			p.obs = append(p.obs, Arrival{at, now})
		} else {
			p.unknownArrivals++
		}
	}
}

func (p *Poller) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errors++
	p.lastErr = err.Error()
}

// Observations is the number of observation rows seen so far.
func (p *Poller) Observations() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.observations
}

// Arrivals returns the transmission and observation arrivals so far.
func (p *Poller) Arrivals() (tx, obs []Arrival) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.tx), slices.Clone(p.obs)
}

// LatencyPercentiles are the p50 and p99 latencies of the arrivals whose
// message was published within [from, to).
func LatencyPercentiles(as []Arrival, from, to time.Time) (p50, p99, maxLat time.Duration, n int) {
	var ls []time.Duration
	for _, a := range as {
		if !a.Published.Before(from) && a.Published.Before(to) {
			ls = append(ls, a.Latency())
		}
	}
	if len(ls) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(ls)
	pick := func(q float64) time.Duration { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
	return pick(0.50), pick(0.99), ls[len(ls)-1], len(ls)
}

// stats is a parsed stats file, read generically: the receiver's and the
// writer's files are different shapes, and the harness needs a handful of
// fields from each.
type stats map[string]any

func readStats(path string) stats {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var s stats
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return s
}

// num is the number at a path of keys, 0 when absent.
func (s stats) num(path ...string) float64 {
	var v any = map[string]any(s)
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return 0
		}
		v = m[k]
	}
	f, _ := v.(float64)
	return f
}

func (s stats) obj(path ...string) map[string]any {
	var v any = map[string]any(s)
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	m, _ := v.(map[string]any)
	return m
}

func (s stats) str(path ...string) string {
	var v any = map[string]any(s)
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	str, _ := v.(string)
	return str
}

// Sample is one second of a run's timeline.
type Sample struct {
	At             time.Time
	Published      int64
	DBObservations int64
	ReceiverDepth  float64 // spool records on disk not yet drained (receiver's view)
	WriterDepth    float64 // the same, writer's view
	LagSeconds     float64 // writer: now − receive time of the last committed record
	ReceiverFsyncs float64 // cumulative, current incarnation
	ReceiverGroups float64
	WriterCommits  float64 // walCommits, current incarnation
	ReceiverPID    int
	WriterPID      int
	ReceiverRSS    int64
	WriterRSS      int64
	WriterCaughtUp bool
	WriterDBState  string
}

// sampler records a Sample every second.
type sampler struct {
	env     *Env
	mu      sync.Mutex
	samples []Sample
}

func (s *sampler) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *sampler) sample() {
	e := s.env
	x := Sample{At: time.Now(), Published: e.Pub.Published(), DBObservations: e.Poller.Observations()}
	if rx := readStats(e.ReceiverStats); rx != nil {
		x.ReceiverDepth = rx.num("spool", "depth_records")
		x.ReceiverFsyncs = rx.num("spool", "fsyncs")
		x.ReceiverGroups = rx.num("spool", "groups")
	}
	if wx := readStats(e.WriterStats); wx != nil {
		x.WriterDepth = wx.num("meshingest", "spool_depth_records")
		x.LagSeconds = wx.num("meshingest", "lag_seconds")
		x.WriterCommits = wx.num("walCommits")
		x.WriterCaughtUp, _ = wx.obj("meshingest")["caught_up"].(bool)
		x.WriterDBState = wx.str("meshingest", "database", "state")
	}
	if pid := e.Receiver.PID(); pid != 0 {
		x.ReceiverPID = pid
		if ps, err := ReadProc(pid); err == nil {
			x.ReceiverRSS = ps.RSSBytes
		}
	}
	if pid := e.Writer.PID(); pid != 0 {
		x.WriterPID = pid
		if ps, err := ReadProc(pid); err == nil {
			x.WriterRSS = ps.RSSBytes
		}
	}
	s.mu.Lock()
	s.samples = append(s.samples, x)
	s.mu.Unlock()
}

func (s *sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// PublishLag is, at each sample time, how long the oldest observation
// already published but not yet in the database has been waiting (0 when
// none): the lag a user of the database sees, measured by the harness
// rather than reported by the writer. Observations that never arrived are
// left out (the accounting reports them as lost).
func PublishLag(samples []Sample, arrivals []Arrival) []float64 {
	sorted := slices.Clone(arrivals)
	slices.SortFunc(sorted, func(a, b Arrival) int { return a.Published.Compare(b.Published) })
	out := make([]float64, len(samples))
	for i, s := range samples {
		for _, a := range sorted {
			if a.Published.After(s.At) {
				break
			}
			if a.Arrived.After(s.At) {
				out[i] = s.At.Sub(a.Published).Seconds()
				break
			}
		}
	}
	return out
}
