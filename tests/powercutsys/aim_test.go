package powercutsys

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// aimFolder is a lower folder with the spool and db folders the aims
// watch; it returns the folder and its spool folder.
func aimFolder(t *testing.T) (string, string) {
	t.Helper()
	lower := t.TempDir()
	for _, d := range []string{"spool", "db"} {
		if err := os.Mkdir(filepath.Join(lower, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return lower, filepath.Join(lower, "spool")
}

func writeFile(t *testing.T, path string, n int, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// A group commit of the low-latency profile writes the group as a segment
// of its own under a .tmp name; of the low-wear profile, it grows the
// .active segment (or makes a new one). Each is a group commit seen.
func TestHappened_GroupCommit_BothProfiles(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		before func(dir string)
		after  func(dir string)
		want   bool
	}{
		{"low-latency: a .tmp segment appears", func(string) {},
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000007.tmp"), 4096, t0) }, true},
		{"low-latency: the .tmp segment grows",
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000007.tmp"), 4096, t0) },
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000007.tmp"), 8192, t0) }, true},
		{"low-wear: the .active segment is written in place",
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000007.active"), 8192, t0) },
			func(dir string) {
				writeFile(t, filepath.Join(dir, "00000000000000000007.active"), 8192, t0.Add(time.Millisecond))
			}, true},
		{"low-wear: a new .active segment", func(string) {},
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000009.active"), 8192, t0) }, true},
		{"nothing changed",
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000007.active"), 8192, t0) },
			func(string) {}, false},
		{"only a sealed segment appears (a seal, not a group commit)", func(string) {},
			func(dir string) { writeFile(t, filepath.Join(dir, "00000000000000000007.seg"), 8192, t0) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lower, dir := aimFolder(t)
			c.before(dir)
			a := readFileState(lower)
			c.after(dir)
			if got := happened("group commit", a, readFileState(lower)); got != c.want {
				t.Fatalf("happened = %v, want %v", got, c.want)
			}
		})
	}
}
