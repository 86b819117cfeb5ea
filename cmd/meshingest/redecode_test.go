package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
)

// corpusDB stores the real capture with the given hashtag channels and
// returns the database path.
func corpusDB(t *testing.T, dir string, channels []string) string {
	t.Helper()
	cfg := &shared.Config{DBPath: filepath.Join(dir, "meshcore.db"), HashChannels: channels}
	spoolDir := filepath.Join(dir, "spool")
	a, err := spool.OpenAppender(spoolDir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := capture.Demo()
	n := 0
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Append(spool.Record{ReceivedAt: m.ReceivedAt, Topic: m.Topic, Payload: m.Payload, Retained: m.Retained}, func(error) {}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	reader, err := spool.OpenReader(spoolDir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := writer.New(writer.NewSpoolSource(reader), writer.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for deadline := time.Now().Add(time.Minute); w.Stats().Messages.Load() < int64(n) || !w.Stats().CaughtUp.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("corpus not written within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return cfg.DBPath
}

func TestRedecode_AddedKey_ProgressAndResult(t *testing.T) {
	dir := t.TempDir()
	dbPath := corpusDB(t, dir, []string{"#test", "#wardriving", "#chat"})
	cfgPath := filepath.Join(dir, "config.json")
	b, _ := json.Marshal(map[string]any{"dbPath": dbPath, "hashChannels": []string{"#test", "#wardriving", "#chat", "#bot"}, "logLevel": "warn"})
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := redecodeCommand([]string{"--config", cfgPath}, &stderr); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	out := stderr.String()
	if !strings.Contains(out, "redecode done: 100.0% (transmission id 498 of 498)") || !strings.Contains(out, "15 rewritten") {
		t.Errorf("progress output:\n%s", out)
	}
	db, err := sql.Open("sqlite", "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var bot int
	db.QueryRow(`SELECT COUNT(*) FROM transmissions WHERE channel_hash = '#bot'`).Scan(&bot)
	if bot != 14 {
		t.Errorf("%d #bot rows after redecode, want 14", bot)
	}

	stderr.Reset()
	if code := redecodeCommand([]string{"--config", cfgPath}, &stderr); code != 0 || !strings.Contains(stderr.String(), "already done") {
		t.Errorf("second run: exit %d\n%s", code, stderr.String())
	}
}

func TestRedecode_BadInvocation_ExitStatus(t *testing.T) {
	var stderr bytes.Buffer
	if code := redecodeCommand([]string{"extra"}, &stderr); code != 2 {
		t.Errorf("unexpected argument: exit %d", code)
	}
	if code := redecodeCommand([]string{"--config", filepath.Join(t.TempDir(), "missing.json")}, &stderr); code != 2 {
		t.Errorf("missing config: exit %d", code)
	}
	// A database the writer never opened.
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(filepath.Join(dir, "meshcore.db"), nil, 0o600)
	b, _ := json.Marshal(map[string]any{"dbPath": filepath.Join(dir, "meshcore.db")})
	os.WriteFile(cfgPath, b, 0o600)
	stderr.Reset()
	if code := redecodeCommand([]string{"--config", cfgPath}, &stderr); code != 1 || !strings.Contains(stderr.String(), "meshingest write") {
		t.Errorf("empty database: exit %d\n%s", code, stderr.String())
	}
}
