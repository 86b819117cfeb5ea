package shared

import (
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// LogFormat selects how log lines look.
type LogFormat int

const (
	// LogAuto writes console lines on a terminal and JSON otherwise, which
	// is what journald and log shippers want under systemd.
	LogAuto LogFormat = iota
	LogConsole
	LogJSON
)

// NewLogger returns the process logger. component names the process
// ("receiver", "writer", ...) on every line. level is a zerolog level name;
// empty means info.
func NewLogger(w io.Writer, component, level string, format LogFormat) zerolog.Logger {
	if format == LogAuto {
		format = LogJSON
		if f, ok := w.(*os.File); ok && isTerminal(f) && os.Getenv("JOURNAL_STREAM") == "" {
			format = LogConsole
		}
	}
	if format == LogConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(strings.TrimSpace(level)))
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("component", component).Logger()
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Throttle lets a repeated event be logged at most once per interval per
// key, and says how many were suppressed in between. Packet-rate errors (a
// full spool, a broker refusing us, a database lock) go through it so the
// log stays readable and the disk is not filled by the log itself.
type Throttle struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	muted    map[string]int
}

// NewThrottle returns a throttle that lets one event per key through every
// interval.
func NewThrottle(interval time.Duration) *Throttle {
	return &Throttle{interval: interval, last: map[string]time.Time{}, muted: map[string]int{}}
}

// Allow reports whether the event for key should be logged now, and how many
// events for key were suppressed since the last one that was.
func (t *Throttle) Allow(key string, now time.Time) (ok bool, suppressed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, seen := t.last[key]; seen && now.Sub(last) < t.interval {
		t.muted[key]++
		return false, 0
	}
	t.last[key] = now
	suppressed = t.muted[key]
	delete(t.muted, key)
	// Keys can come from the network (an observer id, a region); bound the
	// map so a hostile publisher cannot grow it.
	if len(t.last) > 1024 {
		for k, v := range t.last {
			if now.Sub(v) >= t.interval {
				delete(t.last, k)
				delete(t.muted, k)
			}
		}
	}
	return true, suppressed
}
