package writer

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxWriterLines bounds the writer package without its tests (issue 19:
// it was 6,772 lines; the database file, the stats, retention, the geo
// filter and the stored memories are packages of their own). What grows
// past it belongs in a package under writer/.
const maxWriterLines = 5000

// TestWriterPackage_Lines_AtMost5000 counts lines as wc -l does, over the
// package's .go files that are not tests.
func TestWriterPackage_Lines_AtMost5000(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	total, counted := 0, 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		total += bytes.Count(b, []byte("\n"))
		counted++
	}
	if counted < 10 {
		t.Fatalf("counted %d files; run from the package's folder", counted)
	}
	if total > maxWriterLines {
		t.Errorf("the writer package is %d lines without tests, more than %d: move a responsibility into a package under writer/", total, maxWriterLines)
	}
	t.Logf("writer package: %d lines in %d files", total, counted)
}

// TestWriterSubpackages_Deps_NeverTheWriter: the packages under writer/
// never import the writer (writer/jobs, built on top of it, does).
func TestWriterSubpackages_Deps_NeverTheWriter(t *testing.T) {
	const self = "github.com/meshingest/meshingest/writer"
	list, err := exec.Command("go", "list", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []string
	for _, p := range strings.Fields(string(list)) {
		if p != self && p != self+"/jobs" {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) < 6 {
		t.Fatalf("found %d packages under writer/: %v", len(pkgs), pkgs)
	}
	for _, p := range pkgs {
		out, err := exec.Command("go", "list", "-deps", p).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", p, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == self {
				t.Errorf("%s imports the writer", p)
			}
		}
	}
}
