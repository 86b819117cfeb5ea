package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// statusFiles writes a configuration naming two stats files in a temp
// folder and returns its path and the two files' paths.
func statusFiles(t *testing.T) (config, rx, wr string) {
	t.Helper()
	dir := t.TempDir()
	rx, wr = filepath.Join(dir, "rx.json"), filepath.Join(dir, "wr.json")
	config = filepath.Join(dir, "config.json")
	body, _ := json.Marshal(map[string]any{
		"dbPath":   filepath.Join(dir, "meshcore.db"),
		"receiver": map[string]any{"statsFile": rx},
		"writer":   map[string]any{"statsFile": wr},
	})
	if err := os.WriteFile(config, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return config, rx, wr
}

func writeStatsJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func rxStats(at time.Time, h shared.HealthState) map[string]any {
	return map[string]any{"sampledAt": at.UTC().Format(time.RFC3339Nano), "pid": 11, "healthy": h.Healthy, "unhealthy": h.Unhealthy,
		"ready": h.Ready, "notReady": h.NotReady, "source_statuses": []map[string]any{{"name": "a", "connected": true}}, "spool": map[string]any{"depth_records": 7}}
}

func wrStats(at time.Time, h shared.HealthState) map[string]any {
	return map[string]any{"sampledAt": at.UTC().Format(time.RFC3339Nano), "meshingest": map[string]any{"pid": 12, "health": h, "lag_seconds": 1.2, "messages": 99}}
}

var (
	well     = shared.HealthState{Healthy: true, Ready: true}
	refusing = shared.HealthState{Healthy: true, NotReady: "the database has refused writes for 75s (locked)"}
	stuck    = shared.HealthState{Unhealthy: "the drain loop last ran 40s ago"}
)

func TestStatus_Cases_LineAndExitStatus(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		rx, wr map[string]any // nil: no file
		exit   int
		want   []string
	}{
		{"both well", rxStats(now, well), wrStats(now, well), 0, []string{"receiver: ok: 1/1 sources connected, spool depth 7 records (pid 11", "writer: ok: lag 1s, spool depth 0 records, 99 messages written (pid 12"}},
		{"writer not ready", rxStats(now, well), wrStats(now, refusing), 3, []string{"writer: NOT READY: the database has refused writes for 75s (locked)"}},
		{"writer unhealthy", rxStats(now, well), wrStats(now, stuck), 1, []string{"writer: UNHEALTHY: the drain loop last ran 40s ago"}},
		{"receiver stale", rxStats(now.Add(-time.Minute), well), wrStats(now, refusing), 1, []string{"receiver: DOWN: its stats file was last written 1m0s ago, over --max-age 10s"}},
		{"receiver missing", nil, wrStats(now, well), 1, []string{"receiver: DOWN: no stats file at ", "is it running?"}},
		{"no health recorded", rxStats(now, well), map[string]any{"sampledAt": now.UTC().Format(time.RFC3339Nano), "meshingest": map[string]any{"pid": 3}}, 1, []string{"writer: UNKNOWN"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			config, rx, wr := statusFiles(t)
			if c.rx != nil {
				writeStatsJSON(t, rx, c.rx)
			}
			if c.wr != nil {
				writeStatsJSON(t, wr, c.wr)
			}
			var out, errOut bytes.Buffer
			exit := statusCommand([]string{"--config", config}, &out, &errOut, now)
			if exit != c.exit {
				t.Errorf("exit %d, want %d; output:\n%s%s", exit, c.exit, out.String(), errOut.String())
			}
			if n := strings.Count(out.String(), "\n"); n != 2 {
				t.Errorf("%d lines, want one per process:\n%s", n, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// With the defaults, the files the systemd units write are found too, and
// the freshest file wins; the unit paths are the units' own.
func TestStatus_UnitPaths_FreshestWins(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("RUNTIME_DIRECTORY", "")
	t.Setenv("CORESCOPE_INGESTOR_STATS", "")
	oldRx, oldWr := unitReceiverStats, unitWriterStats
	defer func() { unitReceiverStats, unitWriterStats = oldRx, oldWr }()
	unitReceiverStats, unitWriterStats = filepath.Join(dir, "unit-rx.json"), filepath.Join(dir, "unit-wr.json")
	config := filepath.Join(dir, "config.json")
	os.WriteFile(config, []byte(`{"dbPath": "`+filepath.Join(dir, "data", "meshcore.db")+`"}`), 0o600)
	cfg, err := shared.LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(cfg.SpoolDir, 0o700)
	now := time.Now()
	writeStatsJSON(t, cfg.Receiver.StatsFile, rxStats(now.Add(-time.Hour), well)) // an old manual run
	writeStatsJSON(t, unitReceiverStats, rxStats(now, well))
	writeStatsJSON(t, unitWriterStats, wrStats(now, well))
	var out bytes.Buffer
	if exit := statusCommand([]string{"--config", config}, &out, &out, now); exit != 0 {
		t.Fatalf("exit %d:\n%s", exit, out.String())
	}
	if !strings.Contains(out.String(), unitReceiverStats) || !strings.Contains(out.String(), unitWriterStats) {
		t.Fatalf("the unit files were not used:\n%s", out.String())
	}

	for unit, want := range map[string]*regexp.Regexp{
		"meshingest-writer.service":   regexp.MustCompile(`(?m)^Environment=CORESCOPE_INGESTOR_STATS=` + regexp.QuoteMeta(oldWr) + `$`),
		"meshingest-receiver.service": regexp.MustCompile(`(?m)^RuntimeDirectory=meshingest$`),
	} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		if !want.Match(data) {
			t.Errorf("%s does not match %s", unit, want)
		}
		if oldRx != "/run/meshingest/receiver-stats.json" {
			t.Errorf("status looks for the receiver's stats in %s, not in RuntimeDirectory=meshingest", oldRx)
		}
	}
}

func TestStatus_Help_OnStandardOutput(t *testing.T) {
	var out, errOut bytes.Buffer
	if exit := statusCommand([]string{"-h"}, &out, &errOut, time.Now()); exit != 0 || !strings.Contains(out.String(), "usage: meshingest status") || errOut.Len() != 0 {
		t.Fatalf("exit %d stdout %q stderr %q", exit, out.String(), errOut.String())
	}
}
