package shared

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestNewLogger_JSONCarriesComponent(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "receiver", "debug", LogAuto) // a buffer is not a terminal
	log.Info().Str("source", "local").Msg("connected")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %q: %v", buf.String(), err)
	}
	if line["component"] != "receiver" || line["source"] != "local" || line["message"] != "connected" {
		t.Fatalf("unexpected line %v", line)
	}
}

func TestThrottle_Allow_OncePerInterval(t *testing.T) {
	th := NewThrottle(time.Minute)
	t0 := time.Unix(1000, 0)
	if ok, _ := th.Allow("full", t0); !ok {
		t.Fatal("first event must pass")
	}
	for i := 1; i <= 5; i++ {
		if ok, _ := th.Allow("full", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatalf("event %d within the interval passed", i)
		}
	}
	if ok, _ := th.Allow("other", t0.Add(time.Second)); !ok {
		t.Fatal("a different key is throttled separately")
	}
	ok, suppressed := th.Allow("full", t0.Add(61*time.Second))
	if !ok || suppressed != 5 {
		t.Fatalf("after the interval: ok=%v suppressed=%d, want true 5", ok, suppressed)
	}
}

// journalPipe returns a pipe whose write end JOURNAL_STREAM names, as
// systemd sets it up for a unit's standard error.
func journalPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	fi, err := w.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	return r, w
}

func readLines(t *testing.T, r *os.File, w *os.File) []string {
	t.Helper()
	w.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// On the journal every line starts with its syslog priority and the rest
// is the JSON line, so `journalctl -p warning` works and shippers still
// parse the message.
func TestNewLogger_Journal_PriorityPrefix(t *testing.T) {
	r, w := journalPipe(t)
	log := NewLogger(w, "writer", "debug", LogAuto)
	log.Debug().Msg("d")
	log.Info().Msg("i")
	log.Warn().Msg("w")
	log.Error().Msg("e")
	lines := readLines(t, r, w)
	want := []string{"<7>", "<6>", "<4>", "<3>"}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d: %q", len(lines), len(want), lines)
	}
	for i, line := range lines {
		if !strings.HasPrefix(line, want[i]) {
			t.Fatalf("line %d = %q, want the prefix %s", i, line, want[i])
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(line[3:]), &v); err != nil {
			t.Fatalf("line %d after the prefix is not JSON: %q: %v", i, line, err)
		}
	}
}

// A JOURNAL_STREAM inherited by a process whose standard error goes
// elsewhere (here: another pipe) must not prefix anything.
func TestNewLogger_JournalStreamOfAnotherFile_NoPrefix(t *testing.T) {
	journalPipe(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	log := NewLogger(w, "writer", "info", LogAuto)
	log.Warn().Msg("w")
	lines := readLines(t, r, w)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "{") {
		t.Fatalf("got %q, want one plain JSON line", lines)
	}
}

func TestLogLevel_Set_FiltersAtOnce(t *testing.T) {
	var buf bytes.Buffer
	lvl := NewLogLevel(zerolog.InfoLevel)
	log := NewLoggerWithLevel(&buf, "receiver", lvl, LogJSON)
	log.Debug().Msg("hidden")
	if was := lvl.Set(zerolog.DebugLevel); was != zerolog.InfoLevel {
		t.Fatalf("Set returned %v, want info", was)
	}
	log.Debug().Msg("shown")
	lvl.Set(zerolog.ErrorLevel)
	log.Warn().Msg("hidden too")
	log.Error().Msg("error")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "shown") || !strings.Contains(out, `"message":"error"`) {
		t.Fatalf("level changes not applied:\n%s", out)
	}
}

func TestParseLogLevel_RefusesUnknown(t *testing.T) {
	for name, want := range map[string]zerolog.Level{"": zerolog.InfoLevel, "DEBUG": zerolog.DebugLevel, "warning": zerolog.WarnLevel, " error ": zerolog.ErrorLevel} {
		if got, err := ParseLogLevel(name); err != nil || got != want {
			t.Errorf("ParseLogLevel(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, name := range []string{"verbose", "trace", "fatal", "infos"} {
		if _, err := ParseLogLevel(name); err == nil {
			t.Errorf("ParseLogLevel(%q) accepted it", name)
		}
	}
}

// A failure every 3 s for a day is logged about 30 times, not 28,800:
// once, then after 1, 2, 4 … minutes, then hourly, each line with the
// count held back.
func TestDecay_Allow_OneMinuteDoublingToAnHour(t *testing.T) {
	d := NewDecay(time.Minute, time.Hour)
	t0 := time.Unix(1_000_000, 0)
	var logged []time.Duration
	var held int
	for at := time.Duration(0); at < 24*time.Hour; at += 3 * time.Second {
		ok, suppressed, since := d.Allow(t0.Add(at))
		if !since.Equal(t0) {
			t.Fatalf("since = %v, want the first failure %v", since, t0)
		}
		if ok {
			logged = append(logged, at)
			held += suppressed
		}
	}
	if len(logged) < 20 || len(logged) > 40 {
		t.Fatalf("%d lines in a day, want about 30: %v", len(logged), logged)
	}
	want := []time.Duration{0, time.Minute, 3 * time.Minute, 7 * time.Minute, 15 * time.Minute}
	for i, w := range want {
		if logged[i] != w {
			t.Fatalf("line %d at %v, want %v (all: %v)", i, logged[i], w, logged[:len(want)])
		}
	}
	for i := len(logged) - 3; i < len(logged); i++ {
		if gap := logged[i] - logged[i-1]; gap != time.Hour {
			t.Fatalf("late gap %v, want an hour", gap)
		}
	}
	total := int(24 * time.Hour / (3 * time.Second))
	failures, since := d.Reset()
	if failures != total || !since.Equal(t0) {
		t.Fatalf("Reset = %d failures since %v, want %d since %v", failures, since, total, t0)
	}
	if held+len(logged) > total || held+len(logged) < total-int(time.Hour/(3*time.Second)) {
		t.Fatalf("logged %d + held back %d does not account for %d failures (at most the last hour unreported)", len(logged), held, total)
	}
	if ok, _, since := d.Allow(t0.Add(25 * time.Hour)); !ok || !since.Equal(t0.Add(25*time.Hour)) {
		t.Fatal("after Reset the next failure must be logged at once and start a new run")
	}
}

// Durations in log lines carry their unit in the field name: zerolog's
// Dur writes milliseconds, so its field must end in _ms ("retryIn": 2500
// read as seconds was a 40-minute back-off). Every non-test file of the
// module is checked.
func TestLogFields_DurationsNameTheirUnit(t *testing.T) {
	dur := regexp.MustCompile(`\.Dur\("([^"]*)"`)
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range dur.FindAllSubmatch(src, -1) {
			if !strings.HasSuffix(string(m[1]), "_ms") {
				t.Errorf("%s: the duration field %q does not end in _ms", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
