package main

import (
	"bytes"
	"flag"
	"os/exec"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/internal/testkit"
)

// A long-running command given its config file without --config must
// refuse, not start with the defaults.
func TestDispatch_StrayArgument_Refused(t *testing.T) {
	for _, cmd := range []string{"receive", "write", "run", "demo", "redecode"} {
		if got := dispatch([]string{cmd, "config.json"}); got != 2 {
			t.Errorf("meshingest %s config.json: exit status %d, want 2", cmd, got)
		}
	}
	if got := dispatch([]string{"systemd", "print", "extra"}); got != 2 {
		t.Errorf("meshingest systemd print extra: exit status %d, want 2", got)
	}
}

func TestParseFlagsOnly_Cases(t *testing.T) {
	for _, c := range []struct {
		args           []string
		status         int
		ok             bool
		stdout, stderr string
	}{
		{nil, 0, true, "", ""},
		{[]string{"--config", "x.json"}, 0, true, "", ""},
		{[]string{"-h"}, 0, false, "Usage", ""}, // asked for: standard output
		{[]string{"--nope"}, 2, false, "", "flag provided but not defined"},
		{[]string{"x.json"}, 2, false, "", `meshingest write: unexpected argument "x.json"`},
	} {
		var out, errOut bytes.Buffer
		fs := flag.NewFlagSet("write", flag.ContinueOnError)
		fs.SetOutput(&errOut)
		fs.String("config", "", "")
		status, ok := parseFlagsOnlyTo(fs, c.args, &out)
		if status != c.status || ok != c.ok || !strings.Contains(out.String(), c.stdout) || !strings.Contains(errOut.String(), c.stderr) ||
			(c.stdout == "" && out.Len() > 0) || (c.stderr == "" && errOut.Len() > 0) {
			t.Errorf("%q: status %d ok %v stdout %q stderr %q; want %d %v, %q, %q", c.args, status, ok, out.String(), errOut.String(), c.status, c.ok, c.stdout, c.stderr)
		}
	}
}

func TestLoadConfig_BadFile_NamesCommandAndFile(t *testing.T) {
	var out bytes.Buffer
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	fs.SetOutput(&out)
	if _, ok := loadConfig(fs, "/nonexistent/config.json"); ok {
		t.Fatal("loaded a missing file")
	}
	if !strings.Contains(out.String(), "meshingest write:") || !strings.Contains(out.String(), "/nonexistent/config.json") {
		t.Errorf("error %q should name the command and the file", out.String())
	}
}

// Every command's -h goes to standard output, as help asked for should.
func TestCommands_Help_OnStandardOutput(t *testing.T) {
	exe := testkit.BinaryPath(t)
	for _, c := range commands() {
		args := []string{c.name, "-h"}
		switch c.name {
		case "systemd":
			args = []string{"systemd", "print", "-h"}
		case "config":
			args = []string{"config", "check", "-h"}
		case "version":
			continue
		}
		var out, errOut bytes.Buffer
		cmd := exec.Command(exe, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil || !strings.Contains(strings.ToLower(out.String()), "usage") || errOut.Len() > 0 {
			t.Errorf("meshingest %s: %v; stdout %d bytes, stderr %q", strings.Join(args, " "), err, out.Len(), errOut.String())
		}
	}
}
