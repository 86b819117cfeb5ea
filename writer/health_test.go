package writer

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// Records that wait longer than NotReadyAfter while the database refuses
// writes make the writer not ready, with the kind and the hint in one
// line; it stays healthy (its loop goes round), and is ready again once
// the database takes the batch.
func TestWriter_Health_RefusedPastThreshold_NotReady(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	d, _ := openMigrated(t, cfg.DBPath)
	d.Close()
	lock, err := sql.Open("sqlite", "file:"+cfg.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	lc, err := lock.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	recs := writertest.CorpusRecords(t)
	w, err := New(spoolOf(t, recs), Options{Config: cfg, NotReadyAfter: 300 * time.Millisecond, DB: dbfile.Options{BusyTimeoutMs: 50}})
	if err != nil {
		t.Fatal(err)
	}
	h := w.Health()
	if r := h.Ready(); !strings.HasPrefix(r, "starting") {
		t.Fatalf("ready before Run: %q", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var reason string
	testkit.WaitFor(t, 30*time.Second, "not ready", func() bool { reason = h.Ready(); return strings.HasPrefix(reason, "records have waited") })
	if !strings.Contains(reason, "(busy: ") || !strings.Contains(reason, "write lock") || strings.Contains(reason, "\n") {
		t.Fatalf("reason %q, want one line with the kind and the hint", reason)
	}
	if u := h.Healthy(); u != "" {
		t.Fatalf("unhealthy while retrying: %q", u)
	}
	lc.ExecContext(context.Background(), "ROLLBACK")
	testkit.WaitFor(t, 30*time.Second, "ready again", func() bool { return h.Ready() == "" && w.Stats().Messages.Load() == int64(len(recs)) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Reload puts new channel keys in force from the next batch: messages of
// a channel added by a reload are decrypted from then on, and the log
// names the channel, never a key.
func TestWriter_Reload_ChannelKeysFromNextBatch(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	cfg.HashChannels = nil
	recs := writertest.CorpusRecords(t)
	half := len(recs) / 2
	dir := t.TempDir() + "/spool"
	writertest.AppendToSpool(t, dir, recs[:half], spool.Options{})
	var logs bytes.Buffer // read once the writer has stopped
	reg := prometheus.NewRegistry()
	w, err := New(spoolOf2(t, dir), Options{Config: cfg, Log: zerolog.New(zerolog.SyncWriter(&logs)), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	testkit.WaitFor(t, time.Minute, "the first half", func() bool { return w.Stats().Messages.Load() == int64(half) && w.Stats().CaughtUp.Load() })

	next := *cfg
	next.HashChannels = []string{"#test", "#wardriving", "#bot", "#chat"}
	next.ChannelKeys = map[string]string{"Private": "00112233445566778899aabbccddeeff"}
	if err := w.Reload(&next); err != nil {
		t.Fatal(err)
	}
	writertest.AppendToSpool(t, dir, recs[half:], spool.Options{})
	testkit.WaitFor(t, time.Minute, "all records", func() bool { return w.Stats().Messages.Load() == int64(len(recs)) && w.Stats().CaughtUp.Load() })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db := writertest.OpenRaw(t, cfg.DBPath)
	if n := writertest.Count(t, db, "SELECT COUNT(*) FROM transmissions WHERE channel_hash IN ('#test', '#wardriving', '#bot', '#chat')"); n == 0 {
		t.Fatal("no message of a reloaded channel was decrypted")
	}
	out := logs.String()
	if !strings.Contains(out, `"hashChannels_added":["#bot","#chat","#test","#wardriving"]`) || !strings.Contains(out, `"channelKeys_added":["Private"]`) {
		t.Fatalf("the reload line does not name what changed:\n%s", out)
	}
	if strings.Contains(out, "00112233445566778899aabbccddeeff") {
		t.Fatal("the log shows a channel key")
	}
}

// A reload whose channelKeysPath cannot be read changes nothing.
func TestWriter_Reload_BadKeysFile_Refused(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	w, err := New(spoolOf(t, nil), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.ChannelKeysPath = "/nonexistent/keys.json"
	if err := w.Reload(&next); err == nil || !strings.Contains(err.Error(), "/nonexistent/keys.json") {
		t.Fatalf("Reload = %v, want the unreadable file named", err)
	}
	if len(w.reloads) != 0 {
		t.Fatal("a refused reload was queued")
	}
}
