package writer

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// waitExit waits for cmd and returns its exit status.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration, log string) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the writer did not exit within %s; log:\n%s", timeout, tail(log, 20))
		return -1
	}
}

// A dbPath that names something retrying cannot fix made the writer retry
// for 15 minutes without READY. Now it exits at once with status 2 and the
// hint.
func TestWriter_Process_PermanentDatabaseProblem_ExitsWithHint(t *testing.T) {
	for name, c := range map[string]struct {
		setup func(path string)
		hint  string
	}{
		"folder":         {func(p string) { os.Mkdir(p, 0o700) }, "dbPath names a folder"},
		"not a database": {func(p string) { os.WriteFile(p, []byte("id,name\n1,x\n"), 0o600) }, "not a SQLite database"},
	} {
		t.Run(name, func(t *testing.T) {
			p := newProcessSetup(t, t.TempDir(), nil)
			c.setup(p.DB)
			cmd := p.start(t)
			if code := waitExit(t, cmd, 2*time.Minute, p.LogFile); code != 2 {
				t.Fatalf("exit %d, want 2; log:\n%s", code, tail(p.LogFile, 10))
			}
			if log, _ := os.ReadFile(p.LogFile); !strings.Contains(string(log), c.hint) || strings.Contains(string(log), "writer ready") {
				t.Fatalf("log lacks the hint %q (or says ready):\n%s", c.hint, log)
			}
		})
	}
}

// A database the writer's user may not write is permission_denied, at once
// (run as nobody, since root may write anything).
func TestWriter_Process_PermissionDenied_ExitsWithHint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the writer as another user")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // the test's own temporary folder
	bin := filepath.Join(dir, "meshingest")
	copyFile(t, meshingestBinary(t), bin)
	os.Chmod(bin, 0o755)
	os.MkdirAll(filepath.Join(dir, "w"), 0o755)
	p := newProcessSetup(t, filepath.Join(dir, "w"), nil)
	d, _ := openMigrated(t, p.DB) // owned by root, 0644 at most: nobody cannot write it
	d.Close()
	os.Mkdir(p.Spool, 0o700)
	for _, f := range []string{p.Spool, p.Config, p.Dir} {
		os.Chown(f, 65534, 65534)
	}
	os.Chown(p.DB, 0, 0)
	log, _ := os.Create(p.LogFile)
	cmd := exec.Command(bin, "write", "--config", p.Config)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log.Close()
	if code := waitExit(t, cmd, 2*time.Minute, p.LogFile); code != 2 {
		t.Fatalf("exit %d, want 2; log:\n%s", code, tail(p.LogFile, 10))
	}
	if out, _ := os.ReadFile(p.LogFile); !strings.Contains(string(out), `"kind":"permission_denied"`) || !strings.Contains(string(out), "fix the owner or the mode") {
		t.Fatalf("log lacks the permission kind and hint:\n%s", out)
	}
}

// A new database is created, with a warning naming its full path: after a
// typo in dbPath, CoreScope would read the old one while the writer fills
// the new one.
func TestWriter_Process_NewDatabase_WarnsWithPath(t *testing.T) {
	p := newProcessSetup(t, t.TempDir(), nil)
	cmd := p.start(t)
	p.waitReady(t, 1)
	stopProcess(t, cmd)
	out, _ := os.ReadFile(p.LogFile)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "created a new, empty one") {
			var v map[string]any
			json.Unmarshal([]byte(line), &v)
			if v["level"] != "warn" || v["db"] != p.DB {
				t.Fatalf("line %s: want level warn and db %s", line, p.DB)
			}
			return
		}
	}
	t.Fatalf("no warning about the new database:\n%s", out)
}

// SIGHUP (systemctl reload meshingest-writer) did nothing. Now it reloads
// the channel keys and the log level, logs what changed by name, and names
// the changed settings that need a restart.
func TestWriter_Process_SIGHUP_ReloadsKeysAndLevel(t *testing.T) {
	p := newProcessSetup(t, t.TempDir(), map[string]any{"hashChannels": []string{}, "logLevel": "warn"})
	writertest.AppendToSpool(t, p.Spool, writertest.CorpusRecords(t)[:10], spool.Options{})
	cmd := p.start(t)
	defer stopProcess(t, cmd)
	testkit.WaitFor(t, time.Minute, "the first batch", func() bool { f, ok := p.readStats(t); return ok && f.Meshingest.Messages == 10 })
	newProcessSetup(t, p.Dir, map[string]any{"hashChannels": []string{"#test"}, "logLevel": "info", "writer": map[string]any{"batchMaxRecords": 100}})
	cmd.Process.Signal(syscall.SIGHUP)
	defer func() {
		if t.Failed() {
			t.Log(tail(p.LogFile, 20))
		}
	}()
	testkit.WaitFor(t, 30*time.Second, "the reload lines", func() bool {
		out, _ := os.ReadFile(p.LogFile)
		s := string(out)
		return strings.Contains(s, "SIGHUP: log level changed") && strings.Contains(s, `"hashChannels_added":["#test"]`) &&
			strings.Contains(s, `"keys":["writer.batchMaxRecords"]`) && strings.Contains(s, "take effect when the writer is restarted")
	})
	out, _ := os.ReadFile(p.LogFile)
	if strings.Contains(string(out), "writer ready") {
		t.Fatal("an info line was logged at warn, before the reload")
	}
}
