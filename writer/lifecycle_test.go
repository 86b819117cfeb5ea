package writer

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
	"github.com/meshingest/meshingest/writer/schema"
)

// TestWriter_Process_NotifiesSystemd runs the writer as systemd would
// (Type=notify, WatchdogSec): READY=1 once the database is open and
// migrated, WATCHDOG=1 from the drain loop, a STATUS= line, STOPPING=1 and
// exit status 0 on SIGTERM.
func TestWriter_Process_NotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var msgs []string
	readyChecked := make(chan error, 1)
	p := newProcessSetup(t, dir, nil)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			m := string(buf[:n])
			if strings.Contains(m, "READY=1") {
				// At READY the schema must be in place.
				db := writertest.OpenRaw(t, p.DB)
				var names int
				err := db.QueryRow(`SELECT COUNT(*) FROM _migrations`).Scan(&names)
				if err == nil && names != len(schema.MigrationNames) {
					err = errFmt("READY before migration: %d _migrations rows", names)
				}
				db.Close()
				readyChecked <- err
			}
			mu.Lock()
			msgs = append(msgs, m)
			mu.Unlock()
		}
	}()
	writertest.AppendToSpool(t, p.Spool, writertest.CorpusRecords(t), spool.Options{})
	cmd := p.start(t, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=300000")
	select {
	case err := <-readyChecked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no READY=1; log:\n%s", tail(p.LogFile, 20))
	}
	p.waitDrained(t, time.Minute)
	time.Sleep(1200 * time.Millisecond)
	stopProcess(t, cmd)
	time.Sleep(100 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(msgs, "\n")
	if c := strings.Count(all, "WATCHDOG=1"); c < 3 {
		t.Errorf("%d WATCHDOG=1 messages, want several (every 150 ms)", c)
	}
	if !strings.Contains(all, "STATUS=caught up") {
		t.Errorf("no STATUS= line saying the writer caught up; got:\n%s", all)
	}
	if !strings.HasPrefix(msgs[len(msgs)-1], "STOPPING=1") {
		t.Errorf("last message %q, want STOPPING=1", msgs[len(msgs)-1])
	}
}

// TestWriter_Process_SIGTERMWhileDraining: a stop in the middle of a
// backlog finishes the batch in progress and exits 0 promptly; a restart
// finishes the backlog.
func TestWriter_Process_SIGTERMWhileDraining(t *testing.T) {
	recs := faultTraffic(t, 30000)
	p := newProcessSetup(t, t.TempDir(), map[string]any{"writer": map[string]any{"batchMaxRecords": 2000}})
	writertest.AppendToSpool(t, p.Spool, recs, spool.Options{SegmentMaxBytes: 1 << 20})
	cmd := p.start(t)
	for { // the first commit (the advisory position follows every commit)
		if pos, err := spool.ReadWriterPosition(p.Spool); err == nil && pos.Seq > 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopping took %v", d)
	}
	if !strings.Contains(tail(p.LogFile, 5), "writer stopped") {
		t.Errorf("no clean-stop log line:\n%s", tail(p.LogFile, 5))
	}
	stopped := storedPosition(t, p.DB)
	if stopped.Seq == 0 || stopped.Seq >= uint64(len(recs)) {
		t.Fatalf("stored position %v after a stop mid-drain", stopped)
	}
	cmd = p.start(t)
	p.waitDrained(t, 5*time.Minute)
	stopProcess(t, cmd)
	db := writertest.OpenRaw(t, p.DB)
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM observations`); n < int64(len(recs))*9/10 {
		t.Errorf("%d observations after the restart", n)
	}
}

func errFmt(format string, args ...any) error { return fmt.Errorf(format, args...) }
