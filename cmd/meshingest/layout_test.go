package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/internal/testkit"
)

// The product binary links no test code: not the harness, not its load
// generator, not the plotting library the harness draws with, not the
// testkit. The harness is its own command (cmd/meshingest-harness).
func TestProductBinary_LinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/meshingest/meshingest/tests/",
		"github.com/meshingest/meshingest/internal/testkit",
		"gonum.org/v1/plot",
		"testing",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == strings.TrimSuffix(f, "/") || strings.HasPrefix(dep, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("cmd/meshingest links %s", dep)
			}
		}
	}
}

// maxBinaryBytes bounds the product binary built the way the README says
// (CGO_ENABLED=0 and -trimpath): 27 MB with everything it needs, 36 MB when it
// still linked the harness.
const maxBinaryBytes = 28 << 20

func TestProductBinary_Size(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	// testkit builds it as the README does, unless it builds with -race.
	exe := testkit.BinaryPath(t)
	if os.Getenv(testkit.RaceEnv) == "1" {
		exe = buildExe(t, "../..")
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > maxBinaryBytes {
		t.Errorf("the product binary is %.1f MiB, more than %d MiB", float64(fi.Size())/(1<<20), maxBinaryBytes>>20)
	}
	t.Logf("product binary: %.1f MiB", float64(fi.Size())/(1<<20))
}
