package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// buildLockPath is shared by every test process of a `go test ./...`
// run: they all build in the same temporary folder's machine.
var buildLockPath = filepath.Join(os.TempDir(), "meshingest-go-build.lock")

// GoBuild runs cmd, a `go build`, while holding a lock that every test
// process takes for its builds. go test runs several packages' test
// binaries at once, and two `go build`s of the same packages both compile
// what the build cache does not hold yet: from an empty cache, each would
// compile modernc.org/sqlite, minutes of CPU on a loaded 2-core machine.
// One at a time, the second finds the first's packages in the cache and
// only links. It returns the command's combined output.
func GoBuild(cmd *exec.Cmd) ([]byte, error) {
	unlock, err := lockBuilds()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return cmd.CombinedOutput()
}

func lockBuilds() (unlock func(), err error) {
	f, err := os.OpenFile(buildLockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("open the test build lock %s: %w", buildLockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", buildLockPath, err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}
