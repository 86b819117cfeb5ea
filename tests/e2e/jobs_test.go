package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// jobTasks are the writer_perf components of CoreScope's jobs that run
// between batches (writer/jobs; retention is the writer's own).
var jobTasks = []string{"path-index", "prune-requests", "multibyte-capability", "backfill"}

// `meshingest write` runs CoreScope's jobs: writer.New registers none of
// its own, so this fails when the command does not register them. The
// real capture goes through `meshingest run` (its embedded broker, the
// receiver and the writer as children) from `meshingest replay`; then the
// observations carry resolved paths, neighbor_edges holds the graph, and
// the stats file shows every job task. With writer.jobs = false there is none of
// them; the observations are the corpus's either way.
func TestE2E_Write_RunsCoreScopesJobs(t *testing.T) {
	for _, jobs := range []bool{true, false} {
		t.Run(fmt.Sprintf("jobs=%v", jobs), func(t *testing.T) {
			port := testkit.FreePort(t)
			e := newEnv(t, map[string]any{"broker": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", port)}})
			e.setWriterJobs(jobs)
			run := e.start("run", nil, "run", "--config", e.config)
			e.waitSubscribed(30 * time.Second)
			e.replay(fmt.Sprintf("mqtt://127.0.0.1:%d", port), 1, e.writeCorpus())
			e.waitTotals(60 * time.Second)
			var perf []string
			testkit.WaitFor(t, 2*time.Minute, "the writer's retention to run", func() bool {
				s, err := e.readJobStats()
				perf = s.components()
				return err == nil && slices.Contains(perf, "retention")
			})
			// Each task's first step follows retention's at once; give
			// them a generous while on a busy machine.
			for deadline := time.Now().Add(30 * time.Second); jobs && !containsAll(perf, jobTasks) && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
				s, _ := e.readJobStats()
				perf = s.components()
			}
			if code := run.stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
				t.Errorf("run exited %d after SIGTERM, want 0", code)
			}
			for _, task := range jobTasks {
				if ran := slices.Contains(perf, task); ran != jobs {
					t.Errorf("writer.jobs = %v, and the task %s ran: %v (writer_perf: %v)", jobs, task, ran, perf)
				}
			}

			db, err := sql.Open("sqlite", "file:"+e.db+"?mode=ro")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			n := func(q string) int64 {
				var v int64
				if err := db.QueryRow(q).Scan(&v); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				return v
			}
			obs, resolved, edges := n(`SELECT COUNT(*) FROM observations`),
				n(`SELECT COUNT(*) FROM observations WHERE resolved_path IS NOT NULL`), n(`SELECT COUNT(*) FROM neighbor_edges`)
			if obs != want.Observations {
				t.Errorf("%d observations, want the corpus's %d", obs, want.Observations)
			}
			if jobs && (resolved == 0 || edges == 0) {
				t.Errorf("jobs on: %d observations with a resolved_path, %d neighbor_edges rows; want some of each", resolved, edges)
			}
			if !jobs && (resolved != 0 || edges != 0) {
				t.Errorf("jobs off: %d observations with a resolved_path, %d neighbor_edges rows; want none", resolved, edges)
			}
			t.Logf("jobs %v: %d observations, %d with a resolved_path, %d neighbor_edges rows; writer_perf %v", jobs, obs, resolved, edges, perf)
		})
	}
}

// setWriterJobs sets writer.jobs in the environment's configuration.
func (e *env) setWriterJobs(on bool) {
	e.t.Helper()
	var cfg map[string]any
	data, err := os.ReadFile(e.config)
	if err == nil {
		err = json.Unmarshal(data, &cfg)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	cfg["writer"].(map[string]any)["jobs"] = on
	data, _ = json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(e.config, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// jobStats is the part of the writer's stats file this test reads.
type jobStats struct {
	WriterPerf map[string]json.RawMessage `json:"writer_perf"`
}

func (e *env) readJobStats() (jobStats, error) {
	var s jobStats
	data, err := os.ReadFile(e.stats)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(data, &s)
}

// components lists writer_perf's components (ingest and the tasks that
// committed a step), sorted.
func (s jobStats) components() []string {
	var out []string
	for name := range s.WriterPerf {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
