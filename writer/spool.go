package writer

import (
	"context"
	"errors"
	"sync"

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
	dir  string
	opts spool.ReaderOptions

	// mu guards r, lock and before: the drain goroutine replaces them
	// when the folder was replaced (reopenIfReplaced), while the stats
	// goroutine reads the reader's counters.
	mu   sync.Mutex
	r    *spool.Reader
	lock *spool.ConsumerLock // OpenSpoolSource's; nil for NewSpoolSource
	// before is what the readers closed by reopenIfReplaced counted.
	before spool.ReaderStats

	depth *spool.UnwrittenGauge
}

// NewSpoolSource reads the spool through r (opened without Inspect: the
// writer releases what it has written). It takes no consumer lock: the
// caller owns r; `meshingest write` uses OpenSpoolSource. Since the caller
// owns r, such a source is not reopened when its folder is replaced.
func NewSpoolSource(r *spool.Reader) *SpoolSource {
	return &SpoolSource{dir: r.Dir(), r: r, depth: spool.NewUnwrittenGauge(r.Dir())}
}

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
	return &SpoolSource{dir: dir, opts: opts, r: r, lock: lock, depth: spool.NewUnwrittenGauge(dir)}, nil
}

// Close closes the reader and releases the consumer lock OpenSpoolSource
// took.
func (s *SpoolSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.r.Close()
	s.lock.Close()
	return err
}

// Reader is the spool reader the source reads through now.
func (s *SpoolSource) Reader() *spool.Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r
}

func (s *SpoolSource) Open(after Position) (Cursor, error) { return s.Reader().Cursor(after) }

func (s *SpoolSource) Release(pos Position) error { return s.Reader().Release(pos) }

func (s *SpoolSource) WaitSealed(ctx context.Context) error { return s.Reader().WaitSealed(ctx) }

func (s *SpoolSource) Spool() spool.IdentityInfo { return s.Reader().IdentityInfo() }

// ReaderStats are the reader's counters since the source was opened
// (summed over the readers a replaced folder made it open): above all the
// records it could not return (quarantined, set aside, lost), exact as far
// as the segments' trailers tell.
func (s *SpoolSource) ReaderStats() spool.ReaderStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.before.Add(s.r.Stats())
}

// SavePosition writes the advisory position file, unless the folder was
// replaced: the position of the old spool means nothing in the new one,
// and would make a folder without an identity yet look like a legacy one.
func (s *SpoolSource) SavePosition(pos Position) error {
	r := s.Reader()
	if !pos.Spool.IsZero() && pos.Spool != r.Identity() {
		return nil
	}
	if err := r.CheckReplaced(); errors.Is(err, spool.ErrSpoolReplaced) {
		return nil
	}
	return spool.WriteWriterPosition(s.dir, pos)
}

// reopenIfReplaced opens the folder anew when the reader found it
// replaced (spool.ErrSpoolReplaced): the consumer lock again (the old one
// is on the deleted folder) and a reader of the spool now there, under its
// own identity. It returns the identity read before, and whether it
// reopened. A source that does not own its reader (NewSpoolSource) is not
// reopened.
func (s *SpoolSource) reopenIfReplaced() (spool.IdentityInfo, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.r.IdentityInfo()
	if s.lock == nil || !errors.Is(s.r.CheckReplaced(), spool.ErrSpoolReplaced) {
		return prev, false, nil
	}
	lock, err := spool.LockConsumer(s.dir)
	if err != nil {
		return prev, false, err
	}
	r, err := spool.OpenReader(s.dir, s.opts)
	if err != nil {
		lock.Close()
		return prev, false, err
	}
	s.before = s.before.Add(s.r.Stats())
	s.r.Close()
	s.lock.Close()
	s.r, s.lock = r, lock
	return prev, true, nil
}

// Depth is what the folder holds after the writer's position after, as
// the segments' trailers and the appender's status tell
// (spool.UnwrittenGauge); -1 unknown.
func (s *SpoolSource) Depth(after Position) int64 { return s.depth.After(after) }
