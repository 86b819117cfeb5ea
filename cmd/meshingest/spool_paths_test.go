package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A folder that is not a spool was shown as a healthy, empty spool; now
// every read command refuses it, and a missing one, naming the folder.
func TestSpoolCommands_NotASpool_Refused(t *testing.T) {
	notSpool := t.TempDir()
	os.WriteFile(filepath.Join(notSpool, "photo.jpg"), []byte("x"), 0o600)
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "typo")
	reads := map[string]func([]string, io.Writer, io.Writer) int{
		"status": spoolStatus, "ls": spoolLs, "peek": spoolPeek, "dump": spoolDump, "verify": spoolVerify, "export": spoolExport, "identity": spoolIdentity,
	}
	for name, run := range reads {
		for _, dir := range []string{notSpool, empty, missing} {
			code, out, errs := runSpoolCmd(t, run, "--dir", dir)
			if code == 0 || out != "" || !strings.Contains(errs, dir) {
				t.Errorf("spool %s --dir %s: exit %d stdout %q stderr %q; want a refusal naming the folder", name, dir, code, out, errs)
			}
		}
	}
	code, _, errs := runSpoolCmd(t, spoolStatus, "--dir", notSpool)
	if code != 1 || !strings.Contains(errs, "not a spool folder") {
		t.Errorf("status of a folder that is not a spool: %d %q", code, errs)
	}
	if code, _, _ := runSpoolCmd(t, spoolQuarantine, "ls", "--dir", empty); code == 0 {
		t.Error("quarantine ls accepted an empty folder")
	}
}

// quarantine requeue --dir /typo created a new spool folder there.
func TestSpoolQuarantineRequeue_MissingFolder_NotCreated(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "typo")
	code, _, errs := runSpoolCmd(t, spoolQuarantine, "requeue", "--dir", missing)
	if code == 0 || !strings.Contains(errs, missing) {
		t.Fatalf("requeue into a missing folder: exit %d stderr %q", code, errs)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("requeue created %s", missing)
	}
}

// A positional path was ignored, and the command ran on the configured
// spool instead.
func TestSpoolCommands_PositionalPath_Refused(t *testing.T) {
	dir := t.TempDir()
	for name, run := range map[string]func([]string, io.Writer, io.Writer) int{"status": spoolStatus, "ls": spoolLs, "verify": spoolVerify, "export": spoolExport} {
		code, _, errs := runSpoolCmd(t, run, dir)
		if code != 2 || !strings.Contains(errs, "unexpected argument") || !strings.Contains(errs, "--dir") {
			t.Errorf("spool %s %s: exit %d stderr %q; want 2 and --dir named", name, dir, code, errs)
		}
	}
	if code, _, errs := runSpoolCmd(t, spoolQuarantine, "requeue", "--dir", dir, "/var/lib/meshingest/spool"); code != 2 || !strings.Contains(errs, "item names") {
		t.Errorf("requeue with a path: exit %d %q", code, errs)
	}
}

// --json prints one document; requeue printed one per item.
func TestSpoolCommands_JSON_OneDocument(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	demo, _ := writeDemo(t)
	if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", dir, demo); code != 0 {
		t.Fatalf("import: %s", errs)
	}
	for name, args := range map[string][]string{
		"status": {"--dir", dir, "--json"}, "ls": {"--dir", dir, "--json"}, "verify": {"--dir", dir, "--json"},
		"quarantine ls": {"ls", "--dir", dir, "--json"}, "quarantine requeue": {"requeue", "--dir", dir, "--json"},
	} {
		run := map[string]func([]string, io.Writer, io.Writer) int{"status": spoolStatus, "ls": spoolLs, "verify": spoolVerify,
			"quarantine ls": spoolQuarantine, "quarantine requeue": spoolQuarantine}[name]
		code, out, errs := runSpoolCmd(t, run, args...)
		if code != 0 {
			t.Errorf("%s: exit %d %s", name, code, errs)
			continue
		}
		dec := json.NewDecoder(strings.NewReader(out))
		var v any
		if err := dec.Decode(&v); err != nil || dec.More() {
			t.Errorf("%s --json is not one JSON document (%v):\n%s", name, err, out)
		}
	}
}

// Help asked for goes to standard output.
func TestSpoolCommands_Help_OnStandardOutput(t *testing.T) {
	for _, run := range []func([]string, io.Writer, io.Writer) int{spoolStatus, spoolLs, spoolPeek, spoolVerify, spoolExport, spoolImport} {
		code, out, errs := runSpoolCmd(t, run, "-h")
		if code != 0 || !strings.Contains(out, "usage: meshingest spool") || errs != "" {
			t.Errorf("-h: exit %d stdout %q stderr %q", code, out, errs)
		}
	}
	if code, out, _ := runSpoolCmd(t, spoolQuarantine, "-h"); code != 0 || !strings.Contains(out, "usage:") {
		t.Errorf("quarantine -h: %d %q", code, out)
	}
}

// import may make a new spool where there is none, never in a folder that
// holds other files.
func TestSpoolImport_FolderOfOtherFiles_Refused(t *testing.T) {
	demo, _ := writeDemo(t)
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o600)
	if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", other, demo); code == 0 || !strings.Contains(errs, "not a spool folder") {
		t.Errorf("import into a folder of other files: %d %q", code, errs)
	}
	if code, _, errs := runSpoolCmd(t, spoolImport, "--dir", t.TempDir(), demo); code != 0 || !strings.Contains(errs, "making a new one") {
		t.Errorf("import into an empty folder: %d %q", code, errs)
	}
}
