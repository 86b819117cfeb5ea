// Command package builds meshingest's Debian packages:
//
//	go run ./deploy/package --out DIR [--arch amd64,arm64,armhf] [--version V]
//
// writes DIR/meshingest_<version>_<arch>.deb for each architecture. Each
// holds the static binary (CGO_ENABLED=0) in /usr/bin, both systemd units in
// /usr/lib/systemd/system (rendered by package deploy for that binary and
// the default folders), the sysusers.d entry, a default configuration in
// /etc/meshingest/config.json (a conffile) and the maintainer scripts of
// scripts/: they create the user and leave both services disabled until
// the operator enables them. docs/install.md is the operator's side.
//
// The version, commit and date come from git (see versionFromGit) unless
// given, and are linked into the binary (-X main.version ...), so that
// `meshingest version` and `dpkg -l meshingest` agree.
//
// The .deb format is written by nfpm (github.com/goreleaser/nfpm/v2), a
// well-kept library that gets the ar/tar layout, md5sums and conffiles
// right; it is linked into this command only, never into meshingest.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("package", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go run ./deploy/package --out DIR [flags]")
		fmt.Fprintln(fs.Output(), "Builds meshingest_<version>_<arch>.deb for each architecture into DIR.")
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "the `folder` the packages are written to (created)")
	arches := fs.String("arch", "amd64,arm64,armhf", "comma-separated Debian `architectures`: "+strings.Join(archNames(), ", "))
	ver := fs.String("version", "", "the package `version` (default: from git describe)")
	commit := fs.String("commit", "", "the `revision` linked into the binary (default: git rev-parse HEAD, +dirty)")
	date := fs.String("date", "", "the RFC 3339 `time` linked into the binary and set on the files (default: the commit's time)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		return 1
	}
	b := Build{Root: root, Out: *out, Stamp: Stamp{Version: *ver, Commit: *commit, Date: *date}}
	if err := b.Stamp.fill(root); err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		return 1
	}
	for _, name := range strings.Split(*arches, ",") {
		a, ok := archByName(strings.TrimSpace(name))
		if !ok {
			fmt.Fprintf(os.Stderr, "package: unknown architecture %q; use %s\n", name, strings.Join(archNames(), ", "))
			return 2
		}
		path, err := b.Deb(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, "package:", err)
			return 1
		}
		fmt.Println(path)
	}
	return 0
}
