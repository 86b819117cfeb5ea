// The meshingest executable, built once per test binary, for the tests that
// run the real program as an operator does (processes started, signalled and
// SIGKILLed).

package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// RaceEnv, set to 1, builds the executable with the race detector: slower
// processes, but data races inside them fail the run too.
const RaceEnv = "MESHINGEST_TEST_RACE"

var (
	once sync.Once
	dir  string
	path string
	err  error
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
		args := []string{"build", "-o", path}
		if os.Getenv(RaceEnv) == "1" {
			args = append(args, "-race")
		}
		args = append(args, "github.com/meshingest/meshingest/cmd/meshingest")
		if out, buildErr := exec.Command("go", args...).CombinedOutput(); buildErr != nil {
			err = fmt.Errorf("go build meshingest for the tests: %v\n%s", buildErr, out)
		}
	})
	return path, err
}

// BinaryPath is BuildBinary for a test: a failed build fails tb.
func BinaryPath(tb testing.TB) string {
	tb.Helper()
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
