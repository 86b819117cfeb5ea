package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/spool"
)

func runSpoolCmd(t *testing.T, run func([]string, io.Writer, io.Writer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeDemo writes the embedded real capture to a file.
func writeDemo(t *testing.T) (string, []capture.Message) {
	t.Helper()
	var buf []byte
	var msgs []capture.Message
	r := capture.Demo()
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		buf = capture.AppendLine(buf, m)
	}
	path := filepath.Join(t.TempDir(), "demo.jsonl")
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, msgs
}

func TestSpoolCommands_ImportStatusExportVerify(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	demo, msgs := writeDemo(t)
	if code, out, errs := runSpoolCmd(t, spoolImport, "--dir", dir, demo); code != 0 || !strings.Contains(out, "imported 531 records") {
		t.Fatalf("import: %d %s %s", code, out, errs)
	}

	code, out, errs := runSpoolCmd(t, spoolStatus, "--dir", dir, "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"segments", "records", "bytes", "oldest_received_at", "newest_received_at"} {
		if _, ok := st[k]; !ok {
			t.Fatalf("status --json has no %q: %s", k, out)
		}
	}
	if st["records"].(float64) != 531 || st["oldest_received_at"] != "2026-03-17T21:27:59.015Z" || st["newest_received_at"] != "2026-03-29T17:35:00Z" {
		t.Fatalf("status: %s", out)
	}

	code, out, _ = runSpoolCmd(t, spoolExport, "--dir", dir)
	if code != 0 {
		t.Fatalf("export exit %d", code)
	}
	rd := capture.NewReader(strings.NewReader(out))
	for i := 0; ; i++ {
		m, err := rd.Next()
		if err == io.EOF {
			if i != len(msgs) {
				t.Fatalf("export has %d lines, want %d", i, len(msgs))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Topic != msgs[i].Topic || !bytes.Equal(m.Payload, msgs[i].Payload) || !m.ReceivedAt.Equal(msgs[i].ReceivedAt) {
			t.Fatalf("line %d exported as %+v, imported %+v", i+1, m, msgs[i])
		}
	}

	if code, out, _ := runSpoolCmd(t, spoolVerify, "--dir", dir); code != 0 || !strings.Contains(out, "531 records checked, 0 damaged") {
		t.Fatalf("verify of a clean spool: %d %s", code, out)
	}
	if code, out, _ := runSpoolCmd(t, spoolPeek, "--dir", dir, "-n", "3", "--json", "--decode"); code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, `"decoded":"status region=SJC observer=kpabap online"`) {
		t.Fatalf("peek: %d %s", code, out)
	}
	if code, out, _ := runSpoolCmd(t, spoolLs, "--dir", dir, "--json"); code != 0 || !strings.Contains(out, `"state":"sealed"`) {
		t.Fatalf("ls: %d %s", code, out)
	}

	// Damage the segment: verify says so with exit 1; peek reports it.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, _ := os.OpenFile(segs[0], os.O_RDWR, 0)
	f.WriteAt([]byte("garbage!"), 20000)
	f.Close()
	if code, out, _ := runSpoolCmd(t, spoolVerify, "--dir", dir); code != 1 || !strings.Contains(out, "DAMAGED") {
		t.Fatalf("verify of a damaged spool: %d %s", code, out)
	}
	if code, _, errs := runSpoolCmd(t, spoolDump, "--dir", dir); code != 1 || !strings.Contains(errs, "damaged segment 1") {
		t.Fatalf("dump of a damaged spool: %d %s", code, errs)
	}
}

func TestSpoolCommands_ImportRefusedWhileReceiverRuns(t *testing.T) {
	dir := t.TempDir()
	a, err := spool.OpenAppender(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	demo, _ := writeDemo(t)
	code, _, errs := runSpoolCmd(t, spoolImport, "--dir", dir, demo)
	if code != 1 || !strings.Contains(errs, "stop the receiver") {
		t.Fatalf("import beside a running appender: %d %s", code, errs)
	}
	// status works meanwhile, and sees the running appender.
	time.Sleep(10 * time.Millisecond)
	code, out, _ := runSpoolCmd(t, spoolStatus, "--dir", dir)
	if code != 0 || !strings.Contains(out, "active segment") {
		t.Fatalf("status beside a running appender: %d %s", code, out)
	}
}

func TestSpoolRates_AppendDrainETA(t *testing.T) {
	t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	prev := spool.Status{At: t0, AppenderRunning: true, AppenderUpdated: t0, AppendedRecords: 1000,
		WriterPosition: &spool.Position{Segment: 1, Seq: 500}, Records: 10_000}
	cur := spool.Status{At: t0.Add(2 * time.Second), AppenderRunning: true, AppenderUpdated: t0.Add(2 * time.Second), AppendedRecords: 1500,
		WriterPosition: &spool.Position{Segment: 1, Seq: 4500}, Records: 6500}
	r := spoolRates(prev, cur, rates{})
	if r.AppendPerSec != 250 || r.DrainPerSec != 2000 || r.ETASeconds != 6500/1750.0 {
		t.Fatalf("rates %+v", r)
	}
	// The appender has not published since: the append rate is kept.
	again := cur
	again.At = cur.At.Add(time.Second)
	if r2 := spoolRates(cur, again, r); r2.AppendPerSec != 250 || r2.DrainPerSec != 0 || r2.ETASeconds != -1 {
		t.Fatalf("rates without a new appender status %+v", r2)
	}
}

func TestSpoolCommands_Identity_StatusLsAdopt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	demo, _ := writeDemo(t)
	if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", dir, demo); code != 0 {
		t.Fatalf("import: %s", errs)
	}
	id, err := spool.ReadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runSpoolCmd(t, spoolStatus, "--dir", dir); code != 0 || !strings.Contains(out, "identity         "+id.ID.String()) {
		t.Fatalf("status: %s", out)
	}
	if code, out, _ := runSpoolCmd(t, spoolStatus, "--dir", dir, "--json"); code != 0 || !strings.Contains(out, `"identity":{"format":1,"identity":"`+id.ID.String()) {
		t.Fatalf("status --json: %s", out)
	}
	if code, out, _ := runSpoolCmd(t, spoolLs, "--dir", dir); code != 0 || !strings.Contains(out, id.ID.Short()) {
		t.Fatalf("ls: %s", out)
	}
	// A copy: the receiver refuses it until the operator says it moved.
	cp := filepath.Join(t.TempDir(), "moved")
	if out, err := exec.Command("cp", "-a", dir, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if code, out, _ := runSpoolCmd(t, spoolIdentity, "--dir", cp); code != 0 || !strings.Contains(out, "A COPY") {
		t.Fatalf("identity of a copy: %d %s", code, out)
	}
	if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", cp, demo); code != 1 || !strings.Contains(errs, "spool identity --adopt") {
		t.Fatalf("import into a copy: %d %s", code, errs)
	}
	if code, out, _ := runSpoolCmd(t, spoolIdentity, "--dir", cp, "--adopt"); code != 0 || strings.Contains(out, "A COPY") || !strings.Contains(out, id.ID.String()) {
		t.Fatalf("identity --adopt: %d %s", code, out)
	}
	if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", cp, demo); code != 0 {
		t.Fatalf("import after adopting: %s", errs)
	}
}
