package shared

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// LogLevelNames are the values logLevel (and --log-level) accept.
const LogLevelNames = "debug, info, warn, error"

// ParseLogLevel reads a configured level: debug, info, warn (or warning),
// error, in any case; "" is info. Anything else is an error, so that a
// typo ("verbose") is refused rather than run at a level nobody chose.
func ParseLogLevel(name string) (zerolog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "debug":
		return zerolog.DebugLevel, nil
	case "", "info":
		return zerolog.InfoLevel, nil
	case "warn", "warning":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.InfoLevel, fmt.Errorf("%q is not a log level; use one of %s", name, LogLevelNames)
}

// LogLevel is the level of a process's logger. It can be changed while the
// process runs (SIGHUP reloads logLevel), so it sits in the logger's
// output rather than in the zerolog.Logger value, which is copied into
// every component.
type LogLevel struct{ v atomic.Int32 }

// NewLogLevel returns a level set to l.
func NewLogLevel(l zerolog.Level) *LogLevel {
	ll := &LogLevel{}
	ll.v.Store(int32(l))
	return ll
}

// Level is the current level.
func (l *LogLevel) Level() zerolog.Level { return zerolog.Level(l.v.Load()) }

// Set changes the level and returns the one it replaced.
func (l *LogLevel) Set(to zerolog.Level) (was zerolog.Level) {
	return zerolog.Level(l.v.Swap(int32(to)))
}

// NewLogger returns a logger at a fixed level: level is a name
// ParseLogLevel reads, and a bad one means info (configuration checks
// refuse it before a process starts). component names the process
// ("receiver", "writer", ...) on every line.
func NewLogger(w io.Writer, component, level string, format LogFormat) zerolog.Logger {
	lvl, _ := ParseLogLevel(level)
	return NewLoggerWithLevel(w, component, NewLogLevel(lvl), format)
}

// NewLoggerWithLevel returns the process logger, whose level follows
// level. Written to standard error under systemd (JOURNAL_STREAM names
// that very stream), each line starts with its syslog priority, "<3>" for
// an error to "<7>" for debug (sd-daemon(3)): journald strips the prefix
// and stores the priority, so `journalctl -p warning` shows warnings and
// worse. The line after the prefix is JSON, as everywhere but on a
// terminal: journald keeps it whole as the MESSAGE, which log shippers
// can parse.
func NewLoggerWithLevel(w io.Writer, component string, level *LogLevel, format LogFormat) zerolog.Logger {
	f, isFile := w.(*os.File)
	journal := isFile && onJournal(f)
	if format == LogAuto {
		format = LogJSON
		if isFile && !journal && isTerminal(f) {
			format = LogConsole
		}
	}
	if format == LogConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: journal}
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// The logger itself lets every level through that the code uses; the
	// output filters by the current level.
	out := &logOutput{w: w, level: level, journal: journal}
	return zerolog.New(out).Level(zerolog.DebugLevel).With().Timestamp().Str("component", component).Logger()
}

// logOutput filters lines by the current level and, on the journal,
// prefixes each with its priority.
type logOutput struct {
	w       io.Writer
	level   *LogLevel
	journal bool
}

func (o *logOutput) Write(p []byte) (int, error) { return o.WriteLevel(zerolog.NoLevel, p) }

func (o *logOutput) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l != zerolog.NoLevel && l < o.level.Level() {
		return len(p), nil
	}
	if !o.journal {
		return o.w.Write(p)
	}
	// One write per line, prefix included: lines of several goroutines
	// must not interleave.
	line := make([]byte, 0, len(p)+3)
	line = append(line, '<', '0'+syslogPriority(l), '>')
	line = append(line, p...)
	if _, err := o.w.Write(line); err != nil {
		return 0, err
	}
	return len(p), nil
}

// syslogPriority maps a zerolog level to the syslog priority journald
// stores: 3 err, 4 warning, 6 info, 7 debug (2 crit for fatal, 0 emerg for
// panic; a line without a level is info).
func syslogPriority(l zerolog.Level) byte {
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel:
		return 7
	case zerolog.WarnLevel:
		return 4
	case zerolog.ErrorLevel:
		return 3
	case zerolog.FatalLevel:
		return 2
	case zerolog.PanicLevel:
		return 0
	}
	return 6
}

// onJournal reports whether f is the stream systemd connected to the
// journal. JOURNAL_STREAM holds that stream's device and inode
// ("dev:inode", systemd.exec(5)); comparing them with f's is how
// sd-daemon(3) says to tell, since a child whose standard error its
// parent redirected (to a file, a pipe) inherits the variable too.
func onJournal(f *os.File) bool {
	devText, inoText, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devText, 10, 64)
	ino, err2 := strconv.ParseUint(inoText, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
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

// Decay lets a failure that repeats until something changes (a broker that
// stays unreachable) be logged the first time, then after first, 2×first,
// 4×first … up to most between two lines, counting what it held back.
// Retrying every 3 s and logging each attempt wrote 28,800 lines a day;
// with 1 min doubling to 1 h it is about 30. Reset starts over, for the
// next failure after a success. Not safe for concurrent use: one loop owns
// it.
type Decay struct {
	first, most time.Duration
	gap         time.Duration // until the line after the next; 0 before the first failure
	next        time.Time     // no line before this
	suppressed  int           // held back since the last line
	failures    int           // in this run
	since       time.Time     // the first failure of this run
}

// NewDecay returns a Decay whose second line comes first after the first,
// and whose lines are never more than most apart.
func NewDecay(first, most time.Duration) *Decay { return &Decay{first: first, most: most} }

// Allow reports whether this failure is logged, how many were held back
// since the last logged one, and when this run of failures began.
func (d *Decay) Allow(now time.Time) (ok bool, suppressed int, since time.Time) {
	d.failures++
	if d.gap == 0 {
		d.since, d.gap, d.next = now, d.first, now.Add(d.first)
		return true, 0, d.since
	}
	if now.Before(d.next) {
		d.suppressed++
		return false, 0, d.since
	}
	suppressed, d.suppressed = d.suppressed, 0
	d.gap = min(2*d.gap, d.most)
	d.next = now.Add(d.gap)
	return true, suppressed, d.since
}

// Reset ends the run of failures and returns how many it held and when it
// began (0 and the zero time when there was none).
func (d *Decay) Reset() (failures int, since time.Time) {
	failures, since = d.failures, d.since
	*d = Decay{first: d.first, most: d.most}
	return failures, since
}
