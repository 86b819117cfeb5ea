package writer

import (
	"context"
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
	lock *spool.ConsumerLock // OpenSpoolSource's; nil for NewSpoolSource
}

// NewSpoolSource reads the spool through r (opened without Inspect: the
// writer releases what it has written). It takes no consumer lock: the
// caller owns r; `meshingest write` uses OpenSpoolSource.
func NewSpoolSource(r *spool.Reader) *SpoolSource { return &SpoolSource{r: r} }

// OpenSpoolSource takes the spool folder's consumer lock
// (spool.LockConsumer), then opens a reader over the folder: two writers
// draining one spool (into two databases) would each release segments the
// other has not applied. Another consumer holding the folder is an error
// wrapping spool.ErrConsumerLocked. Close releases both.
func OpenSpoolSource(dir string, opts spool.ReaderOptions) (*SpoolSource, error) {
	lock, err := spool.LockConsumer(dir)
	if err != nil {
		return nil, err
	}
	r, err := spool.OpenReader(dir, opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &SpoolSource{r: r, lock: lock}, nil
}

// Close closes the reader and releases the consumer lock OpenSpoolSource
// took.
func (s *SpoolSource) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.r.Close()
	s.lock.Close()
	return err
}

// Reader is the spool reader the source reads through.
func (s *SpoolSource) Reader() *spool.Reader { return s.r }

func (s *SpoolSource) Open(after Position) (Cursor, error) { return s.r.Cursor(after) }

func (s *SpoolSource) Release(pos Position) error { return s.r.Release(pos) }

func (s *SpoolSource) WaitSealed(ctx context.Context) error { return s.r.WaitSealed(ctx) }

func (s *SpoolSource) Spool() spool.IdentityInfo { return s.r.IdentityInfo() }

// ReaderStats are the reader's counters since it was opened: above all
// the records it could not return (quarantined, set aside, lost), exact as
// far as the segments' trailers tell.
func (s *SpoolSource) ReaderStats() spool.ReaderStats { return s.r.Stats() }

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
