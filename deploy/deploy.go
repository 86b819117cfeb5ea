// Package deploy holds the systemd units meshingest ships in its binary and
// installs them: `meshingest systemd print` renders them into a folder for
// review or packaging, `meshingest systemd install` puts them in place.
//
// Two services, one static user: meshingest-receiver.service and
// meshingest-writer.service share the spool folder (0600 files in a 0700
// folder), so they run as the same user, created by systemd-sysusers from
// the shipped sysusers.d entry. Both are Type=notify with a watchdog, run
// from the state directory /var/lib/meshingest (where the configuration's
// relative paths land) and are hardened (ProtectSystem=strict, an empty
// capability set, a system-call filter, UMask=0077). A database or spool
// outside the state directory is made writable with ReadWritePaths=, and
// every unit requires the mounts of the folders it writes
// (RequiresMountsFor=): Params.FromConfig computes both from the
// configuration. Both share RuntimeDirectory=meshingest, preserved.
//
// Beside it: deploy/package builds the Debian packages from the same
// templates (go run ./deploy/package), deploy/docker holds the Dockerfile
// and the compose file. docs/install.md is the operator's guide to all three.
package deploy

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/meshingest/meshingest/shared"
)

//go:embed systemd/*
var templates embed.FS

// Unit and file names.
const (
	ReceiverUnit = "meshingest-receiver.service"
	// ReceiverTemplateUnit runs receiver instances (receive --instance
	// %i): meshingest-receiver@a.service, meshingest-receiver@b.service.
	ReceiverTemplateUnit = "meshingest-receiver@.service"
	WriterUnit           = "meshingest-writer.service"
	SysusersFile         = "meshingest.conf"
	// StateDir is the services' StateDirectory= and WorkingDirectory=.
	StateDir = "/var/lib/meshingest"
	// DefaultUser is the user both services run as.
	DefaultUser = "meshingest"
	// DefaultBinary and DefaultConfig are where install expects the binary
	// and the configuration when not told otherwise.
	DefaultBinary = "/usr/local/bin/meshingest"
	DefaultConfig = "/etc/meshingest/config.json"
)

// Params fill the unit templates.
type Params struct {
	// Binary is the absolute path of the meshingest executable (ExecStart).
	Binary string
	// Config is the absolute path of the configuration file.
	Config string
	// User is the account both services run as; DefaultUser when empty.
	User string
	// ReceiverPaths and WriterPaths are extra ReadWritePaths= of each unit:
	// folders outside StateDir that it must write (see PathsFromConfig).
	ReceiverPaths, WriterPaths []string
	// ReceiverMounts and WriterMounts are each unit's RequiresMountsFor=:
	// the folders whose file systems must be mounted before it starts (see
	// MountsFromConfig), so that a spool or database on a disk that did
	// not mount is never started on the empty folder beneath it.
	ReceiverMounts, WriterMounts []string
}

// FromConfig fills the units' ReadWritePaths= and RequiresMountsFor= from
// the configuration the services will run with; nil means a configuration
// that sets no folder (the default database and spool below StateDir).
func (p *Params) FromConfig(cfg *shared.Config) {
	if cfg == nil {
		// LoadConfig's defaults, without the environment of whoever renders.
		cfg = &shared.Config{DBPath: shared.DefaultDBPath}
		cfg.SpoolDir = filepath.Join(filepath.Dir(cfg.DBPath), "spool")
	}
	p.ReceiverPaths, p.WriterPaths = PathsFromConfig(cfg)
	p.ReceiverMounts, p.WriterMounts = MountsFromConfig(cfg)
}

// File is one rendered file.
type File struct {
	Name string // base name: meshingest-receiver.service, ...
	// Dir is where install puts it, relative to the root: etc/systemd/system
	// for units, etc/sysusers.d for the user entry.
	Dir  string
	Data []byte
}

// ErrParams marks parameters the units cannot be rendered with.
var ErrParams = errors.New("deploy: invalid parameters")

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)

// Render returns the two units, the receiver's template unit and the
// sysusers.d entry.
func Render(p Params) ([]File, error) {
	if p.User == "" {
		p.User = DefaultUser
	}
	if !userName.MatchString(p.User) {
		return nil, fmt.Errorf("%w: user %q: use lower-case letters, digits, - and _", ErrParams, p.User)
	}
	paths := []string{p.Binary, p.Config}
	for _, list := range [][]string{p.ReceiverPaths, p.WriterPaths, p.ReceiverMounts, p.WriterMounts} {
		paths = append(paths, list...)
	}
	for _, path := range paths {
		if !filepath.IsAbs(path) {
			return nil, fmt.Errorf("%w: %q is not an absolute path; systemd needs one", ErrParams, path)
		}
		// systemd splits ExecStart= on whitespace and expands % and $.
		if strings.ContainsAny(path, " \t\n\"'\\%$") {
			return nil, fmt.Errorf("%w: %q holds a space, quote, %% or $; choose a plainer path", ErrParams, path)
		}
	}
	var out []File
	for _, f := range []struct {
		tmpl, name, dir string
		paths, mounts   []string
		instance        bool
	}{
		{"meshingest-receiver.service", ReceiverUnit, "etc/systemd/system", p.ReceiverPaths, p.ReceiverMounts, false},
		// The template unit is the same unit with --instance %i: one
		// text, so the two cannot drift apart.
		{"meshingest-receiver.service", ReceiverTemplateUnit, "etc/systemd/system", p.ReceiverPaths, p.ReceiverMounts, true},
		{"meshingest-writer.service", WriterUnit, "etc/systemd/system", p.WriterPaths, p.WriterMounts, false},
		{"meshingest.sysusers", SysusersFile, "etc/sysusers.d", nil, nil, false},
	} {
		src, err := templates.ReadFile("systemd/" + f.tmpl)
		if err != nil {
			return nil, err
		}
		t, err := template.New(f.tmpl).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("deploy: template %s: %w", f.tmpl, err)
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, struct {
			Binary, Config, User              string
			ReadWritePaths, RequiresMountsFor []string
			Instance                          bool
		}{p.Binary, p.Config, p.User, f.paths, f.mounts, f.instance})
		if err != nil {
			return nil, fmt.Errorf("deploy: template %s: %w", f.tmpl, err)
		}
		out = append(out, File{Name: f.name, Dir: f.dir, Data: buf.Bytes()})
	}
	return out, nil
}

// PathsFromConfig returns the folders outside StateDir that each service
// writes, given the configuration it will run with: the receiver writes the
// spool and its stats file, the writer the database (and its -wal/-shm
// beside it) and the spool. Relative paths resolve against StateDir, the
// services' working directory. CoreScope's stats file is not among them:
// the writer unit puts it in StateDir (CORESCOPE_INGESTOR_STATS).
func PathsFromConfig(cfg *shared.Config) (receiver, writer []string) {
	outside := func(dst *[]string, dir string) {
		dir = serviceAbs(dir)
		for _, have := range append([]string{StateDir}, *dst...) {
			if dir == have || strings.HasPrefix(dir, have+"/") {
				return // already writable
			}
		}
		*dst = append(*dst, dir)
	}
	outside(&receiver, cfg.SpoolDir)
	if cfg.Receiver.StatsFile != "" {
		outside(&receiver, filepath.Dir(serviceAbs(cfg.Receiver.StatsFile)))
	}
	outside(&writer, filepath.Dir(serviceAbs(cfg.DBPath)))
	outside(&writer, cfg.SpoolDir)
	return receiver, writer
}

// MountsFromConfig returns each service's RequiresMountsFor=: the folders
// whose data it must not run without, inside StateDir or not. The
// receiver needs the spool; the writer the database's folder and the
// spool. (StateDirectory= already requires the mounts of StateDir itself.)
func MountsFromConfig(cfg *shared.Config) (receiver, writer []string) {
	add := func(dst *[]string, dir string) {
		dir = serviceAbs(dir)
		if !slices.Contains(*dst, dir) {
			*dst = append(*dst, dir)
		}
	}
	add(&receiver, cfg.SpoolDir)
	add(&writer, filepath.Dir(serviceAbs(cfg.DBPath)))
	add(&writer, cfg.SpoolDir)
	return receiver, writer
}

// serviceAbs resolves a path of the configuration as the services see it:
// relative paths against StateDir, their working directory.
func serviceAbs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(StateDir, p)
}
