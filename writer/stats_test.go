package writer

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/stats"
	"github.com/prometheus/client_golang/prometheus"
)

// TestWriter_StatsFile_CoreScopeContract drains the corpus and checks the
// stats file CoreScope's server reads (docs/reference/stats-contract.md):
// the counters, walCommits, procIO, writer_perf, the receiver's
// source_statuses and source_liveness merged in with the writer's
// lastMessageUnix, the additions, and the same figures as metrics.
func TestWriter_StatsFile_CoreScopeContract(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	for i := range recs {
		recs[i].Source = "bay-area"
	}
	rx := shared.ReceiverSnapshot{
		SampledAt: time.Now().UTC().Format(time.RFC3339Nano), PID: 4242,
		SourceStatuses: []shared.SourceStatus{{Name: "bay-area", Broker: "mqtt://user:****@broker:1883", Connected: true, PacketsTotal: 531}},
		SourceLiveness: map[string]shared.SourceLiveness{"bay-area": {LastReceiptUnix: time.Now().Unix()}},
	}
	if err := shared.WriteJSONAtomic(cfg.Receiver.StatsFile, rx); err != nil {
		t.Fatal(err)
	}
	// A running receiver rewrites its file: the writer takes one sampled
	// more than 5 s ago for a receiver that is gone, and on a loaded
	// machine the drain below can take longer than that.
	stopRx := make(chan struct{})
	rxDone := make(chan struct{})
	go func(rx shared.ReceiverSnapshot) {
		defer close(rxDone)
		for {
			select {
			case <-stopRx:
				return
			case <-time.After(500 * time.Millisecond):
			}
			rx.SampledAt = time.Now().UTC().Format(time.RFC3339Nano)
			shared.WriteJSONAtomic(cfg.Receiver.StatsFile, rx)
		}
	}(rx)
	stopReceiver := sync.OnceFunc(func() { close(stopRx); <-rxDone })
	defer stopReceiver()
	reg := prometheus.NewRegistry()
	w, err := New(spoolOf(t, recs), Options{Config: cfg, Registry: reg, StatsInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// A stats file sampled after the last commit, with the receiver's
	// part in it.
	var raw []byte
	testkit.WaitFor(t, 2*time.Minute, "a stats file with every message and the receiver's sources", func() bool {
		var err error
		raw, err = os.ReadFile(cfg.Writer.StatsFile)
		var sf stats.File
		return err == nil && json.Unmarshal(raw, &sf) == nil && sf.Meshingest.Messages == int64(len(recs)) && sf.Meshingest.CaughtUp && len(sf.SourceStatuses) > 0
	})
	fi, _ := os.Stat(cfg.Writer.StatsFile)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("stats file mode %v, want 0600", fi.Mode().Perm())
	}

	var f map[string]any
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"sampledAt", "tx_inserted", "obs_inserted", "tx_dupes", "node_upserts", "observer_upserts",
		"write_errors", "sig_drops", "walCommits", "groupCommitFlushes", "backfillUpdates", "procIO", "writer_perf",
		"source_liveness", "source_statuses", "meshingest"} {
		if _, ok := f[key]; !ok {
			t.Errorf("stats file lacks %q", key)
		}
	}
	sampled, err := time.Parse(time.RFC3339Nano, f["sampledAt"].(string))
	if err != nil || time.Since(sampled) > 5*time.Second {
		t.Errorf("sampledAt %v is not a fresh RFC 3339 time (%v)", f["sampledAt"], err)
	}
	var sf stats.File
	json.Unmarshal(raw, &sf)
	// obs_inserted counts observation writes, as CoreScope's counter does:
	// the repeated report (observations 85 and 294) filled the same row.
	if sf.TxInserted != 498 || sf.ObsInserted != 499 || sf.SigDrops != 0 || sf.WALCommits < 1 {
		t.Errorf("counters: tx %d obs %d sig %d commits %d", sf.TxInserted, sf.ObsInserted, sf.SigDrops, sf.WALCommits)
	}
	if sf.TxDupes != 1 {
		t.Errorf("tx_dupes %d, want 1 (observations 85 and 294)", sf.TxDupes)
	}
	if p, ok := sf.WriterPerf["ingest"]; !ok || p.Count < 1 || p.HoldP50 <= 0 {
		t.Errorf("writer_perf.ingest = %+v", sf.WriterPerf["ingest"])
	}
	if len(sf.SourceStatuses) != 1 || sf.SourceStatuses[0].Name != "bay-area" || !sf.SourceStatuses[0].Connected {
		t.Errorf("source_statuses not copied from the receiver: %+v", sf.SourceStatuses)
	}
	if l := sf.SourceLiveness["bay-area"]; l.LastReceiptUnix == 0 || l.LastMessageUnix == 0 {
		t.Errorf("source_liveness %+v: want the receiver's receipt time and the writer's message time", l)
	}
	ex := sf.Meshingest
	if ex.Messages != int64(len(recs)) || !ex.CaughtUp || ex.Database.State != "ok" || ex.Drops["invalid_frame:unsupported_version"] != 1 {
		t.Errorf("additions: %+v", ex)
	}
	if ex.LagSeconds < 3600 {
		t.Errorf("lag_seconds %.0f: the corpus was received in March, the lag is months", ex.LagSeconds)
	}

	if got := gatheredValue(t, reg, "meshingest_writer_observations_written_total"); got != 499 {
		t.Errorf("meshingest_writer_observations_written_total = %v, want 499", got)
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "meshingest_writer_drops_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "invalid_frame:unsupported_version" && m.GetCounter().GetValue() == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Error("no meshingest_writer_drops_total{reason=\"invalid_frame:unsupported_version\"} 1")
	}

	// A stale receiver file is not merged: a dead receiver's sources must
	// not look connected. (The writer samples every 100 ms: within the
	// deadline it must have written a file without them.)
	stopReceiver()
	rx.SampledAt = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	shared.WriteJSONAtomic(cfg.Receiver.StatsFile, rx)
	testkit.WaitFor(t, time.Minute, "a stats file without the stale receiver's sources", func() bool {
		raw, _ = os.ReadFile(cfg.Writer.StatsFile)
		sf = stats.File{}
		return json.Unmarshal(raw, &sf) == nil && len(sf.SourceStatuses) == 0 && sf.Meshingest.ReceiverStats != ""
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// gatheredValue is the value of the first sample of a metric.
func gatheredValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestWriter_StatsFile_WrittenOnStop: the counters of the last second are
// published when the writer stops.
func TestWriter_StatsFile_WrittenOnStop(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	w, err := New(spoolOf(t, recs), Options{Config: cfg, StatsInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for w.Stats().Messages.Load() < int64(len(recs)) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(cfg.Writer.StatsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f stats.File
	json.Unmarshal(raw, &f)
	if f.Meshingest.Messages != int64(len(recs)) || f.TxInserted != 498 {
		t.Errorf("last stats file: %d messages, %d transmissions; want %d and 498", f.Meshingest.Messages, f.TxInserted, len(recs))
	}
}
