package shared

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafeStatsPath is returned when the temporary file beside a stats file
// is not a plain file of ours: a symlink, a FIFO, a hard link or a file owned
// by another user. Writing through it could clobber someone else's file.
var ErrUnsafeStatsPath = errors.New("unsafe stats file path")

// WriteFileAtomic replaces path with data so that a reader sees either the
// old or the new content, never a mix: it writes path.tmp (opened with
// O_NOFOLLOW, mode 0600, refused unless it is a regular file we own with one
// link) and renames it over path. It does not fsync: stats files are
// rewritten every second and a lost one costs nothing.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return fmt.Errorf("write %s: %w: %s is a symlink; remove it", path, ErrUnsafeStatsPath, tmp)
		}
		if errors.Is(err, os.ErrNotExist) {
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
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	return nil
}

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
