package spool

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// A segment is a bbolt file with one bucket, "records", keyed by Seq (8
// bytes, big endian) with the encoded record as value. A sealed segment has
// a trailer appended (trailer.go).
//
// bbolt settings and why:
//   - NoSync: the spool calls fdatasync itself, once per group, after the
//     commit. bbolt's own two fdatasyncs (pages, then meta) protect its meta
//     page; the spool never trusts the meta of an unsealed segment (recovery
//     rebuilds it from the records' own checksums, salvage.go), and a page
//     live in the last synced commit is never overwritten before the next
//     sync (the appender commits and syncs one group at a time, and bbolt
//     reuses a freed page only two commits later), so one fdatasync suffices.
//   - NoGrowSync: on Linux fdatasync(2) flushes a changed file size, so the
//     truncate+fsync bbolt does when the file grows buys nothing.
//   - A new segment starts as a copy of a template built in memory once, so
//     bbolt does not create the file itself (its init fdatasyncs).
//   - FillPercent 1.0 on the records bucket: keys only ever grow, so full
//     pages are never split again.
var recordsBucket = []byte("records")

const boltTimeout = time.Second

func boltOptions(f *os.File, readOnly bool) *bbolt.Options {
	return boltOptionsMmap(f, readOnly, 0)
}

// boltOptionsMmap sets the initial mmap size: a segment being written grows
// from 16 KiB, and without it bbolt remaps (and copies every node it has in
// memory out of the old map) at each doubling, which made commits of large
// groups several times slower. It reserves address space only.
func boltOptionsMmap(f *os.File, readOnly bool, mmapSize int) *bbolt.Options {
	return &bbolt.Options{
		InitialMmapSize: mmapSize,
		Timeout:         boltTimeout,
		NoSync:          true,
		NoGrowSync:      true,
		ReadOnly:        readOnly,
		OpenFile: func(string, int, os.FileMode) (*os.File, error) {
			return f, nil
		},
	}
}

// segmentTemplate returns the bytes of an empty segment: a fresh bbolt file
// with the records bucket, built by bbolt in a memfd so that no disk sync is
// paid for it.
func segmentTemplate() ([]byte, error) {
	fd, err := unix.MemfdCreate("meshingest-spool-template", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("build segment template: memfd_create: %w", err)
	}
	keep, err := unix.Dup(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("build segment template: %w", err)
	}
	kf := os.NewFile(uintptr(keep), "segment-template")
	defer kf.Close()
	db, err := bbolt.Open("segment-template", 0o600, boltOptions(os.NewFile(uintptr(fd), "segment-template"), false))
	if err != nil {
		return nil, fmt.Errorf("build segment template: %w", err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket(recordsBucket)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("build segment template: %w", err)
	}
	fi, err := kf.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, fi.Size())
	if _, err := kf.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("build segment template: %w", err)
	}
	return b, nil
}

// segmentWriter is an open, unsealed segment.
type segmentWriter struct {
	id    uint64
	spool Identity // written into the trailer
	path  string
	db    *bbolt.DB
	file  *os.File // bbolt's file, for the appender's own fdatasync
	sum   segmentSummary
	size  int64 // bbolt data size after the last commit
	// sealAt is when the segment reaches its maximum age.
	sealAt time.Time
}

// createSegment creates path (which must not exist) from the template and
// opens it in bbolt, as segment id of the spool named spool. Nothing is
// synced.
func createSegment(path string, id uint64, spool Identity, tmpl []byte, mmapSize int) (*segmentWriter, error) {
	f, err := openSpoolFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, &Error{Op: "create segment", Path: path, Err: err}
	}
	if _, err := f.WriteAt(tmpl, 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, &Error{Op: "create segment", Path: path, Err: err, Hint: hintForWriteError(err)}
	}
	db, err := bbolt.Open(path, 0o600, boltOptionsMmap(f, false, mmapSize))
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, &Error{Op: "open new segment", Path: path, Err: err}
	}
	return &segmentWriter{id: id, spool: spool, path: path, db: db, file: f, size: int64(len(tmpl))}, nil
}

// put commits the encoded records in one bbolt transaction (not synced).
func (w *segmentWriter) put(encs [][]byte) error {
	var sum segmentSummary
	err := w.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(recordsBucket)
		if b == nil {
			return fmt.Errorf("%w: segment has no records bucket", ErrCorrupt)
		}
		b.FillPercent = 1.0
		sum = w.sum
		for _, enc := range encs {
			seq := recordSeq(enc)
			if err := b.Put(seqKey(seq), enc); err != nil {
				return err
			}
			sum.add(seq, recordTime(enc))
		}
		w.size = tx.Size()
		return nil
	})
	if err != nil {
		return &Error{Op: "commit to segment", Path: w.path, Err: err, Hint: hintForWriteError(err)}
	}
	w.sum = sum
	return nil
}

func (w *segmentWriter) fdatasync() error {
	if err := w.db.Sync(); err != nil {
		return &Error{Op: "fdatasync segment", Path: w.path, Err: err, Hint: hintForWriteError(err)}
	}
	return nil
}

// close closes the bbolt handle; the file keeps its last committed state.
func (w *segmentWriter) close() error {
	if w.db == nil {
		return nil
	}
	err := w.db.Close()
	w.db, w.file = nil, nil
	return err
}

// finish closes the segment and appends its trailer, then calls sync to
// make the file durable. The caller renames it to its sealed name.
func (w *segmentWriter) finish(sync func(*os.File) error) error {
	if err := w.close(); err != nil {
		return &Error{Op: "close segment", Path: w.path, Err: err}
	}
	f, err := openSpoolFile(w.path, os.O_RDWR, 0)
	if err != nil {
		return &Error{Op: "seal segment", Path: w.path, Err: err}
	}
	defer f.Close()
	if err := appendTrailer(f, w.sum, w.spool); err != nil {
		return &Error{Op: "seal segment", Path: w.path, Err: err, Hint: hintForWriteError(err)}
	}
	if err := sync(f); err != nil {
		return &Error{Op: "fdatasync segment", Path: w.path, Err: err, Hint: hintForWriteError(err)}
	}
	return nil
}

func fdatasyncFile(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

func hintForWriteError(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "the disk is full: free space or lower spool.maxBytes; the spool refuses appends until then"
	case errors.Is(err, syscall.EROFS):
		return "the file system is read-only"
	case errors.Is(err, syscall.EIO):
		return "I/O error: check the disk (dmesg)"
	}
	return ""
}
