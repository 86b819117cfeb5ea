package spool

import (
	"time"
)

// Status is what `meshingest spool status` shows: the spool as the writer
// has yet to drain it. It reads sealed segments' trailers and the
// appender's status file only, so it never waits on the appender.
type Status struct {
	Dir string `json:"dir"`
	// Identity is the folder's identity file; nil when it has none yet
	// (the receiver or the writer gives it one when it opens the folder).
	Identity *IdentityInfo `json:"identity"`
	// Segments, Records and Bytes count what the writer has not drained
	// (as far as writer-position.json tells), the active segment included.
	Segments int        `json:"segments"`
	Records  uint64     `json:"records"`
	Bytes    int64      `json:"bytes"`
	Oldest   *time.Time `json:"oldest_received_at"`
	Newest   *time.Time `json:"newest_received_at"`

	Active          *SegmentInfo `json:"active_segment"`
	AppenderPID     int          `json:"appender_pid,omitempty"`
	AppenderRunning bool         `json:"appender_running"`
	// AppendedRecords is the appender's durable count since it started
	// (for rates); AppenderUpdated is when it last published.
	AppendedRecords uint64    `json:"appended_records"`
	AppenderUpdated time.Time `json:"appender_updated_at,omitempty"`
	Full            bool      `json:"full"`
	FullReason      string    `json:"full_reason,omitempty"`

	WriterPosition *Position `json:"writer_position"`

	SealedSegments   int       `json:"sealed_segments"`
	UnsealedSegments int       `json:"unsealed_segments"` // left by a dead appender
	DamagedSegments  int       `json:"damaged_segments"`
	Quarantined      int       `json:"quarantined"`
	TotalBytes       int64     `json:"total_bytes"` // every segment file, drained or not
	NextSeq          uint64    `json:"next_seq,omitempty"`
	At               time.Time `json:"at"`
}

// ListSegments lists every segment file: sealed ones with their trailer
// summaries, the active one from the appender's status file, and unsealed
// ones a dead appender left.
func ListSegments(dir string) ([]SegmentInfo, error) {
	sealed, err := scanSealed(dir, nil)
	if err != nil {
		return nil, err
	}
	others, err := listSegments(dir, activeExt, tmpExt)
	if err != nil {
		return nil, err
	}
	alive := AppenderAlive(dir)
	var st AppenderStatus
	if alive {
		st, _ = ReadAppenderStatus(dir)
	}
	infos := sealed
	for _, s := range others {
		info := SegmentInfo{ID: s.ID, Name: s.Name, State: StateUnsealed}
		if alive {
			if st.Active == nil || st.Active.ID != s.ID {
				continue // a segment being written whole; sealed in a moment
			}
			info = *st.Active
			info.Name = s.Name
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Inspect summarizes the spool in dir.
func Inspect(dir string) (Status, error) {
	s := Status{Dir: dir, At: time.Now().UTC()}
	segs, err := ListSegments(dir)
	if err != nil {
		return s, err
	}
	if id, err := ReadIdentity(dir); err == nil {
		s.Identity = &id
	}
	pos, err := ReadWriterPosition(dir)
	if err == nil && !pos.IsZero() {
		s.WriterPosition = &pos
	}
	if s.Identity != nil && !pos.Spool.IsZero() && pos.Spool != s.Identity.ID {
		pos = Position{} // another spool's: nothing of this one is drained
	}
	s.AppenderRunning = AppenderAlive(dir)
	s.AppenderPID, _ = ReadAppenderPID(dir)
	if st, err := ReadAppenderStatus(dir); err == nil {
		s.AppendedRecords, s.AppenderUpdated = st.Stats.AppendedRecords, st.UpdatedAt
		if s.AppenderRunning {
			s.Full, s.FullReason, s.NextSeq = st.Stats.Full, st.Stats.FullReason, st.Stats.NextSeq
		}
	}
	var oldest, newest time.Time
	for _, g := range segs {
		s.TotalBytes += g.Bytes
		switch g.State {
		case StateActive:
			a := g
			s.Active = &a
		case StateUnsealed:
			s.UnsealedSegments++
		case StateDamaged:
			s.DamagedSegments++
		case StateSealed:
			s.SealedSegments++
		}
		if g.State != StateUnsealed && g.State != StateDamaged && g.Records > 0 && g.LastSeq <= pos.Seq {
			continue // drained
		}
		s.Segments++
		s.Bytes += g.Bytes
		n := undrained(g, pos)
		if g.State == StateActive {
			n = g.Records
		}
		s.Records += n
		if n > 0 {
			if oldest.IsZero() || g.Oldest.Before(oldest) {
				oldest = g.Oldest
			}
			if g.Newest.After(newest) {
				newest = g.Newest
			}
		}
	}
	if !oldest.IsZero() {
		s.Oldest, s.Newest = &oldest, &newest
	}
	if items, err := ListQuarantine(dir); err == nil {
		s.Quarantined = len(items)
	}
	return s, nil
}
