package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// File names in the spool folder (see docs/internals.md).
const (
	sealedExt     = ".seg"       // sealed segment: immutable, read by the writer
	activeExt     = ".active"    // the appender's active segment
	tmpExt        = ".tmp"       // a segment being written whole, invisible until renamed
	recoveredExt  = ".recovered" // a segment rebuilt from an unsealed one by recovery
	repairingExt  = ".repairing" // a sealed segment being rebuilt by a reader's repair
	lockFile      = "appender.lock"
	statusFile    = "appender-status.json"
	sequenceFile  = "sequence"
	identityFile  = "identity"
	positionFile  = "writer-position.json"
	quarantineDir = "quarantine"

	idDigits = 20
)

func segmentName(id uint64, ext string) string {
	return fmt.Sprintf("%0*d%s", idDigits, id, ext)
}

// parseSegmentName splits "00000000000000000042.seg" into 42 and ".seg".
func parseSegmentName(name string) (id uint64, ext string, ok bool) {
	if len(name) <= idDigits || name[0] == '.' {
		return 0, "", false
	}
	id, err := strconv.ParseUint(name[:idDigits], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return id, name[idDigits:], true
}

// segmentFile is one segment file found in the folder.
type segmentFile struct {
	ID   uint64
	Ext  string
	Name string
}

// listSegments returns the segment files with one of exts, in id order.
func listSegments(dir string, exts ...string) ([]segmentFile, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, &Error{Op: "list spool", Path: dir, Err: err, Hint: "check spoolDir in the configuration"}
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, &Error{Op: "list spool", Path: dir, Err: err}
	}
	var segs []segmentFile
	for _, n := range names {
		id, ext, ok := parseSegmentName(n)
		if !ok {
			continue
		}
		for _, e := range exts {
			if ext == e {
				segs = append(segs, segmentFile{ID: id, Ext: ext, Name: n})
				break
			}
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].ID < segs[j].ID })
	return segs, nil
}

// prepareDir creates the spool folder (0700) and its quarantine folder, or
// checks and tightens an existing one. A folder owned by another user is
// refused: its owner could swap segments under us.
func prepareDir(dir string) error {
	if err := mkdirAllSynced(dir); err != nil {
		return &Error{Op: "create spool folder", Path: dir, Err: err, Hint: "create it, owned by the user meshingest runs as, mode 0700"}
	}
	if err := checkOwnDir(dir); err != nil {
		return err
	}
	q := filepath.Join(dir, quarantineDir)
	if err := os.Mkdir(q, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return &Error{Op: "create quarantine folder", Path: q, Err: err}
	}
	return checkOwnDir(q)
}

// mkdirAllSynced is os.MkdirAll (mode 0700) that also fsyncs the parent
// of each folder it creates: until then the new folder's name is not
// durable, and a power cut would take the spool folder with every record
// already reported durable in it.
func mkdirAllSynced(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil // made meanwhile, or not a folder: checkOwnDir says which
		}
		return err
	}
	return syncDir(parent)
}

func checkOwnDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return &Error{Op: "check spool folder", Path: dir, Err: err}
	}
	if !fi.IsDir() {
		return &Error{Op: "check spool folder", Path: dir, Err: fmt.Errorf("%w: not a folder", ErrUnsafeFile), Hint: "point spoolDir at a folder"}
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != os.Geteuid() {
		return &Error{Op: "check spool folder", Path: dir, Err: fmt.Errorf("%w: owned by uid %d, not by us (uid %d)", ErrUnsafeFile, st.Uid, os.Geteuid()),
			Hint: "chown it to the user meshingest runs as, or choose another spoolDir"}
	}
	if fi.Mode().Perm() != 0o700 {
		// The spool holds everything observers sent; it is ours alone.
		if err := os.Chmod(dir, 0o700); err != nil {
			return &Error{Op: "set spool folder mode 0700", Path: dir, Err: err}
		}
	}
	return nil
}

// checkOwnFile refuses anything but a regular file owned by us.
func checkOwnFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%s)", ErrUnsafeFile, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: owned by uid %d, not by us (uid %d)", ErrUnsafeFile, st.Uid, os.Geteuid())
	}
	return nil
}

const unsafeHint = "a spool file must be a plain file owned by the user meshingest runs as; move it out of the spool folder (or chown it) and retry"

// openSpoolFile opens a file in the spool folder without following a
// symlink and refuses anything that is not a plain file of ours.
func openSpoolFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &Error{Op: "open", Path: path, Err: fmt.Errorf("%w: a symlink", ErrUnsafeFile), Hint: unsafeHint}
		}
		return nil, err
	}
	if err := checkOwnFile(f); err != nil {
		f.Close()
		return nil, &Error{Op: "open", Path: path, Err: err, Hint: unsafeHint}
	}
	return f, nil
}

// syncDir fsyncs a folder, making the names created, renamed or removed in
// it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// isSegmentExt reports whether ext names a segment file of any state.
func isSegmentExt(ext string) bool {
	switch ext {
	case sealedExt, activeExt, tmpExt, recoveredExt, repairingExt:
		return true
	}
	return false
}

// quarantineBytes sums the sizes of the files in the quarantine folder.
func quarantineBytes(dir string) (total int64) {
	entries, _ := os.ReadDir(filepath.Join(dir, quarantineDir))
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
	}
	return total
}

func trimExt(name string) string { return strings.TrimSuffix(name, filepath.Ext(name)) }
