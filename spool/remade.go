package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshingest/meshingest/shared"
	"go.etcd.io/bbolt"
)

// The spool folder can be deleted under a running appender (`rm -rf`, a
// clean-up script): every later group would fail, and the receiver would
// leave QoS 1 messages with the broker and drop QoS 0 ones until it is
// restarted. Instead the appender notices (the folder, or its lock file,
// is not the one it opened) and makes the folder again as a new spool: a
// new identity, Seqs going on from where they were (a new spool need not
// start at 1; its identity tells it apart, and the writer starts a spool
// it has not seen at its first record). What it still holds of the old
// folder is written into the new one: the records of the active segment
// (the open file outlives its name; the writer never reads it) and the
// group being written, unless that group was already sealed in the old
// folder, where the writer may have read it: writing it again could apply
// it twice, so it fails instead (a QoS 1 message is redelivered, and the
// writer recognises a redelivery it applied). Either way a group is
// reported durable only once the folder it is in is the appender's, so a
// QoS 1 message is never acknowledged for a record that is in no folder.
// What the old folder held sealed and undrained is gone with it and
// counted (RecordsLostWithFolder). The writer, for its part,
// finds its folder replaced and reopens it (replaced.go).
//
// A folder found in its place that already holds segments (another spool
// moved in) is not written into: the group fails, as before, and the
// receiver says it is not ready until it is restarted.

// appenderFolder is the folder the appender opened or last remade.
type appenderFolder struct {
	dir, lock fileID
	// scannedAppended is AppendedRecords as of the last housekeeping scan
	// of this folder, whose depth figures count what it held.
	scannedAppended uint64
}

func statFolder(dir string) (appenderFolder, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return appenderFolder{}, &Error{Op: "open spool", Path: dir, Err: err}
	}
	li, err := os.Lstat(filepath.Join(dir, lockFile))
	if err != nil {
		return appenderFolder{}, &Error{Op: "open spool", Path: filepath.Join(dir, lockFile), Err: err}
	}
	return appenderFolder{dir: fileIDOf(fi), lock: fileIDOf(li)}, nil
}

// folderIsOurs reports whether the spool folder is still the one the
// appender opened: the same folder (device, inode) holding the same lock
// file. Any other error than the folder or the lock file missing (a
// permission, an I/O error) counts as ours: a spool is not made anew on a
// doubt.
func (a *Appender) folderIsOurs() bool {
	a.mu.Lock()
	want := a.folder
	a.mu.Unlock()
	fi, err := os.Stat(a.dir)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	if d := fileIDOf(fi); d.dev != want.dir.dev || d.ino != want.dir.ino {
		return false
	}
	li, err := os.Lstat(filepath.Join(a.dir, lockFile))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	l := fileIDOf(li)
	return l.dev == want.lock.dev && l.ino == want.lock.ino
}

// seqRange is the Seqs from first to last; the zero range holds none.
type seqRange struct{ first, last uint64 }

// remakeResult says whether remakeFolder made the folder again (else it
// found the folder its own, only its lock file deleted, and locked it
// again), and which Seqs of the active segment it wrote into it.
type remakeResult struct {
	remade  bool
	rescued seqRange
}

func (r seqRange) holds(seq uint64) bool { return r.first != 0 && seq >= r.first && seq <= r.last }

// remakeFolder makes the spool folder again as a new spool (see above) and
// writes the active segment's records into it, sealed. Run on the
// appender goroutine.
func (a *Appender) remakeFolder() (remakeResult, error) {
	if a.awaitEmptied() {
		return remakeResult{}, a.relock()
	}
	// prepareDir fsyncs the parent when it makes the folder; it is synced
	// again in case another process made it and did not.
	if err := prepareDir(a.dir); err != nil {
		return remakeResult{}, err
	}
	if err := syncDir(filepath.Dir(a.dir)); err != nil {
		return remakeResult{}, &Error{Op: "fsync parent of spool folder", Path: a.dir, Err: err, Hint: hintForWriteError(err)}
	}
	segs, err := listSegments(a.dir, sealedExt, activeExt, tmpExt, recoveredExt, repairingExt)
	if err != nil {
		return remakeResult{}, err
	}
	if len(segs) > 0 {
		return remakeResult{}, &Error{Op: "remake spool folder", Path: a.dir,
			Err:  fmt.Errorf("the folder was replaced under the receiver by one holding %d segments", len(segs)),
			Hint: "another spool was put in its place: restart the receiver to append to it"}
	}
	lock, err := lockAppender(a.dir)
	if err != nil {
		return remakeResult{}, err
	}
	id, err := a.newFolderIdentity()
	if err == nil {
		var f appenderFolder
		if f, err = statFolder(a.dir); err == nil {
			a.takeFolder(id, f, lock)
		}
	}
	if err != nil {
		lock.Close()
		return remakeResult{}, err
	}
	// The sequence file of the new folder: above every Seq issued.
	a.mu.Lock()
	next := a.nextSeq
	a.mu.Unlock()
	a.reserved = 0
	if err := a.reserveThrough(next); err != nil {
		return remakeResult{}, err
	}
	// The stranded segment's file is gone and closed: its records were
	// counted as held by the old folder.
	a.stranded = nil
	var rescued seqRange
	if w := a.active; w != nil {
		encs, rerr := w.records()
		w.close()
		a.active = nil
		a.mu.Lock()
		a.publishActiveLocked()
		a.mu.Unlock()
		if rerr == nil && len(encs) > 0 {
			if err := a.writeWholeSegment(encs); err != nil {
				return remakeResult{}, err
			}
			rescued = seqRange{recordSeq(encs[0]), recordSeq(encs[len(encs)-1])}
		}
		a.mu.Lock()
		a.stats.RecordsLostWithFolder -= min(a.stats.RecordsLostWithFolder, uint64(len(encs)))
		a.mu.Unlock()
	}
	a.dirDirty = true
	return remakeResult{remade: true, rescued: rescued}, a.syncFolder()
}

// emptyingWait bounds how long remakeFolder waits for a `rm -rf` under
// way to finish: the folder it opened still there, its lock file gone,
// segments left. Appends queue meanwhile (Options.QueueMaxBytes). A
// variable for the tests, whose `rm -rf` a loaded machine can delay longer.
var emptyingWait = 2 * time.Second

// awaitEmptied waits, up to emptyingWait, while the folder the appender
// opened is being emptied: writing into it then would only have the rest
// of the `rm -rf` delete the new files too, or make the `rm -rf` itself
// fail on a folder that is not empty. The deletion is over when the folder
// is gone or replaced, or has stayed empty for emptiedSettle (`rm -rf
// spool/*` leaves it; a whole-folder `rm -rf` removes it a moment after
// its last file). It returns true when the folder is still the
// appender's and still holds segments after the wait: not deleted, only
// its lock file was.
func (a *Appender) awaitEmptied() bool {
	a.mu.Lock()
	want := a.folder.dir
	a.mu.Unlock()
	var emptySince time.Time
	for deadline := time.Now().Add(emptyingWait); ; time.Sleep(20 * time.Millisecond) {
		fi, err := os.Stat(a.dir)
		if err != nil {
			return false
		}
		if d := fileIDOf(fi); d.dev != want.dev || d.ino != want.ino {
			return false
		}
		entries, err := os.ReadDir(a.dir)
		if err != nil {
			return false
		}
		if len(entries) == 0 {
			if emptySince.IsZero() {
				emptySince = time.Now()
			}
			if time.Since(emptySince) >= emptiedSettle {
				return false
			}
			continue
		}
		emptySince = time.Time{}
		if !time.Now().Before(deadline) {
			segs, err := listSegments(a.dir, sealedExt, activeExt, tmpExt, recoveredExt, repairingExt)
			return err == nil && len(segs) > 0
		}
	}
}

// emptiedSettle is how long an emptied folder must stay empty before the
// appender takes the deletion for finished and writes into it.
const emptiedSettle = 100 * time.Millisecond

// relock takes the appender lock again in the folder the appender opened,
// whose lock file alone was deleted; the spool goes on as it was.
func (a *Appender) relock() error {
	lock, err := lockAppender(a.dir)
	if err != nil {
		return err
	}
	f, err := statFolder(a.dir)
	if err != nil {
		lock.Close()
		return err
	}
	a.mu.Lock()
	a.folder.dir, a.folder.lock = f.dir, f.lock
	a.mu.Unlock()
	a.lock.Close()
	a.lock = lock
	return nil
}

// newFolderIdentity gives the remade folder a new identity, or returns the
// one another process (the writer's reader) gave it meanwhile. It is never
// taken for a legacy folder, whatever files were written into it since.
func (a *Appender) newFolderIdentity() (IdentityInfo, error) {
	info, err := ReadIdentity(a.dir)
	if err == nil && info.Copied {
		return IdentityInfo{}, &Error{Op: "remake spool folder", Path: a.dir, Err: ErrCopiedSpool}
	}
	if !errors.Is(err, ErrNoIdentity) {
		return info, err
	}
	info = IdentityInfo{Format: identityFormat, CreatedAt: time.Now().UTC()}
	if info.ID, err = newIdentity(); err != nil {
		return IdentityInfo{}, &Error{Op: "make identity", Path: a.dir, Err: err}
	}
	if info.FolderInode, err = folderInode(a.dir); err != nil {
		return IdentityInfo{}, &Error{Op: "make identity", Path: a.dir, Err: err}
	}
	return writeIdentity(a.dir, info)
}

// takeFolder makes the remade folder the appender's and counts what the
// deleted one held undrained, as of the last scan of it and what was
// written since (the active segment's records, written anew, are taken
// off by the caller).
func (a *Appender) takeFolder(id IdentityInfo, f appenderFolder, lock *shared.FileLock) {
	a.mu.Lock()
	held := a.stats.DepthRecords + (a.stats.AppendedRecords - a.folder.scannedAppended)
	f.scannedAppended = a.stats.AppendedRecords
	a.id, a.folder = id, f
	a.stats.FoldersRemade++
	a.stats.RecordsLostWithFolder += held
	a.stats.DepthSegments, a.stats.DepthRecords, a.stats.DepthBytes = 0, 0, 0
	a.mu.Unlock()
	a.lock.Close()
	a.lock = lock
}

// records returns the encoded records of an open segment, in Seq order.
func (w *segmentWriter) records() ([][]byte, error) {
	var out [][]byte
	err := w.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(recordsBucket)
		if b == nil {
			return fmt.Errorf("%w: segment has no records bucket", ErrCorrupt)
		}
		return b.ForEach(func(_, v []byte) error {
			out = append(out, append([]byte(nil), v...))
			return nil
		})
	})
	return out, err
}
