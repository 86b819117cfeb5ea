package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/shared"
)

// realBinary is an executable that exists, as systemd-analyze verify
// insists: the running test binary.
func realBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func render(t *testing.T, p Params) map[string]File {
	t.Helper()
	files, err := Render(p)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	byName := map[string]File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	return byName
}

// directives returns the values of key in the unit, in order.
func directives(unit []byte, key string) []string {
	var vals []string
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
			vals = append(vals, v)
		}
	}
	return vals
}

func TestRender_Units_SystemdAnalyzeVerifyIsClean(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed; run: apt-get install systemd (.ci/run does it)")
	}
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte("{}"), 0o600)
	p := Params{Binary: realBinary(t), Config: cfg}
	p.FromConfig(&shared.Config{DBPath: "/srv/corescope/meshcore.db", SpoolDir: "/srv/spool"})
	files := render(t, p)
	dir := t.TempDir()
	if err := WriteFiles(dir, []File{files[ReceiverUnit], files[WriterUnit], files[SysusersFile]}); err != nil {
		t.Fatal(err)
	}
	for _, unit := range []string{ReceiverUnit, WriterUnit} {
		cmd := exec.Command(analyze, "verify", filepath.Join(dir, unit))
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
		out, err := cmd.CombinedOutput()
		// systemd-analyze exits 0 on unknown keys and only prints a
		// warning: any output at all is a failure.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
}

func TestRender_Units_CarryTheOperatingContract(t *testing.T) {
	files := render(t, Params{Binary: "/usr/local/bin/meshingest", Config: "/etc/meshingest/config.json"})
	want := map[string]string{
		"Type":                    "notify",
		"Restart":                 "on-failure",
		"User":                    DefaultUser,
		"StateDirectory":          "meshingest",
		"WorkingDirectory":        StateDir,
		"ProtectSystem":           "strict",
		"NoNewPrivileges":         "yes",
		"UMask":                   "0077",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"CapabilityBoundingSet":   "",
	}
	for _, name := range []string{ReceiverUnit, WriterUnit} {
		unit := files[name].Data
		for k, v := range want {
			if got := directives(unit, k); !slices.Contains(got, v) {
				t.Errorf("%s: %s = %q, want %q", name, k, got, v)
			}
		}
		if got := directives(unit, "WatchdogSec"); len(got) != 1 || got[0] == "" || got[0] == "0" {
			t.Errorf("%s: WatchdogSec = %q, want a watchdog", name, got)
		}
		if got := directives(unit, "DynamicUser"); len(got) != 0 {
			t.Errorf("%s: DynamicUser = %q; the two units share the spool and must share one static user", name, got)
		}
	}
	if got := directives(files[WriterUnit].Data, "RestartPreventExitStatus"); len(got) != 1 || got[0] != "2 3" {
		t.Errorf("writer RestartPreventExitStatus = %q, want \"2 3\": a bad database or a second writer must not restart for ever", got)
	}
	if got := directives(files[ReceiverUnit].Data, "ExecStart"); len(got) != 1 || got[0] != "/usr/local/bin/meshingest receive --config /etc/meshingest/config.json" {
		t.Errorf("receiver ExecStart = %q", got)
	}
	if got := directives(files[WriterUnit].Data, "ExecStart"); len(got) != 1 || got[0] != "/usr/local/bin/meshingest write --config /etc/meshingest/config.json" {
		t.Errorf("writer ExecStart = %q", got)
	}
	// The writer starts with and after the receiver but is never bound to
	// it: a stopped receiver must not stop the writer from draining.
	w := files[WriterUnit].Data
	if !slices.Contains(directives(w, "After"), ReceiverUnit) || !slices.Contains(directives(w, "Wants"), ReceiverUnit) {
		t.Errorf("writer: After=%q Wants=%q, want both to name %s", directives(w, "After"), directives(w, "Wants"), ReceiverUnit)
	}
	for _, k := range []string{"Requires", "BindsTo", "PartOf", "Requisite"} {
		if got := directives(w, k); len(got) != 0 {
			t.Errorf("writer: %s=%q ties it to the receiver", k, got)
		}
	}
	if got := string(files[SysusersFile].Data); !strings.Contains(got, "u "+DefaultUser+" ") {
		t.Errorf("sysusers entry %q does not create user %s", got, DefaultUser)
	}
}

func TestRender_ReadWritePathsAndUser(t *testing.T) {
	files := render(t, Params{Binary: "/opt/mi/meshingest", Config: "/etc/mi.json", User: "corescope",
		ReceiverPaths: []string{"/srv/spool"}, WriterPaths: []string{"/srv/db", "/srv/spool"}})
	if got := directives(files[ReceiverUnit].Data, "ReadWritePaths"); !slices.Equal(got, []string{"/srv/spool"}) {
		t.Errorf("receiver ReadWritePaths = %q", got)
	}
	if got := directives(files[WriterUnit].Data, "ReadWritePaths"); !slices.Equal(got, []string{"/srv/db", "/srv/spool"}) {
		t.Errorf("writer ReadWritePaths = %q", got)
	}
	if got := directives(files[WriterUnit].Data, "User"); !slices.Equal(got, []string{"corescope"}) {
		t.Errorf("writer User = %q", got)
	}
}

// The default configuration: both folders are below the state directory,
// so there is no ReadWritePaths=, but the units still require their
// mounts (a disk mounted at /var/lib/meshingest/data is the usual layout
// on a Pi with its data on USB storage).
func TestParams_FromConfig_DefaultFolders(t *testing.T) {
	p := Params{Binary: "/usr/bin/meshingest", Config: DefaultConfig}
	p.FromConfig(nil)
	if len(p.ReceiverPaths) != 0 || len(p.WriterPaths) != 0 {
		t.Errorf("ReadWritePaths: receiver %q writer %q, want none", p.ReceiverPaths, p.WriterPaths)
	}
	files := render(t, p)
	if got := directives(files[ReceiverUnit].Data, "RequiresMountsFor"); !slices.Equal(got, []string{StateDir + "/data/spool"}) {
		t.Errorf("receiver RequiresMountsFor = %q", got)
	}
	if got := directives(files[WriterUnit].Data, "RequiresMountsFor"); !slices.Equal(got, []string{StateDir + "/data", StateDir + "/data/spool"}) {
		t.Errorf("writer RequiresMountsFor = %q", got)
	}
	// The same as a configuration that says nothing, loaded the usual way.
	t.Setenv("DB_PATH", "")
	t.Setenv("MESHINGEST_SPOOL_DIR", "")
	cfg, err := shared.LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	var q Params
	q.FromConfig(cfg)
	if !slices.Equal(q.ReceiverMounts, p.ReceiverMounts) || !slices.Equal(q.WriterMounts, p.WriterMounts) {
		t.Errorf("FromConfig(nil) mounts %q %q, LoadConfig(\"\") gives %q %q", p.ReceiverMounts, p.WriterMounts, q.ReceiverMounts, q.WriterMounts)
	}
}

func TestParams_FromConfig_FoldersElsewhere(t *testing.T) {
	var p Params
	cfg := &shared.Config{DBPath: "/var/lib/corescope/meshcore.db", SpoolDir: "/mnt/usb/spool"}
	cfg.Receiver.StatsFile = "/mnt/usb/spool/receiver-stats.json"
	p.FromConfig(cfg)
	if !slices.Equal(p.ReceiverMounts, []string{"/mnt/usb/spool"}) {
		t.Errorf("receiver mounts %q", p.ReceiverMounts)
	}
	if !slices.Equal(p.WriterMounts, []string{"/var/lib/corescope", "/mnt/usb/spool"}) {
		t.Errorf("writer mounts %q", p.WriterMounts)
	}
	if !slices.Equal(p.WriterPaths, []string{"/var/lib/corescope", "/mnt/usb/spool"}) {
		t.Errorf("writer ReadWritePaths %q", p.WriterPaths)
	}
	// A mount path systemd would misread is refused like any other path.
	p.WriterMounts = append(p.WriterMounts, "/mnt/my disk")
	p.Binary, p.Config = "/usr/bin/meshingest", DefaultConfig
	if _, err := Render(p); !errors.Is(err, ErrParams) {
		t.Errorf("Render with a mount path holding a space = %v, want ErrParams", err)
	}
}

// Both units name one RuntimeDirectory=, so each must preserve it: by
// default systemd removes a unit's runtime directory when that unit stops,
// which would pull the receiver's stats file from under a running writer
// (and the folder from under a running receiver when the writer stops).
func TestRender_Units_ShareOnePreservedRuntimeDirectory(t *testing.T) {
	files := render(t, Params{Binary: "/usr/bin/meshingest", Config: DefaultConfig})
	for _, name := range []string{ReceiverUnit, WriterUnit} {
		unit := files[name].Data
		if got := directives(unit, "RuntimeDirectory"); !slices.Equal(got, []string{"meshingest"}) {
			t.Errorf("%s: RuntimeDirectory = %q, want meshingest", name, got)
		}
		if got := directives(unit, "RuntimeDirectoryPreserve"); !slices.Equal(got, []string{"yes"}) {
			t.Errorf("%s: RuntimeDirectoryPreserve = %q, want yes (the folder is shared)", name, got)
		}
	}
}

func TestRender_RefusesPathsSystemdWouldMisread(t *testing.T) {
	for _, p := range []Params{
		{Binary: "meshingest", Config: "/etc/c.json"},
		{Binary: "/usr/bin/meshingest", Config: "config.json"},
		{Binary: "/opt/my tools/meshingest", Config: "/etc/c.json"},
		{Binary: "/usr/bin/meshingest", Config: "/etc/100%.json"},
		{Binary: "/usr/bin/meshingest", Config: "/etc/c.json", User: "Root Admin"},
	} {
		if _, err := Render(p); !errors.Is(err, ErrParams) {
			t.Errorf("Render(%+v) = %v, want ErrParams", p, err)
		}
	}
}

func TestPathsFromConfig_OnlyFoldersOutsideTheStateDirectory(t *testing.T) {
	cfg := &shared.Config{DBPath: "data/meshcore.db", SpoolDir: "data/spool"}
	cfg.Receiver.StatsFile = "data/spool/receiver-stats.json"
	if r, w := PathsFromConfig(cfg); len(r) != 0 || len(w) != 0 {
		t.Errorf("relative paths: receiver %q writer %q, want none (they are below %s)", r, w, StateDir)
	}
	cfg = &shared.Config{DBPath: "/var/lib/corescope/meshcore.db", SpoolDir: "/srv/spool"}
	cfg.Receiver.StatsFile = "/run/mi/receiver.json"
	r, w := PathsFromConfig(cfg)
	if !slices.Equal(r, []string{"/srv/spool", "/run/mi"}) {
		t.Errorf("receiver paths = %q", r)
	}
	if !slices.Equal(w, []string{"/var/lib/corescope", "/srv/spool"}) {
		t.Errorf("writer paths = %q", w)
	}
	// A spool below the database's folder is covered by it.
	cfg = &shared.Config{DBPath: "/srv/cs/meshcore.db", SpoolDir: "/srv/cs/spool"}
	cfg.Receiver.StatsFile = "/srv/cs/spool/receiver-stats.json"
	r, w = PathsFromConfig(cfg)
	if !slices.Equal(r, []string{"/srv/cs/spool"}) || !slices.Equal(w, []string{"/srv/cs"}) {
		t.Errorf("nested: receiver %q writer %q, want [/srv/cs/spool] and [/srv/cs]", r, w)
	}
}

// Install into a scratch root with the real tools: systemd-sysusers
// creates the user in ROOT/etc/passwd and systemctl --root enables the
// units, as on a machine being prepared.
func TestInstall_IntoRoot_CreatesUserAndEnablesUnits(t *testing.T) {
	for _, tool := range []string{"systemd-sysusers", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; run: apt-get install systemd", tool)
		}
	}
	root := t.TempDir()
	p := Params{Binary: DefaultBinary, Config: DefaultConfig}
	os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755)
	os.WriteFile(filepath.Join(root, DefaultBinary), []byte("#!/bin/sh\n"), 0o755)
	os.MkdirAll(filepath.Join(root, "etc/meshingest"), 0o755)
	os.WriteFile(filepath.Join(root, DefaultConfig), []byte("{}"), 0o600)
	files := render(t, p)
	var out bytes.Buffer
	list := []File{files[ReceiverUnit], files[WriterUnit], files[SysusersFile]}
	if err := Install(list, p, InstallOptions{Root: root, Enable: true, Out: &out}); err != nil {
		t.Fatalf("Install: %v\n%s", err, out.String())
	}
	for _, f := range list {
		got, err := os.ReadFile(filepath.Join(root, f.Dir, f.Name))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("%s/%s not installed as rendered: %v", f.Dir, f.Name, err)
		}
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), DefaultUser+":") {
		t.Errorf("user %s not created in %s/etc/passwd:\n%s", DefaultUser, root, passwd)
	}
	for _, unit := range []string{ReceiverUnit, WriterUnit} {
		link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants", unit)
		if _, err := os.Lstat(link); err != nil {
			t.Errorf("%s not enabled: %v", unit, err)
		}
	}
	// The config is 0600: the operator is told how to let the services read it.
	if !strings.Contains(out.String(), "chmod 0640") {
		t.Errorf("no warning about the owner-only configuration in:\n%s", out.String())
	}
}

func TestInstall_MissingBinaryOrConfig_SaysWhatToDo(t *testing.T) {
	root := t.TempDir()
	p := Params{Binary: DefaultBinary, Config: DefaultConfig}
	files := render(t, p)
	err := Install(nil, p, InstallOptions{Root: root})
	if err == nil || !strings.Contains(err.Error(), "install -m 0755") {
		t.Fatalf("Install without a binary = %v, want a hint to copy it", err)
	}
	os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755)
	os.WriteFile(filepath.Join(root, DefaultBinary), []byte("#!/bin/sh\n"), 0o755)
	err = Install([]File{files[ReceiverUnit], files[WriterUnit], files[SysusersFile]}, p, InstallOptions{Root: root})
	if err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("Install without a configuration = %v, want a hint", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system", ReceiverUnit)); err == nil {
		t.Fatal("units were written although the checks failed")
	}
}

func TestRender_ReceiverTemplate_RunsAnInstance(t *testing.T) {
	files := render(t, Params{Binary: "/usr/local/bin/meshingest", Config: "/etc/meshingest/config.json"})
	tmpl, ok := files[ReceiverTemplateUnit]
	if !ok {
		t.Fatalf("Render made no %s", ReceiverTemplateUnit)
	}
	if got := directives(tmpl.Data, "ExecStart"); len(got) != 1 || got[0] != "/usr/local/bin/meshingest receive --config /etc/meshingest/config.json --instance %i" {
		t.Errorf("template ExecStart = %q, want the receiver with --instance %%i", got)
	}
	// Everything else is the single receiver's: the same hardening, user,
	// watchdog and folders.
	strip := func(b []byte) []string {
		var out []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "ExecStart=") || strings.HasPrefix(line, "Description=") {
				continue
			}
			out = append(out, line)
		}
		return out
	}
	if a, b := strip(files[ReceiverUnit].Data), strip(tmpl.Data); !slices.Equal(a, b) {
		t.Errorf("the template unit differs from the receiver's beyond ExecStart and Description:\n%s\n---\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed; run: apt-get install systemd (.ci/run does it)")
	}
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte("{}"), 0o600)
	p := Params{Binary: realBinary(t), Config: cfg}
	p.FromConfig(&shared.Config{DBPath: "/srv/corescope/meshcore.db", SpoolDir: "/srv/spool"})
	files = render(t, p)
	dir := t.TempDir()
	// verify needs an instance: the template under the name of one.
	inst := files[ReceiverTemplateUnit]
	inst.Name = "meshingest-receiver@a.service"
	if err := WriteFiles(dir, []File{inst, files[SysusersFile]}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", filepath.Join(dir, inst.Name))
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", inst.Name, err, out)
	}
}
