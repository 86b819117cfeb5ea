package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// flakyLinkSpool spools the real capture as QoS 1 deliveries through a
// flaky link: every seventh message is delivered again by the broker with
// the DUP flag and the same packet id, as after a lost PUBACK.
func flakyLinkSpool(t *testing.T, dir string) []spool.Record {
	t.Helper()
	_, msgs := writeDemo(t)
	a, err := spool.OpenAppender(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []spool.Record
	for i, m := range msgs {
		rec := recordOf(m)
		rec.Source, rec.Broker, rec.QoS, rec.MessageID = "flaky", "mqtt://user:***@broker:1883", 1, uint16(1+i%65535)
		rec.Retained = i%97 == 0
		recs = append(recs, rec)
		if i%7 == 3 {
			dup := rec
			dup.Duplicate = true
			dup.ReceivedAt = rec.ReceivedAt.Add(3 * time.Second)
			recs = append(recs, dup)
		}
	}
	done := make(chan error, len(recs))
	for _, r := range recs {
		if err := a.Append(r, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for range recs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	return recs
}

func readSpool(t *testing.T, dir string) []spool.Record {
	t.Helper()
	r, err := spool.OpenReader(dir, spool.ReaderOptions{Inspect: true})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := r.Cursor(spool.Position{})
	defer c.Close()
	var recs []spool.Record
	for {
		rec, _, err := c.Next()
		if errors.Is(err, io.EOF) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
}

// drainToDB runs a writer on the spool in dir until it has written every
// record, and returns the database's path.
func drainToDB(t *testing.T, dir string, last uint64) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "meshcore.db")
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"dbPath": %q, "spoolDir": %q}`, db, dir)), 0o600)
	cfg, err := shared.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := spool.OpenReader(dir, spool.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := writer.New(writer.NewSpoolSource(r), writer.Options{Config: cfg, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if pos, _ := spool.ReadWriterPosition(dir); pos.Seq >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer did not drain the spool in 2 minutes")
		}
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	return db
}

// dumpTables is every row of the tables a writer fills, sorted, without
// the insert times.
func dumpTables(t *testing.T, path string) map[string][]string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]string{}
	for _, table := range []string{"transmissions", "observations", "observers", "nodes", "observer_metrics", "dropped_packets", "neighbor_edges"} {
		rows, err := db.Query("SELECT * FROM " + table + " ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows.Scan(ptrs...)
			var b strings.Builder
			for i, v := range vals {
				if cols[i] == "created_at" {
					continue // the wall clock of the insert, not data
				}
				if b2, ok := v.([]byte); ok {
					v = string(b2)
				}
				fmt.Fprintf(&b, "%s=%v ", cols[i], v)
			}
			out[table] = append(out[table], b.String())
		}
		rows.Close()
	}
	return out
}

// spool export then spool import dropped the QoS, the DUP flag and the
// packet id, so a broker's redeliveries became new messages (packet_count
// too high). The round trip keeps every field of a record, and draining
// the imported spool gives the tables that draining the original gives.
func TestSpoolCommands_ExportImport_KeepsEveryField(t *testing.T) {
	src := filepath.Join(t.TempDir(), "spool")
	want := flakyLinkSpool(t, src)
	code, out, errs := runSpoolCmd(t, spoolExport, "--dir", src)
	if code != 0 {
		t.Fatalf("export: %d %s", code, errs)
	}
	capture := filepath.Join(t.TempDir(), "export.jsonl")
	os.WriteFile(capture, []byte(out), 0o600)
	dst := filepath.Join(t.TempDir(), "spool")
	if code, out, errs := runSpoolCmd(t, spoolImport, "--dir", dst, capture); code != 0 {
		t.Fatalf("import: %d %s %s", code, out, errs)
	}
	got := readSpool(t, dst)
	if len(got) != len(want) {
		t.Fatalf("imported %d records, exported %d", len(got), len(want))
	}
	for i := range got {
		a, b := got[i], want[i]
		a.Seq, b.Seq = 0, 0
		if !a.ReceivedAt.Equal(b.ReceivedAt) || a.Source != b.Source || a.Broker != b.Broker || a.Topic != b.Topic ||
			a.QoS != b.QoS || a.Retained != b.Retained || a.Duplicate != b.Duplicate || a.MessageID != b.MessageID || string(a.Payload) != string(b.Payload) {
			t.Fatalf("record %d after the round trip:\n %+v\nwant\n %+v", i, a, b)
		}
	}

	orig := dumpTables(t, drainToDB(t, src, readSpool(t, src)[len(want)-1].Seq))
	imported := dumpTables(t, drainToDB(t, dst, got[len(got)-1].Seq))
	for table, rows := range orig {
		if strings.Join(rows, "\n") != strings.Join(imported[table], "\n") {
			t.Errorf("table %s: %d rows from the original spool, %d from the imported one; first difference:\n%s", table, len(rows), len(imported[table]), firstDiff(rows, imported[table]))
		}
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return "  " + a[i] + "\n  " + b[i]
		}
	}
	return "(one is a prefix of the other)"
}
