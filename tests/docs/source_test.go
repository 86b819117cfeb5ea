package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sourceWalk is the page that walks a message through the code; its tables
// name a file and the functions to read in it, which must stay true.
const sourceWalk = "docs/reading-the-source.md"

var (
	// walkRowRE finds a table row: | `file.go` | `fn`, `Type.Method` | ... |
	walkRowRE = regexp.MustCompile("(?m)^\\|\\s*`([^`]+\\.go)`\\s*\\|([^|]*)\\|")
	walkFnRE  = regexp.MustCompile("`([A-Za-z_][A-Za-z0-9_.]*)`")
)

func TestReadingTheSource_NamesExist(t *testing.T) {
	page, err := os.ReadFile(filepath.Join(root, sourceWalk))
	if err != nil {
		t.Fatal(err)
	}
	rows := walkRowRE.FindAllStringSubmatch(string(page), -1)
	if len(rows) < 10 {
		t.Fatalf("%s: found %d file rows, want the whole walk", sourceWalk, len(rows))
	}
	for _, row := range rows {
		file := row[1]
		src, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Errorf("%s names %s: %v", sourceWalk, file, err)
			continue
		}
		for _, m := range walkFnRE.FindAllStringSubmatch(row[2], -1) {
			if !defines(string(src), m[1]) {
				t.Errorf("%s: %s defines no %s (the code moved: change the page)", sourceWalk, file, m[1])
			}
		}
	}
}

// defines says whether src declares the function name or, for
// "Type.Method", that method.
func defines(src, name string) bool {
	pattern := `(?m)^func ` + regexp.QuoteMeta(name) + `[\[(]`
	if typ, method, ok := strings.Cut(name, "."); ok {
		pattern = `(?m)^func \(\w+ \*?` + regexp.QuoteMeta(typ) + `\) ` + regexp.QuoteMeta(method) + `\(`
	} else {
		// A method named without its type.
		pattern += `|(?m)^func \(\w+ \*?\w+\) ` + regexp.QuoteMeta(name) + `\(`
	}
	return regexp.MustCompile(pattern).MatchString(src)
}
