package writer

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// Position and Record are the spool's: the writer stores a Position in the
// database and maps each Record to rows.
type (
	Position = spool.Position
	Record   = spool.Record
)

// SpoolSource is a Source over a spool folder.
type SpoolSource struct {
	r    *spool.Reader
	lock *fileLock // the folder's consumer lock (OpenSpoolSource); nil for NewSpoolSource
}

// NewSpoolSource reads the spool through r (opened without Inspect: the
// writer releases what it has written). It takes no consumer lock: the
// caller owns r; `meshingest write` uses OpenSpoolSource.
func NewSpoolSource(r *spool.Reader) *SpoolSource { return &SpoolSource{r: r} }

// OpenSpoolSource takes the spool folder's consumer lock, then opens a
// reader over the folder: two writers draining one spool (into two
// databases) would each release segments the other has not applied. The
// lock comes first because opening a reader already changes the folder (it
// deletes what a reader's repair left half done). Another consumer holding
// the folder is a *LockError (errors.Is ErrLocked). Close releases the
// lock.
func OpenSpoolSource(dir string, opts spool.ReaderOptions) (*SpoolSource, error) {
	lock, err := lockSpoolConsumer(dir)
	if err != nil {
		return nil, err
	}
	r, err := spool.OpenReader(dir, opts)
	if err != nil {
		lock.release()
		return nil, err
	}
	return &SpoolSource{r: r, lock: lock}, nil
}

// Close releases the consumer lock OpenSpoolSource took.
func (s *SpoolSource) Close() error {
	s.lock.release()
	return nil
}

// Reader is the spool reader the source reads through.
func (s *SpoolSource) Reader() *spool.Reader { return s.r }

// SpoolConsumerLockFile is the consumer lock's file in a spool folder.
const SpoolConsumerLockFile = "writer.lock"

// lockSpoolConsumer takes the spool folder's consumer lock: an flock on
// <dir>/writer.lock, held while the source is open. It belongs to the spool
// package (which owns the folder's files) and moves there as
// spool.LockConsumer; until then the writer takes it here, with the same
// file and the same semantics, so the move changes no deployed folder.
func lockSpoolConsumer(dir string) (*fileLock, error) {
	// The spool's own folder mode; OpenReader checks it afterwards.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &spool.Error{Op: "create spool folder", Path: dir, Err: err, Hint: "create it, owned by the user meshingest runs as, mode 0700"}
	}
	return acquireLock(filepath.Join(dir, SpoolConsumerLockFile), "spool folder "+dir,
		"only one writer may drain a spool folder (it deletes what it has written); stop the other one, or give each writer its own spoolDir and receiver")
}

func (s *SpoolSource) Open(after Position) (Cursor, error) { return s.r.Cursor(after) }

func (s *SpoolSource) Release(pos Position) error { return s.r.Release(pos) }

func (s *SpoolSource) WaitSealed(ctx context.Context) error { return s.r.WaitSealed(ctx) }

func (s *SpoolSource) SavePosition(pos Position) error {
	return spool.WriteWriterPosition(s.r.Dir(), pos)
}

// Depth is the appender's own figure (it counts the active segment too,
// from the advisory position the writer saves after every commit), when
// the appender published it in the last few seconds; else unknown.
func (s *SpoolSource) Depth(Position) int64 {
	st, err := spool.ReadAppenderStatus(s.r.Dir())
	if err != nil || st.Closed || time.Since(st.UpdatedAt) > 5*time.Second {
		return -1
	}
	return int64(st.Stats.DepthRecords)
}
