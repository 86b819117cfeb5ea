package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshingest/meshingest/deploy"
	"github.com/meshingest/meshingest/internal/testkit"
)

func TestDebianVersion_FromGitDescribe(t *testing.T) {
	const rev = "29c2352b15d39f20db3a9ec1beab823456ffde94"
	const date = "2026-12-02T01:12:14Z"
	for _, tc := range []struct {
		describe string
		dirty    bool
		want     string
	}{
		{"v1.2.0-0-g29c2352", false, "1.2.0"},
		{"v1.2.0-3-g29c2352", false, "1.2.0+git3.29c2352"},
		{"v1.3.0-rc1-0-g29c2352", false, "1.3.0~rc1"},
		{"v1.3.0-rc1-2-g29c2352", true, "1.3.0~rc1+git2.29c2352+dirty"},
		{"", false, "0.0.0~git20261202011214.29c2352"},
		{"", true, "0.0.0~git20261202011214.29c2352+dirty"},
	} {
		got := debianVersion(tc.describe, rev, date, tc.dirty)
		if got != tc.want {
			t.Errorf("debianVersion(%q, dirty=%v) = %q, want %q", tc.describe, tc.dirty, got, tc.want)
		}
		s := Stamp{Version: got, Commit: rev, Date: date}
		if err := s.check(); err != nil {
			t.Errorf("%q: %v", got, err)
		}
	}
}

// The versions sort as a Debian operator expects: an untagged snapshot
// before the first release, a release candidate before its release, a
// later commit after its tag. dpkg decides.
func TestDebianVersion_SortsAsDpkgDoes(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg is not installed")
	}
	order := []string{"0.0.0~git20261202011214.29c2352", "1.3.0~rc1", "1.3.0", "1.3.0+git3.29c2352", "1.3.1"}
	for i := 0; i+1 < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i], "lt", order[i+1]).Run(); err != nil {
			t.Errorf("dpkg says %s is not older than %s", order[i], order[i+1])
		}
	}
}

func TestStamp_Check_RefusesWhatDpkgOrTheLinkerMisreads(t *testing.T) {
	for _, s := range []Stamp{
		{Version: "v1.2.0", Commit: "abc", Date: "2026-12-02T01:12:14Z"},
		{Version: "1.2.0-1", Commit: "abc", Date: "2026-12-02T01:12:14Z"},
		{Version: "1.2.0", Commit: "abc def", Date: "2026-12-02T01:12:14Z"},
		{Version: "1.2.0", Commit: "abc", Date: "yesterday"},
		{Version: "", Commit: "abc", Date: "2026-12-02T01:12:14Z"},
	} {
		if err := s.check(); err == nil {
			t.Errorf("check(%+v) = nil, want an error", s)
		}
	}
}

// sh runs a command and returns its standard output; it fails the test
// with the command's output when it fails.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Builds the amd64 package, reads it with dpkg-deb, installs it with dpkg
// into a scratch root (the maintainer scripts run, chrootless, below it),
// runs the installed binary, then purges the package.
func TestBuild_Deb_InstallsIntoAScratchRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and a package")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	if _, err := exec.LookPath("systemd-sysusers"); err != nil {
		t.Fatal("systemd-sysusers is not installed; run: apt-get install systemd (.ci/run does it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg --root needs root to set owners")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// gzip: xz of the binary is most of this test's CPU, and dpkg reads
	// both alike.
	b := Build{Root: root, Out: t.TempDir(), Compression: "gzip"}
	if err := b.Stamp.fill(root); err != nil {
		t.Fatal(err)
	}
	amd64, _ := archByName("amd64")
	// testkit builds the product with the packages' compiler flags, one
	// test process at a time: after it, the package's go build only
	// links.
	testkit.BinaryPath(t)
	deb, err := b.Deb(amd64)
	if err != nil {
		t.Fatal(err)
	}
	if want := "meshingest_" + b.Stamp.Version + "_amd64.deb"; filepath.Base(deb) != want {
		t.Errorf("package file %s, want %s", filepath.Base(deb), want)
	}

	// What dpkg-deb reads in it.
	for field, want := range map[string]string{"Package": "meshingest", "Version": b.Stamp.Version, "Architecture": "amd64"} {
		if got := strings.TrimSpace(sh(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	listing := sh(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "./usr/bin/meshingest",
		"./usr/lib/systemd/system/meshingest-receiver.service",
		"./usr/lib/systemd/system/meshingest-writer.service",
		"./usr/lib/sysusers.d/meshingest.conf",
		"-rw-r----- root/root", "./etc/meshingest/config.json",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("dpkg-deb -c lacks %q:\n%s", want, listing)
		}
	}
	control := t.TempDir()
	sh(t, "dpkg-deb", "-e", deb, control)
	if got, _ := os.ReadFile(filepath.Join(control, "conffiles")); strings.TrimSpace(string(got)) != configPath {
		t.Errorf("conffiles = %q, want %s", got, configPath)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		st, err := os.Stat(filepath.Join(control, s))
		if err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("maintainer script %s missing or not executable: %v", s, err)
		}
	}
	// No script enables or starts a service: the operator does.
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		script, _ := os.ReadFile(filepath.Join(control, s))
		for _, line := range strings.Split(string(script), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "echo") {
				continue
			}
			for _, verb := range []string{"systemctl enable", "systemctl start", "systemctl restart", "--now"} {
				if strings.Contains(line, verb) {
					t.Errorf("%s runs %q: %s", s, verb, line)
				}
			}
		}
	}

	// Install into a scratch root. The scripts run on this machine with
	// DPKG_ROOT set, and must touch nothing outside it.
	hostPasswd, _ := os.ReadFile("/etc/passwd")
	R := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		os.MkdirAll(filepath.Join(R, d), 0o755)
	}
	os.WriteFile(filepath.Join(R, "var/lib/dpkg/status"), nil, 0o644)
	dpkg := func(args ...string) string {
		return sh(t, "dpkg", append([]string{"--root=" + R, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
	out := dpkg("-i", deb)
	if !strings.Contains(out, "systemctl enable --now meshingest-receiver meshingest-writer") {
		t.Errorf("the first install does not tell the next step:\n%s", out)
	}
	passwd, _ := os.ReadFile(filepath.Join(R, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(R, "etc/group"))
	if !strings.Contains(string(passwd), "meshingest:x:") || !strings.Contains(string(group), "meshingest:x:") {
		t.Errorf("no meshingest user or group below the root:\n%s\n%s", passwd, group)
	}
	if after, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(after, hostPasswd) {
		t.Errorf("installing below %s changed this machine's /etc/passwd", R)
	}
	cfg := filepath.Join(R, configPath)
	st, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("%s is %04o, want 0640", configPath, st.Mode().Perm())
	}
	if gid := fileGID(st); gid != groupID(t, string(group), "meshingest") {
		t.Errorf("%s group id %d, want meshingest's", configPath, gid)
	}
	// The services are not enabled: the operator enables them.
	if links, _ := filepath.Glob(filepath.Join(R, "etc/systemd/system/*.wants/meshingest-*")); len(links) > 0 {
		t.Errorf("installing enabled %q", links)
	}
	// The units shipped are the ones `meshingest systemd print` renders for
	// /usr/bin/meshingest and the default folders.
	p := deploy.Params{Binary: binaryPath, Config: configPath}
	p.FromConfig(nil)
	rendered, _ := deploy.Render(p)
	for _, f := range rendered {
		dir := unitDir
		if f.Name == deploy.SysusersFile {
			dir = sysusersDir
		}
		if got, _ := os.ReadFile(filepath.Join(R, dir, f.Name)); !bytes.Equal(got, f.Data) {
			t.Errorf("%s/%s differs from deploy.Render's", dir, f.Name)
		}
	}
	// The installed binary runs and says what it is.
	ver := sh(t, filepath.Join(R, binaryPath), "--version")
	if want := "meshingest " + b.Stamp.Version + " commit " + b.Stamp.Commit + " date " + b.Stamp.Date + " linux/amd64"; !strings.HasPrefix(ver, want) {
		t.Errorf("installed meshingest --version = %q, want it to start with %q", ver, want)
	}
	// The shipped configuration is one meshingest loads.
	sh(t, filepath.Join(R, binaryPath), "systemd", "print", "--root", R, "--binary", binaryPath)

	// Purge: the configuration and its statoverride go; the data stays.
	os.MkdirAll(filepath.Join(R, "var/lib/meshingest/data/spool"), 0o700)
	out = dpkg("--purge", "meshingest")
	if _, err := os.Stat(cfg); err == nil {
		t.Errorf("purge left %s", configPath)
	}
	if so, _ := os.ReadFile(filepath.Join(R, "var/lib/dpkg/statoverride")); bytes.Contains(so, []byte(configPath)) {
		t.Errorf("purge left the statoverride: %s", so)
	}
	if _, err := os.Stat(filepath.Join(R, "var/lib/meshingest/data/spool")); err != nil {
		t.Errorf("purge removed the data folder: %v", err)
	}
	if !strings.Contains(out, "/var/lib/meshingest") {
		t.Errorf("purge does not say the data folder was kept:\n%s", out)
	}
}

func groupID(t *testing.T, group, name string) uint32 {
	t.Helper()
	for _, line := range strings.Split(group, "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == name {
			var id uint32
			if _, err := fmt.Sscan(f[2], &id); err == nil {
				return id
			}
		}
	}
	t.Fatalf("no group %s in:\n%s", name, group)
	return 0
}

func fileGID(st os.FileInfo) uint32 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Gid
	}
	return ^uint32(0)
}
