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
	r *spool.Reader
}

// NewSpoolSource reads the spool through r (opened without Inspect: the
// writer releases what it has written).
func NewSpoolSource(r *spool.Reader) *SpoolSource { return &SpoolSource{r: r} }

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
