package main

import (
	"cmp"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/meshingest/meshingest/deploy"
)

//go:embed scripts/postinst scripts/prerm scripts/postrm config.json
var assets embed.FS

// Where the package puts things. The units are rendered for these, so a
// packaged system and `meshingest systemd install --binary /usr/bin/...`
// agree on every path.
const (
	binaryPath   = "/usr/bin/meshingest"
	unitDir      = "/usr/lib/systemd/system"
	sysusersDir  = "/usr/lib/sysusers.d"
	configPath   = deploy.DefaultConfig // /etc/meshingest/config.json
	packageName  = "meshingest"
	packageDescr = `MeshCore MQTT packets into CoreScope's SQLite database, losing none
 meshingest replaces CoreScope's built-in ingestor: a receiver subscribes
 to the MQTT brokers and appends every message to a durable on-disk spool;
 a writer drains the spool into CoreScope's database exactly once, and
 waits out a locked, migrated or stopped database without losing packets.
 Two systemd services, disabled until you enable them.`
)

// arch is one Debian architecture and the Go target that serves it.
type arch struct {
	Deb    string // amd64, arm64, armhf
	GOARCH string
	GOARM  string // for arm only
}

// arches lists the packages built. armhf is built for ARMv6 with hardware
// floating point (GOARM=6): that is what Raspberry Pi OS's armhf means (it
// runs on the Pi Zero and Pi 1), and Debian's own armhf (ARMv7) runs it too.
var arches = []arch{
	{Deb: "amd64", GOARCH: "amd64"},
	{Deb: "arm64", GOARCH: "arm64"},
	{Deb: "armhf", GOARCH: "arm", GOARM: "6"},
}

func archByName(name string) (arch, bool) {
	for _, a := range arches {
		if a.Deb == name {
			return a, true
		}
	}
	return arch{}, false
}

func archNames() []string {
	var names []string
	for _, a := range arches {
		names = append(names, a.Deb)
	}
	return names
}

// Stamp is what a package says of the source it was built from.
type Stamp struct {
	Version string // the Debian version, e.g. 1.2.0 or 0.0.0~git20261202011214.29c2352
	Commit  string // the full revision, +dirty when the tree had changes
	Date    string // RFC 3339, UTC: the commit's time unless given
}

// fill completes the stamp from git in root: a rebuild of one commit gives
// the same version, commit and file times.
func (s *Stamp) fill(root string) error {
	if s.Version != "" && s.Commit != "" && s.Date != "" {
		return s.check()
	}
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s in %s: %w; give --version, --commit and --date when building outside a git clone", strings.Join(args, " "), root, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	rev, err := git("rev-parse", "HEAD")
	if err != nil {
		return err
	}
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return err
	}
	dirty := status != ""
	if s.Commit == "" {
		s.Commit = rev
		if dirty {
			s.Commit += "+dirty"
		}
	}
	if s.Date == "" {
		unix, err := git("log", "-1", "--format=%ct")
		if err != nil {
			return err
		}
		var sec int64
		fmt.Sscan(unix, &sec)
		s.Date = time.Unix(sec, 0).UTC().Format(time.RFC3339)
	}
	if s.Version == "" {
		// A tag v1.2.0 on HEAD gives 1.2.0; 3 commits later, 1.2.0+git3.<short>.
		// No tag: 0.0.0~git<commit time>.<short>, older than any release.
		describe, _ := git("describe", "--tags", "--match", "v[0-9]*", "--long")
		s.Version = debianVersion(describe, rev, s.Date, dirty)
	}
	return s.check()
}

// debianVersion turns `git describe --long` output (v1.2.0-3-gabc1234, or
// empty without a tag) into a Debian version: digits first, no hyphen
// (there is no Debian revision), sorting after the tag it follows.
func debianVersion(describe, rev, date string, dirty bool) string {
	short := rev
	if len(short) > 7 {
		short = short[:7]
	}
	var v string
	if tag, rest, ok := cutLast(describe, "-g"); ok {
		if base, n, ok := cutLast(tag, "-"); ok {
			base = strings.TrimPrefix(base, "v")
			base = strings.ReplaceAll(base, "-", "~") // v1.3.0-rc1 sorts before 1.3.0
			if n == "0" {
				v = base
			} else {
				v = base + "+git" + n + "." + rest
			}
		}
	}
	if v == "" {
		t, err := time.Parse(time.RFC3339, date)
		stamp := "0"
		if err == nil {
			stamp = t.UTC().Format("20060102150405")
		}
		v = "0.0.0~git" + stamp + "." + short
	}
	if dirty {
		v += "+dirty"
	}
	return v
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// check refuses what dpkg or the linker would misread.
func (s *Stamp) check() error {
	if s.Version == "" || s.Version[0] < '0' || s.Version[0] > '9' {
		return fmt.Errorf("version %q: a Debian version starts with a digit (1.2.0, not v1.2.0)", s.Version)
	}
	if strings.Trim(s.Version, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+~") != "" {
		return fmt.Errorf("version %q: use digits, letters, '.', '+' and '~' only", s.Version)
	}
	if strings.ContainsAny(s.Commit+s.Date, " \t\n'\"") {
		return fmt.Errorf("commit %q or date %q holds a space or a quote", s.Commit, s.Date)
	}
	if _, err := time.Parse(time.RFC3339, s.Date); err != nil {
		return fmt.Errorf("date %q: want RFC 3339, e.g. 2026-11-26T05:44:00Z", s.Date)
	}
	return nil
}

// Build makes packages of the module at Root into Out.
type Build struct {
	Root  string // the module's root folder (go.mod)
	Out   string // where the .deb files go
	Stamp Stamp  // filled (Stamp.fill) before Deb is called
	// Compression of the package's data: "" is xz, the smallest package
	// (what a release ships), and about 20 s of CPU for the binary;
	// "gzip" packs it in a second, for a test of what the package does.
	Compression string
}

// Deb builds the binary for a and packages it; it returns the package's path.
func (b *Build) Deb(a arch) (string, error) {
	work, err := os.MkdirTemp("", "meshingest-package-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)

	bin := filepath.Join(work, "meshingest")
	if err := b.goBuild(a, bin); err != nil {
		return "", err
	}
	contents, scripts, err := b.stage(work, bin)
	if err != nil {
		return "", err
	}
	mtime, _ := time.Parse(time.RFC3339, b.Stamp.Date)
	info := &nfpm.Info{
		Name:          packageName,
		Arch:          a.GOARCH,
		Platform:      "linux",
		Version:       b.Stamp.Version,
		VersionSchema: "none", // taken as it is: debianVersion made it
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "meshingest maintainers <meshingest@users.noreply.github.com>",
		Description:   packageDescr,
		Homepage:      "https://github.com/meshingest/meshingest",
		MTime:         mtime,
		Overridables: nfpm.Overridables{
			Suggests: []string{"mosquitto"},
			Contents: contents,
			Scripts:  scripts,
			Deb:      nfpm.Deb{Arch: a.Deb, Compression: cmp.Or(b.Compression, "xz")},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", fmt.Errorf("package %s: %w", a.Deb, err)
	}
	if err := os.MkdirAll(b.Out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(b.Out, fmt.Sprintf("%s_%s_%s.deb", packageName, b.Stamp.Version, a.Deb))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("package %s: %w", a.Deb, err)
	}
	return path, f.Close()
}

// goBuild builds cmd/meshingest for a: static (CGO_ENABLED=0), stripped of
// the symbol table (-s -w: a panic's stack trace still names functions and
// lines), with the stamp linked in. -buildvcs=false: the stamp says it all,
// and Go cannot stamp from a git worktree anyway.
func (b *Build) goBuild(a arch, out string) error {
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s -X main.date=%s", b.Stamp.Version, b.Stamp.Commit, b.Stamp.Date)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "./cmd/meshingest")
	cmd.Dir = b.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a.GOARCH, "GOARM="+a.GOARM)
	if outb, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s (GOARCH=%s GOARM=%s): %v\n%s", a.Deb, a.GOARCH, a.GOARM, err, outb)
	}
	return nil
}

// stage writes the rendered units, the sysusers entry, the configuration
// and the scripts into work and returns what the package holds.
func (b *Build) stage(work, bin string) (files.Contents, nfpm.Scripts, error) {
	p := deploy.Params{Binary: binaryPath, Config: configPath}
	p.FromConfig(nil) // the folders of the shipped configuration: the defaults
	rendered, err := deploy.Render(p)
	if err != nil {
		return nil, nfpm.Scripts{}, err
	}
	write := func(name string, data []byte) (string, error) {
		path := filepath.Join(work, name)
		return path, os.WriteFile(path, data, 0o644)
	}
	root := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode}
	}
	contents := files.Contents{
		{Source: bin, Destination: binaryPath, FileInfo: root(0o755)},
	}
	for _, f := range rendered {
		src, err := write(f.Name, f.Data)
		if err != nil {
			return nil, nfpm.Scripts{}, err
		}
		dir := unitDir
		if f.Name == deploy.SysusersFile {
			dir = sysusersDir
		}
		contents = append(contents, &files.Content{Source: src, Destination: dir + "/" + f.Name, FileInfo: root(0o644)})
	}
	for _, name := range []string{"config.json", "postinst", "prerm", "postrm"} {
		src := name
		if name != "config.json" {
			src = "scripts/" + name
		}
		data, err := assets.ReadFile(src)
		if err != nil {
			return nil, nfpm.Scripts{}, err
		}
		if _, err := write(name, data); err != nil {
			return nil, nfpm.Scripts{}, err
		}
	}
	// The configuration is a conffile: an upgrade never overwrites the
	// operator's edits. Its group becomes meshingest in postinst (a
	// statoverride), once the user exists: a package cannot ship a file
	// owned by a group created by its own scripts.
	contents = append(contents, &files.Content{
		Source: filepath.Join(work, "config.json"), Destination: configPath,
		Type: files.TypeConfig, FileInfo: root(0o640),
	})
	scripts := nfpm.Scripts{
		PostInstall: filepath.Join(work, "postinst"),
		PreRemove:   filepath.Join(work, "prerm"),
		PostRemove:  filepath.Join(work, "postrm"),
	}
	return contents, scripts, nil
}

// moduleRoot is the folder of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the meshingest module: run from a clone (go run ./deploy/package)")
	}
	return filepath.Dir(gomod), nil
}
