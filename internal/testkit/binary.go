// The meshingest executable, built once per test binary, for the tests that
// run the real program as an operator does (processes started, signalled and
// SIGKILLed).

package testkit

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RaceEnv, set to 1, builds the executable with the race detector: slower
// processes, but data races inside them fail the run too.
const RaceEnv = "MESHINGEST_TEST_RACE"

var (
	once        sync.Once
	sourcesOnce sync.Once
	dir         string
	path        string
	err         error
)

// BuildBinary builds cmd/meshingest into a temporary folder on its first call
// and returns the executable's path; later calls return the same result.
func BuildBinary() (string, error) {
	once.Do(func() {
		dir, err = os.MkdirTemp("", "meshingest-bin-")
		if err != nil {
			err = fmt.Errorf("build meshingest for the tests: %w", err)
			return
		}
		path = filepath.Join(dir, "meshingest")
		// The packages' flags (deploy/package), so the tests that build
		// the product share one set of compiled packages in the build
		// cache: each other set compiles modernc.org/sqlite again, minutes
		// of CPU on a loaded 2-core machine with an empty cache.
		args := []string{"build", "-trimpath", "-o", path}
		env := append(os.Environ(), "CGO_ENABLED=0")
		if os.Getenv(RaceEnv) == "1" {
			args = append(args, "-race") // needs cgo
			env = os.Environ()
		}
		args = append(args, "github.com/meshingest/meshingest/cmd/meshingest")
		build := exec.Command("go", args...)
		build.Env = env
		if out, buildErr := GoBuild(build); buildErr != nil {
			err = fmt.Errorf("go build meshingest for the tests: %v\n%s", buildErr, out)
			return
		}
	})
	return path, err
}

// BinaryPath is BuildBinary for a test: a failed build fails tb.
func BinaryPath(tb testing.TB) string {
	tb.Helper()
	// go test caches a package's result by what the test binary links
	// and the files its tests opened, and knows nothing of a program they
	// built and ran: a test of the real executable would pass from the
	// cache after the product changed. Opening every source file the
	// executable is built from records them as the test's inputs (opens
	// in TestMain, before the tests run, are not recorded).
	sourcesOnce.Do(openSources)
	p, err := BuildBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// CleanupBinary removes the executable; TestMain calls it after m.Run.
func CleanupBinary() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// openSources opens every Go file, go.mod and go.sum of the module but the
// tests' own, so that go test's result cache is invalidated by a change to
// any of them (it stats each file a test opened when it looks the result
// up).
func openSources() {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if n := d.Name(); n == ".git" || n == "testdata" || (strings.HasPrefix(n, ".") && p != root) {
				return filepath.SkipDir
			}
			return nil
		}
		n := d.Name()
		if (strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go")) || n == "go.mod" || n == "go.sum" || strings.HasSuffix(n, ".jsonl") {
			if f, err := os.Open(p); err == nil {
				f.Close()
			}
		}
		return nil
	})
}
