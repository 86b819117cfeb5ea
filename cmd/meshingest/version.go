package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// The version, commit and date of this build, set at link time by the
// packages (go run ./deploy/package):
//
//	-ldflags "-X main.version=1.2.0 -X main.commit=<sha> -X main.date=<RFC 3339>"
//
// Left empty, they come from the build information Go records: the
// module's version and the VCS stamp of `go build` in a git clone.
var version, commit, date string

// buildVersion is what `meshingest version` prints.
type buildVersion struct {
	Version string // 1.2.0, v0.0.0-20261126054400-29c2352b15d3, or (devel)
	Commit  string // the full revision, +dirty when the tree had changes; or unknown
	Date    string // the commit's or the build's time (RFC 3339); or unknown
	Arch    string // linux/amd64, linux/arm/v6, ...
}

// resolveVersion fills each field from the link-time value, else from
// the build information, else with a word that says it is unknown: never
// a bare placeholder that looks like a version. The date is the commit's
// time when it comes from the VCS stamp; the packages set the same (the
// commit's time, so that a rebuild of one commit gives the same package).
func resolveVersion(ld buildVersion, info *debug.BuildInfo, ok bool) buildVersion {
	v := ld
	var rev, vcsTime string
	var modified bool
	v.Arch = runtime.GOOS + "/" + runtime.GOARCH
	if ok && info != nil {
		if v.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			// Go 1.24+ stamps a pseudo-version (with +dirty) here from git.
			v.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			case "GOARM":
				// A Raspberry Pi operator needs to know armv6 from armv7.
				v.Arch += "/v" + s.Value
			}
		}
	}
	if v.Commit == "" && rev != "" {
		v.Commit = rev
		if modified {
			v.Commit += "+dirty"
		}
	}
	if v.Date == "" {
		v.Date = vcsTime
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	if v.Date == "" {
		v.Date = "unknown"
	}
	return v
}

func (v buildVersion) String() string {
	return fmt.Sprintf("meshingest %s commit %s date %s %s %s",
		v.Version, v.Commit, v.Date, v.Arch, runtime.Version())
}

func currentVersion() buildVersion {
	info, ok := debug.ReadBuildInfo()
	return resolveVersion(buildVersion{Version: version, Commit: commit, Date: date}, info, ok)
}

func runVersion(args []string) int {
	fmt.Println(currentVersion())
	return 0
}
