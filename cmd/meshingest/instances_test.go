package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// instanceSpoolDir makes a spoolDir with a spool per receiver instance
// name (the demo capture imported into each) and returns it with each
// spool's identity.
func instanceSpoolDir(t *testing.T, names ...string) (string, map[string]spool.Identity) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	demo, _ := writeDemo(t)
	ids := map[string]spool.Identity{}
	for _, n := range names {
		d := filepath.Join(dir, n)
		if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", d, demo); code != 0 {
			t.Fatalf("import into %s: %s", d, errs)
		}
		id, err := spool.ReadIdentity(d)
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = id.ID
	}
	return dir, ids
}

// writerSpoolStats writes a writer stats file sampled at at, listing
// figures for the given spools (applied, copies).
func writerSpoolStats(t *testing.T, path string, at time.Time, spools map[spool.Identity][2]int64) {
	t.Helper()
	var list []map[string]any
	for id, f := range spools {
		list = append(list, map[string]any{"identity": id.String(), "depth_records": 3, "lag_seconds": 0.4,
			"records_applied": f[0], "other_receiver_copies": f[1], "late_copies": 0})
	}
	st := wrStats(at, well)
	st["meshingest"].(map[string]any)["spools"] = list
	writeStatsJSON(t, path, st)
}

func TestSpoolStatus_Instances_OneInstance(t *testing.T) {
	dir, ids := instanceSpoolDir(t, "a")
	wr := filepath.Join(t.TempDir(), "wr.json")
	writerSpoolStats(t, wr, time.Now(), map[spool.Identity][2]int64{ids["a"]: {500, 0}})
	code, out, errs := runSpoolCmd(t, spoolStatus, "--dir", dir, "--writer-stats", wr)
	if code != 0 {
		t.Fatalf("status of a spoolDir with one instance: %d %s", code, errs)
	}
	for _, want := range []string{"1 receiver instance(s)", "writer stats: " + wr, "INSTANCE", "\na ", ids["a"].Short(), " 531 ", " 500 "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "(spoolDir)") {
		t.Errorf("spoolDir itself has no spool, yet it is listed:\n%s", out)
	}
}

func TestSpoolStatus_Instances_TwoInstancesJSON(t *testing.T) {
	dir, ids := instanceSpoolDir(t, "b", "a")
	wr := filepath.Join(t.TempDir(), "wr.json")
	writerSpoolStats(t, wr, time.Now(), map[spool.Identity][2]int64{ids["a"]: {500, 20}, ids["b"]: {31, 480}})
	code, out, errs := runSpoolCmd(t, spoolStatus, "--dir", dir, "--writer-stats", wr, "--json")
	if code != 0 {
		t.Fatalf("status --json: %d %s", code, errs)
	}
	var st spoolDirStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(st.Spools) != 2 || st.Spools[0].Instance != "a" || st.Spools[1].Instance != "b" {
		t.Fatalf("spools %+v, want a then b", st.Spools)
	}
	for _, s := range st.Spools {
		want := map[string][2]int64{"a": {500, 20}, "b": {31, 480}}[s.Instance]
		if s.Spool.Identity == nil || s.Spool.Identity.ID != ids[s.Instance] || s.Spool.Records != 531 {
			t.Errorf("%s: identity %v, %d records, want %s and 531", s.Instance, s.Spool.Identity, s.Spool.Records, ids[s.Instance])
		}
		if s.Writer == nil || s.Writer.RecordsApplied != want[0] || s.Writer.OtherReceiverCopies != want[1] {
			t.Errorf("%s: writer figures %+v, want applied %d copies %d", s.Instance, s.Writer, want[0], want[1])
		}
	}
	// Text: one row per instance, and the writer's figures in each.
	_, out, _ = runSpoolCmd(t, spoolStatus, "--dir", dir, "--writer-stats", wr)
	if !strings.Contains(out, "2 receiver instance(s)") || !strings.Contains(out, " 480 ") || !strings.Contains(out, ids["b"].Short()) {
		t.Errorf("text output:\n%s", out)
	}
}

// A folder in spoolDir without an identity is no spool: listed as one the
// writer does not drain, never read as an empty spool.
func TestSpoolStatus_Instances_FolderNotASpool(t *testing.T) {
	dir, _ := instanceSpoolDir(t, "a")
	junk := filepath.Join(dir, "b.old")
	os.MkdirAll(junk, 0o700)
	os.WriteFile(filepath.Join(junk, "notes.txt"), []byte("x"), 0o600)
	code, out, errs := runSpoolCmd(t, spoolStatus, "--dir", dir, "--writer-stats", filepath.Join(t.TempDir(), "none.json"))
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	if !strings.Contains(out, junk+": not a spool (no identity file): the writer does not drain it") {
		t.Errorf("the folder that is not a spool is not named:\n%s", out)
	}
	if !strings.Contains(out, "writer stats: none at ") || !strings.Contains(out, "1 receiver instance(s)") {
		t.Errorf("output:\n%s", out)
	}
	// Alone, such a folder does not make spoolDir a spoolDir of instances.
	lone := filepath.Join(t.TempDir(), "spool")
	os.MkdirAll(filepath.Join(lone, "b.old"), 0o700)
	if code, _, errs := runSpoolCmd(t, spoolStatus, "--dir", lone); code != 1 || !strings.Contains(errs, "not a spool folder") {
		t.Errorf("a spoolDir holding only a folder that is no spool: %d %s", code, errs)
	}
}

// A stale instance: its receiver has stopped (its status file says so,
// and is old), and the writer's stats file is old too.
func TestSpoolStatus_Instances_StaleReceiverAndWriter(t *testing.T) {
	dir, ids := instanceSpoolDir(t, "a", "b")
	now := time.Now()
	old := now.Add(-5 * time.Minute)
	status := filepath.Join(dir, "b", "appender-status.json")
	if data, err := os.ReadFile(status); err == nil {
		var m map[string]any
		json.Unmarshal(data, &m)
		m["updated_at"] = old.UTC().Format(time.RFC3339Nano)
		b, _ := json.Marshal(m)
		os.WriteFile(status, b, 0o600)
	}
	wr := filepath.Join(t.TempDir(), "wr.json")
	writerSpoolStats(t, wr, old, map[spool.Identity][2]int64{ids["a"]: {1, 0}})
	code, out, errs := runSpoolCmd(t, spoolStatus, "--dir", dir, "--writer-stats", wr)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	for _, want := range []string{"the writer is NOT RUNNING", "b: not in the writer's stats"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "b ") && !strings.Contains(line, "NOT RUNNING") && !strings.Contains(line, "not running") {
			t.Errorf("b's receiver is not said to be down: %q", line)
		}
	}
}

// instanceConfig writes a configuration whose spoolDir is dir and whose
// stats files are in a temp folder.
func instanceConfig(t *testing.T, spoolDir string) (config, rx, wr string) {
	t.Helper()
	d := t.TempDir()
	rx, wr, config = filepath.Join(d, "rx.json"), filepath.Join(d, "wr.json"), filepath.Join(d, "config.json")
	body, _ := json.Marshal(map[string]any{"dbPath": filepath.Join(d, "meshcore.db"), "spoolDir": spoolDir,
		"receiver": map[string]any{"statsFile": rx}, "writer": map[string]any{"statsFile": wr}})
	if err := os.WriteFile(config, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return config, rx, wr
}

func TestStatus_Instances_Cases(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name      string
		instances []string
		junk      bool                 // a folder in spoolDir that is not a spool
		rx        map[string]time.Time // instance → its stats file's time (absent: no file)
		figures   map[string][2]int64  // instance → the writer's applied and copies
		exit      int
		want      []string
		lines     int
	}{
		{"one instance", []string{"a"}, false, map[string]time.Time{"a": now}, map[string][2]int64{"a": {10, 0}}, 0,
			[]string{"receiver a: ok: 1/1 sources connected", "writer: ok", "  spool a (", "10 records applied, 0 recognised as another receiver's copies"}, 3},
		{"two instances", []string{"a", "b"}, false, map[string]time.Time{"a": now, "b": now}, map[string][2]int64{"a": {10, 2}, "b": {5, 9}}, 0,
			[]string{"receiver a: ok", "receiver b: ok", "  spool b (", "5 records applied, 9 recognised as another receiver's copies"}, 5},
		{"folder not a spool", []string{"a"}, true, map[string]time.Time{"a": now}, map[string][2]int64{"a": {10, 0}}, 0,
			[]string{"receiver a: ok", "junk: not a spool (no identity file): the writer does not drain it"}, 4},
		{"stale instance", []string{"a", "b"}, false, map[string]time.Time{"a": now, "b": now.Add(-time.Hour)}, map[string][2]int64{"a": {10, 0}}, 1,
			[]string{"receiver a: ok", "receiver b: DOWN: its stats file was last written 1h0m0s ago", "spool b (", "not in the writer's stats"}, 5},
		{"instance never started", []string{"a", "b"}, false, map[string]time.Time{"a": now}, nil, 1,
			[]string{"receiver b: DOWN: no stats file at ", "rx-b.json"}, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, ids := instanceSpoolDir(t, c.instances...)
			if c.junk {
				os.MkdirAll(filepath.Join(dir, "junk"), 0o700)
			}
			config, rx, wr := instanceConfig(t, dir)
			for name, at := range c.rx {
				writeStatsJSON(t, strings.TrimSuffix(rx, ".json")+"-"+name+".json", rxStats(at, well))
			}
			figs := map[spool.Identity][2]int64{}
			for name, f := range c.figures {
				figs[ids[name]] = f
			}
			writerSpoolStats(t, wr, now, figs)
			var out, errOut bytes.Buffer
			exit := statusCommand([]string{"--config", config}, &out, &errOut, now)
			if exit != c.exit {
				t.Errorf("exit %d, want %d:\n%s%s", exit, c.exit, out.String(), errOut.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if n := strings.Count(out.String(), "\n"); n != c.lines {
				t.Errorf("%d lines, want %d:\n%s", n, c.lines, out.String())
			}
			if strings.Contains(out.String(), "receiver: ") {
				t.Errorf("a line for a receiver without --instance, which has no spool here:\n%s", out.String())
			}
		})
	}
}
