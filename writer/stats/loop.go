package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// Loop writes the stats file and the status line `systemctl status` shows.
type Loop struct {
	Path         string // the stats file
	ReceiverPath string // the receiver's stats file, merged in ("" none)
	Interval     time.Duration
	// Sample is the writer's figures at now, with the receiver's snapshot
	// (nil when stale or missing).
	Sample func(now time.Time, rx *shared.ReceiverSnapshot) File
	// Ready reports whether the writer said READY: no status line before,
	// READY carries its own.
	Ready  func() bool
	Status func(line string)
	Warn   func(err error) // a file that could not be written
}

// Heartbeat is the longest the stats file goes unwritten while no figure
// changes: CoreScope's server ignores a file sampled more than 5 s ago
// (docs/reference/stats-contract.md).
const Heartbeat = 2 * time.Second

// Run samples every Interval until ctx ends, then writes one last file,
// with the counters of the last batches (the caller has stopped the drain
// loop by then).
func (l Loop) Run(ctx context.Context) {
	tick := time.NewTicker(l.Interval)
	defer tick.Stop()
	var prevIO *shared.ProcIO
	var prevAt, lastStatus, lastFileAt time.Time
	var lastKey, lastFileKey string
	for final := false; ; {
		now := time.Now()
		rx, rxErr := shared.ReadReceiverSnapshot(l.ReceiverPath, 5*time.Second, now)
		f := l.Sample(now, rx)
		f.Meshingest.PID = os.Getpid()
		if rxErr != nil {
			f.Meshingest.ReceiverStats = rxErr.Error()
		}
		if cur, err := shared.ReadProcIO(0); err == nil {
			if prevIO != nil {
				f.ProcIO = ioRates(*prevIO, cur, now.Sub(prevAt).Seconds(), f.SampledAt)
			}
			prevIO, prevAt = &cur, now
		}
		// The status line follows state changes at once and the figures
		// every few seconds; nothing before READY, which carries its own.
		if key := f.statusKey(); !final && l.Ready() && (key != lastKey || now.Sub(lastStatus) >= 5*time.Second) {
			lastStatus, lastKey = now, key
			l.Status(f.StatusLine())
		}
		// Rewritten when a figure changed, or Heartbeat after the last
		// write: an idle writer does not rewrite the same file every second.
		if key := f.key(); final || key != lastFileKey || now.Sub(lastFileAt) >= Heartbeat {
			lastFileKey, lastFileAt = key, now
			if err := shared.WriteJSONAtomic(l.Path, f); err != nil {
				l.Warn(err)
			}
		}
		if final {
			return
		}
		select {
		case <-ctx.Done():
			final = true
		case <-tick.C:
		}
	}
}

// ioRates are the process's I/O per second between two samples sec apart.
func ioRates(prev, cur shared.ProcIO, sec float64, sampledAt string) *ProcIORates {
	return &ProcIORates{
		ReadBytesPerSec:           float64(cur.ReadBytes-prev.ReadBytes) / sec,
		WriteBytesPerSec:          float64(cur.WriteBytes-prev.WriteBytes) / sec,
		CancelledWriteBytesPerSec: float64(cur.CancelledWriteBytes-prev.CancelledWriteBytes) / sec,
		SyscallsRead:              float64(cur.SyscR-prev.SyscR) / sec,
		SyscallsWrite:             float64(cur.SyscW-prev.SyscW) / sec,
		SampledAt:                 sampledAt,
	}
}

// key is f without what changes with the clock alone: the sample times,
// the I/O rates (the file's own writes move them), the loop's tick and
// the lag, which grows by itself while nothing is written.
func (f File) key() string {
	f.SampledAt, f.ProcIO, f.WatchdogLastTickUnix, f.Meshingest.LagSeconds = "", nil, 0, 0
	b, _ := json.Marshal(f)
	return string(b)
}

func (f *File) statusKey() string {
	return fmt.Sprint(f.Meshingest.CaughtUp, f.Meshingest.Database.State, f.Meshingest.Health.Ready, f.Meshingest.Health.Healthy)
}

// StatusLine is the one line `systemctl status` shows.
func (f *File) StatusLine() string {
	ex := &f.Meshingest
	state := "caught up"
	if !ex.CaughtUp {
		state = "catching up"
	}
	db := "database ok"
	if ex.Database.Current != nil {
		db = fmt.Sprintf("database refuses writes (%s) for %.0fs", ex.Database.Current.Kind, ex.Database.Current.Seconds)
	}
	line := fmt.Sprintf("%s; lag %.0fs; %d messages written; %s", state, ex.LagSeconds, ex.Messages, db)
	if !ex.Health.Ready {
		line = "NOT READY; " + line
	}
	if !ex.Health.Healthy {
		line = "UNHEALTHY (" + ex.Health.Unhealthy + "); " + line
	}
	return line
}
