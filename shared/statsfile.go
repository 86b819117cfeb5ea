package shared

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafeStatsPath is returned when something other than a plain file sits
// where a stats file's temporary file goes (a symlink, a FIFO, a directory,
// a device), or when the file opened there is not one of ours. Writing
// through it could clobber someone else's file or block forever.
var ErrUnsafeStatsPath = errors.New("unsafe stats file path")

// WriteFileAtomic replaces path with data so that a reader sees either the
// old or the new content, never a mix: it writes path.tmp and renames it
// over path. It never blocks on what it finds at path.tmp and never writes
// through it: a regular file left there (by a crash, or planted as a hard
// link to another file) is unlinked, which leaves any other name of it
// untouched; anything else (symlink, FIFO, directory, device) is refused
// with ErrUnsafeStatsPath and left for the operator. The new file is then
// created with O_EXCL|O_NOFOLLOW, mode 0600, so something planted between
// the two steps makes the create fail instead of being opened. It does not
// fsync: stats files are rewritten every second and a lost one costs
// nothing.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := removeStaleTemp(path, tmp); err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w: %s appeared while it was being replaced; is another process writing this stats file?", path, ErrUnsafeStatsPath, tmp)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write %s: %w; create the folder %s or choose another path", path, err, filepath.Dir(path))
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := checkOwnPlainFile(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	return nil
}

// removeStaleTemp clears tmp for a fresh O_EXCL create: a regular file is
// unlinked (never opened, so never truncated), anything else refused.
func removeStaleTemp(path, tmp string) error {
	fi, err := os.Lstat(tmp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("write %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("write %s: %w: %s is not a regular file (%s); remove it", path, ErrUnsafeStatsPath, tmp, fi.Mode().Type())
	}
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: remove the stale %s: %w", path, tmp, err)
	}
	return nil
}

// checkOwnPlainFile checks the file just created: with O_EXCL it is ours,
// so a failure here means the file system does not behave as expected.
func checkOwnPlainFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file (%s); remove it", ErrUnsafeStatsPath, f.Name(), fi.Mode().Type())
	case ok && st.Nlink > 1:
		return fmt.Errorf("%w: %s has %d hard links; remove it", ErrUnsafeStatsPath, f.Name(), st.Nlink)
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: %s is owned by uid %d, not by us (%d); remove it or choose another path", ErrUnsafeStatsPath, f.Name(), st.Uid, os.Geteuid())
	}
	return nil
}

// WriteJSONAtomic marshals v and writes it with WriteFileAtomic.
func WriteJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return WriteFileAtomic(path, append(data, '\n'))
}
