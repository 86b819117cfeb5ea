package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/internal/testkit"
)

func TestResolveVersion_Sources(t *testing.T) {
	vcs := func(rev, at, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{
			Main: debug.Module{Path: "github.com/meshingest/meshingest", Version: "(devel)"},
			Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"},
				{Key: "vcs.revision", Value: rev},
				{Key: "vcs.time", Value: at},
				{Key: "vcs.modified", Value: modified},
			},
		}
	}
	pseudo := vcs("29c2352b15d39f20db3a9ec1beab823456ffde94", "2026-12-02T01:12:14Z", "false")
	pseudo.Main.Version = "v0.0.0-20261202011214-29c2352b15d3"
	for _, tc := range []struct {
		name string
		ld   buildVersion
		info *debug.BuildInfo
		ok   bool
		want buildVersion
	}{
		{"ldflags win over the build information",
			buildVersion{Version: "1.2.0", Commit: "abc", Date: "2026-11-26T05:44:00Z"}, pseudo, true,
			buildVersion{Version: "1.2.0", Commit: "abc", Date: "2026-11-26T05:44:00Z"}},
		{"go build in a git clone: the pseudo-version and the VCS stamp",
			buildVersion{}, pseudo, true,
			buildVersion{Version: "v0.0.0-20261202011214-29c2352b15d3", Commit: "29c2352b15d39f20db3a9ec1beab823456ffde94", Date: "2026-12-02T01:12:14Z"}},
		{"a modified tree is marked dirty",
			buildVersion{}, vcs("29c2352", "2026-12-02T01:12:14Z", "true"), true,
			buildVersion{Version: "(devel)", Commit: "29c2352+dirty", Date: "2026-12-02T01:12:14Z"}},
		{"go run: no stamp at all says so",
			buildVersion{}, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true,
			buildVersion{Version: "(devel)", Commit: "unknown", Date: "unknown"}},
		{"no build information",
			buildVersion{}, nil, false,
			buildVersion{Version: "(devel)", Commit: "unknown", Date: "unknown"}},
	} {
		got := resolveVersion(tc.ld, tc.info, tc.ok)
		got.Arch = ""
		if got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestResolveVersion_NamesTheARMLevel(t *testing.T) {
	info := &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "GOARM", Value: "6"}}}
	if got := resolveVersion(buildVersion{}, info, true).Arch; !strings.HasSuffix(got, "/v6") {
		t.Errorf("Arch = %q, want it to end in /v6", got)
	}
}

// buildIn builds cmd/meshingest from the module at dir into a temporary
// file and returns the output of `meshingest <arg>`.
func buildIn(t *testing.T, dir, arg string, buildArgs ...string) string {
	t.Helper()
	return runExe(t, buildExe(t, dir, buildArgs...), arg)
}

// buildExe builds cmd/meshingest from the module at dir into a temporary
// file and returns its path.
func buildExe(t *testing.T, dir string, buildArgs ...string) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "meshingest")
	// -trimpath and CGO_ENABLED=0, as the packages and testkit build it:
	// one set of compiled packages in the build cache for all of them.
	args := append([]string{"build", "-trimpath", "-o", exe}, buildArgs...)
	cmd := exec.Command("go", append(args, "./cmd/meshingest")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := testkit.GoBuild(cmd); err != nil {
		t.Fatalf("go build %v: %v\n%s", buildArgs, err, out)
	}
	return exe
}

func runExe(t *testing.T, exe, arg string) string {
	t.Helper()
	out, err := exec.Command(exe, arg).CombinedOutput()
	if err != nil {
		t.Fatalf("meshingest %s: %v\n%s", arg, err, out)
	}
	return strings.TrimSpace(string(out))
}

// The packages' way: every field from -ldflags, for both spellings.
func TestVersion_Ldflags_PrintsVersionCommitDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ld := "-X main.version=1.2.3 -X main.commit=0123456789abcdef -X main.date=2026-11-26T05:44:00Z"
	exe := buildExe(t, "../..", "-ldflags", ld)
	for _, arg := range []string{"version", "--version"} {
		got := runExe(t, exe, arg)
		want := "meshingest 1.2.3 commit 0123456789abcdef date 2026-11-26T05:44:00Z linux/"
		if !strings.HasPrefix(got, want) {
			t.Errorf("meshingest %s = %q, want it to start with %q", arg, got, want)
		}
	}
}

// The README's way: a plain `go build` in a git clone takes the commit and
// its time from Go's VCS stamp, and says +dirty when the tree had changes.
// (The test makes its own repository: Go does not stamp from a git
// worktree, whose .git is a file, and this machine's go env may set
// -buildvcs=false, so the flag is given.)
func TestVersion_NoLdflags_FromVCSStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@t", "GIT_COMMITTER_DATE=2026-11-26T05:44:00Z", "GIT_AUTHOR_DATE=2026-11-26T05:44:00Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// Copy the module's Go sources (what the build needs) into a new repository.
	root, _ := filepath.Abs("../..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "docs") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(repo, rel), 0o755)
		}
		if !strings.HasSuffix(path, ".go") && rel != "go.mod" && rel != "go.sum" && !strings.HasPrefix(rel, "deploy/systemd/") &&
			!strings.HasPrefix(rel, "internal/capture/") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(repo, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "test")
	head := git("rev-parse", "HEAD")

	got := buildIn(t, repo, "version", "-buildvcs=true")
	for _, want := range []string{"meshingest v0.0.0-20261126054400-" + head[:12], "commit " + head + " ", "date 2026-11-26T05:44:00Z"} {
		if !strings.Contains(got, want) {
			t.Errorf("clean tree: %q lacks %q", got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "cmd/meshingest/zz_dirty.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got = buildIn(t, repo, "--version", "-buildvcs=true")
	if !strings.Contains(got, "commit "+head+"+dirty ") || !strings.Contains(got, "+dirty") {
		t.Errorf("modified tree: %q, want commit %s+dirty", got, head)
	}
}
