// Package docs_test checks the repository's markdown: every relative link
// resolves (the file exists, and a #fragment names a heading in it), and
// the README stays a first read.
package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// root is the repository's top folder, two levels above this package.
const root = "../.."

// readmeMaxLines keeps README.md a first read; the details live in docs/.
const readmeMaxLines = 200

var (
	// linkRE finds inline links and images: [text](target) and ![alt](target).
	linkRE = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// headingRE finds ATX headings.
	headingRE = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	// fenceRE finds fenced code blocks, whose text is not markdown.
	fenceRE = regexp.MustCompile("(?ms)^\\s*```.*?^\\s*```")
	// codeRE finds inline code spans.
	codeRE = regexp.MustCompile("`[^`\n]*`")
)

func TestMarkdown_RelativeLinksResolve(t *testing.T) {
	files := markdownFiles(t)
	if len(files) < 5 {
		t.Fatalf("found only %d markdown files under %s", len(files), root)
	}
	anchors := map[string]map[string]bool{}
	for _, f := range files {
		for _, target := range links(t, f) {
			if isExternal(target) {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: %s does not exist", rel(f), target, rel(dest))
					continue
				}
			}
			if frag == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			if anchors[dest] == nil {
				anchors[dest] = headingAnchors(t, dest)
			}
			if !anchors[dest][frag] {
				t.Errorf("%s: link %q: %s has no heading #%s", rel(f), target, rel(dest), frag)
			}
		}
	}
}

func TestReadme_IsAFirstRead(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines, more than %d: move details to a page under docs/ and link it", n, readmeMaxLines)
	}
}

// markdownFiles lists every .md file of the repository but .git's.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// links returns the link targets of a markdown file, outside code.
func links(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := codeRE.ReplaceAllString(fenceRE.ReplaceAllString(string(b), ""), "")
	var out []string
	for _, m := range linkRE.FindAllStringSubmatch(text, -1) {
		out = append(out, strings.Trim(m[1], "<>"))
	}
	return out
}

func isExternal(target string) bool {
	i := strings.Index(target, ":")
	return i > 0 && !strings.ContainsAny(target[:i], "/#.")
}

// headingAnchors returns the fragment ids GitHub gives a file's headings.
func headingAnchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	seen := map[string]int{}
	for _, m := range headingRE.FindAllStringSubmatch(fenceRE.ReplaceAllString(string(b), ""), -1) {
		id := slug(m[1])
		if n := seen[id]; n > 0 {
			ids[id+"-"+strconv.Itoa(n)] = true
		} else {
			ids[id] = true
		}
		seen[id]++
	}
	return ids
}

// slug is GitHub's heading id: lower case, punctuation dropped, spaces to
// hyphens (markup characters like backquotes dropped with the punctuation).
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func rel(p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}
