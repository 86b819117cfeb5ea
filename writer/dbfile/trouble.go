package dbfile

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Tracker turns a run of failed batches into one episode: one log
// line when the database first refuses a batch, one when it takes one
// again (with the episode's length and how many attempts it took), and the
// current state for the stats file. It also computes the back-off before
// the next attempt.
type Tracker struct {
	log      zerolog.Logger
	first    time.Duration // first back-off
	maxDelay time.Duration // back-off cap

	mu       sync.Mutex // the stats goroutine reads; the drain loop writes
	current  *Episode
	last     *Episode
	episodes int64
	retries  int64
	byKind   map[Kind]int64 // retries per kind
}

// Episode is one stretch of time during which the database refused every
// batch.
type Episode struct {
	Kind      string    `json:"kind"`
	Started   time.Time `json:"started"`
	Ended     time.Time `json:"ended,omitzero"`
	Seconds   float64   `json:"seconds"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
}

// NewTracker returns a tracker whose back-off doubles from 50 ms up to
// maxDelay (default 1 s).
func NewTracker(log zerolog.Logger, maxDelay time.Duration) *Tracker {
	if maxDelay <= 0 {
		maxDelay = time.Second
	}
	return &Tracker{log: log, first: 50 * time.Millisecond, maxDelay: maxDelay, byKind: map[Kind]int64{}}
}

// Failed records a refused batch and returns how long to wait before
// retrying it.
func (t *Tracker) Failed(kind Kind, err error, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.retries++
	t.byKind[kind]++
	if t.current == nil {
		t.episodes++
		t.current = &Episode{Kind: string(kind), Started: now}
		t.log.Warn().Err(err).Str("kind", string(kind)).Str("hint", kind.Hint()).
			Msg("database refuses writes; rolling back and retrying the same batch until it accepts them")
	}
	e := t.current
	e.Attempts++
	e.LastError = err.Error()
	if e.Kind != string(kind) {
		// The cause changed within one episode (a lock, then a full
		// disk): say so once, the end line gives the total.
		t.log.Warn().Err(err).Str("kind", string(kind)).Str("was", e.Kind).Str("hint", kind.Hint()).
			Msg("database still refuses writes, for another reason")
		e.Kind = string(kind)
	}
	e.Seconds = now.Sub(e.Started).Seconds()
	delay := t.first << min(e.Attempts-1, 20)
	return min(delay, t.maxDelay)
}

// Succeeded ends the current episode, if any.
func (t *Tracker) Succeeded(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == nil {
		return
	}
	e := t.current
	e.Ended = now
	e.Seconds = now.Sub(e.Started).Seconds()
	t.log.Info().Str("kind", e.Kind).Int64("length_ms", now.Sub(e.Started).Milliseconds()).
		Int("attempts", e.Attempts).Msg("database accepts writes again; catching up")
	t.last = e
	t.current = nil
}

// Snapshot is the tracker's state for the stats file.
type Snapshot struct {
	State       string           `json:"state"` // "ok" or the kind of the current episode
	Current     *Episode         `json:"current_episode,omitempty"`
	Last        *Episode         `json:"last_episode,omitempty"`
	Episodes    int64            `json:"episodes"`
	Retries     int64            `json:"retries"`
	RetriesKind map[string]int64 `json:"retries_by_kind"`
}

// Snapshot is the tracker's state at now.
func (t *Tracker) Snapshot(now time.Time) Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Snapshot{State: "ok", Episodes: t.episodes, Retries: t.retries, RetriesKind: map[string]int64{}}
	for k, v := range t.byKind {
		s.RetriesKind[string(k)] = v
	}
	if t.current != nil {
		c := *t.current
		c.Seconds = now.Sub(c.Started).Seconds()
		s.Current = &c
		s.State = c.Kind
	}
	if t.last != nil {
		l := *t.last
		s.Last = &l
	}
	return s
}
