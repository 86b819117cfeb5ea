package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// A running consumer's spool folder can be replaced under it: deleted
// (`rm -rf`) and made anew by the receiver, or another spool moved into
// its place. The new folder is another spool, with its own identity and
// Seqs from 1: a reader that went on reading it under the identity it
// opened would take every segment there for one copied in from another
// spool and set it aside, so that nothing of the new spool is applied.
// The reader therefore remembers the folder (device and inode) and its
// identity file as it opened them, checks them before it lists segments,
// sets any aside, rebuilds one or releases any, and from the first
// mismatch on returns ErrSpoolReplaced: the consumer reopens the folder
// and reads the new spool under its own identity, from its first record
// (positions are per identity).
//
// A folder that is gone, not yet made again, is not a replacement: the
// error is the stat's (os.ErrNotExist), to be retried. The identity file
// rewritten with the same identity in the same folder (`spool identity
// --adopt`) is not one either.

// ErrSpoolReplaced means the spool folder is no longer the one the reader
// opened: open a new reader on it.
var ErrSpoolReplaced = errors.New("spool: folder replaced under the reader")

// openedFolder is what the reader saw of its folder at open.
type openedFolder struct {
	dir      fileID
	identity fileID // the identity file; its content is checked when it changes
	replaced error  // sticky once found: a replaced folder does not come back
}

type fileID struct {
	dev, ino, size   uint64
	mtimeNs, ctimeNs int64
}

func fileIDOf(fi os.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: uint64(st.Size),
		mtimeNs: st.Mtim.Nano(), ctimeNs: st.Ctim.Nano()}
}

// statOpened records the folder and identity file in dir as opened.
func statOpened(dir string) (openedFolder, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return openedFolder{}, &Error{Op: "open spool", Path: dir, Err: err}
	}
	ifi, err := os.Lstat(filepath.Join(dir, identityFile))
	if err != nil {
		return openedFolder{}, &Error{Op: "open spool", Path: filepath.Join(dir, identityFile), Err: err}
	}
	return openedFolder{dir: fileIDOf(fi), identity: fileIDOf(ifi)}, nil
}

// checkReplaced returns an error wrapping ErrSpoolReplaced once the folder
// is not the one the reader opened, the stat's error when it is gone, nil
// otherwise (and always for an inspecting reader, which changes nothing).
// It costs two stats while nothing changed, and a read of the identity
// file when that file changed.
func (r *Reader) checkReplaced() error {
	if r.opts.Inspect {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.opened.replaced; err != nil {
		return err
	}
	fi, err := os.Stat(r.dir)
	if err != nil {
		return &Error{Op: "open spool", Path: r.dir, Err: err, Hint: "the spool folder is gone; the writer waits for it to come back"}
	}
	if d := fileIDOf(fi); d.dev != r.opened.dir.dev || d.ino != r.opened.dir.ino {
		return r.replacedLocked(fmt.Sprintf("the folder is another one (inode %d, opened as %d)", d.ino, r.opened.dir.ino))
	}
	path := filepath.Join(r.dir, identityFile)
	ifi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return r.replacedLocked("its identity file is gone")
	}
	if err != nil {
		return &Error{Op: "check identity", Path: path, Err: err}
	}
	id := fileIDOf(ifi)
	if id == r.opened.identity {
		return nil
	}
	info, err := ReadIdentity(r.dir)
	switch {
	case errors.Is(err, ErrNoIdentity):
		return r.replacedLocked("its identity file is gone")
	case err != nil:
		return err
	case info.ID != r.id.ID:
		return r.replacedLocked("it is spool " + info.ID.String() + " now")
	}
	r.opened.identity = id // rewritten with the same identity
	return nil
}

func (r *Reader) replacedLocked(why string) error {
	r.opened.replaced = &Error{Op: "read spool", Path: r.dir, Err: fmt.Errorf("%w: opened as spool %s, %s", ErrSpoolReplaced, r.id.ID, why),
		Hint: "the folder was deleted and made anew, or another spool put in its place: reopen it to read the new spool from its first record"}
	r.stats.FolderReplaced++
	return r.opened.replaced
}

// CheckReplaced returns an error wrapping ErrSpoolReplaced when the folder
// is no longer the one the reader opened, the stat's error when it is
// gone, else nil: what a consumer asks before it reopens the folder.
func (r *Reader) CheckReplaced() error { return r.checkReplaced() }
