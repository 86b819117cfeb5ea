package deploy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// InstallOptions configures Install.
type InstallOptions struct {
	// Root is the file-system root to install into: "/" for this machine,
	// or an image being prepared. Below another root nothing is reloaded or
	// started, but the user is still created (systemd-sysusers --root) and
	// the units enabled (systemctl --root) when Enable is set.
	Root string
	// Enable enables both units (systemctl enable); with Root "/" it also
	// starts them (--now).
	Enable bool
	// Out receives one line per step, for the operator.
	Out io.Writer
}

// WriteFiles writes the rendered files flat into dir (what `systemd print
// --out` does), creating dir. Files are 0644: units hold no secret.
func WriteFiles(dir string, files []File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("systemd print: create %s: %w", dir, err)
	}
	for _, f := range files {
		path := filepath.Join(dir, f.Name)
		if err := os.WriteFile(path, f.Data, 0o644); err != nil {
			return fmt.Errorf("systemd print: write %s: %w", path, err)
		}
	}
	return nil
}

// Install puts the files in place below opts.Root, creates the user,
// reloads systemd and, when asked, enables (and starts) both services.
// It checks first that the binary and the configuration exist below the
// root, since a unit pointing at a missing file fails only at start.
func Install(files []File, p Params, opts InstallOptions) error {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	live := filepath.Clean(opts.Root) == "/"
	below := func(path string) string { return filepath.Join(opts.Root, path) }

	if st, err := os.Stat(below(p.Binary)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("systemd install: the binary %s is missing or not executable; copy meshingest there (install -m 0755 meshingest %s) or pass --binary", below(p.Binary), p.Binary)
	}
	if _, err := os.Stat(below(p.Config)); err != nil {
		return fmt.Errorf("systemd install: the configuration %s: %w; write it first (CoreScope's config.json works as it is) or pass --config", below(p.Config), err)
	}

	for _, f := range files {
		dir := below(f.Dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("systemd install: create %s: %w", dir, err)
		}
		path := filepath.Join(dir, f.Name)
		if err := os.WriteFile(path, f.Data, 0o644); err != nil {
			return fmt.Errorf("systemd install: write %s: %w", path, err)
		}
		fmt.Fprintf(opts.Out, "wrote %s\n", path)
	}

	sysusers := []string{}
	if !live {
		sysusers = append(sysusers, "--root="+opts.Root)
	}
	// A bare name is looked up in sysusers.d below the root.
	sysusers = append(sysusers, SysusersFile)
	if err := runCommand("systemd-sysusers", sysusers...); err != nil {
		return fmt.Errorf("systemd install: create the user: %w", err)
	}
	fmt.Fprintf(opts.Out, "user %s is present (systemd-sysusers)\n", userOrDefault(p.User))

	if live {
		if err := runCommand("systemctl", "daemon-reload"); err != nil {
			return fmt.Errorf("systemd install: %w", err)
		}
	}
	if opts.Enable {
		args := []string{"enable"}
		if live {
			args = append(args, "--now")
		} else {
			args = append([]string{"--root=" + opts.Root}, args...)
		}
		args = append(args, ReceiverUnit, WriterUnit)
		if err := runCommand("systemctl", args...); err != nil {
			return fmt.Errorf("systemd install: %w", err)
		}
		fmt.Fprintf(opts.Out, "enabled %s and %s\n", ReceiverUnit, WriterUnit)
	} else {
		fmt.Fprintf(opts.Out, "next: systemctl enable --now %s %s\n", ReceiverUnit, WriterUnit)
	}
	if warn := configReadable(below(p.Config)); warn != "" {
		fmt.Fprintf(opts.Out, "warning: %s; unless %s owns it, let the services read it: chgrp %s %s && chmod 0640 %s\n",
			warn, userOrDefault(p.User), userOrDefault(p.User), p.Config, p.Config)
	}
	return nil
}

func userOrDefault(u string) string {
	if u == "" {
		return DefaultUser
	}
	return u
}

// configReadable warns when the configuration (which may hold broker
// passwords, so it should not be world-readable either) can be read by its
// owner only: unless that owner is the services' user, they fail to start.
func configReadable(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if st.Mode().Perm()&0o044 == 0 {
		return fmt.Sprintf("%s is readable only by its owner (mode %04o)", path, st.Mode().Perm())
	}
	return ""
}

func runCommand(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || len(out) > 0 {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}
