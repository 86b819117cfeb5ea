package spool

import (
	"slices"
	"time"
)

// AppenderStats is what the receiver publishes about its spool.
type AppenderStats struct {
	AppendedRecords uint64 `json:"appended_records"` // made durable
	AppendedBytes   uint64 `json:"appended_bytes"`   // encoded bytes made durable
	FailedRecords   uint64 `json:"failed_records"`   // done called with an error
	Groups          uint64 `json:"groups"`           // groups made durable
	FailedGroups    uint64 `json:"failed_groups"`
	SegmentsSealed  uint64 `json:"segments_sealed"`
	// Fsyncs counts every fsync and fdatasync the appender made, of segment
	// files, the sequence file and the folder.
	Fsyncs uint64 `json:"fsyncs"`
	// FsyncP50/P99 are the latencies of the last 1,024 syncs; CommitP50/P99
	// those of the last 1,024 groups, from the start of their disk work to
	// durable (writes and syncs).
	FsyncP50  time.Duration `json:"fsync_p50_ns"`
	FsyncP99  time.Duration `json:"fsync_p99_ns"`
	CommitP50 time.Duration `json:"commit_p50_ns"`
	CommitP99 time.Duration `json:"commit_p99_ns"`

	RefusedTooLarge  uint64 `json:"refused_too_large"`
	RefusedFull      uint64 `json:"refused_full"`
	RefusedQueueFull uint64 `json:"refused_queue_full"`
	// QueueFullWaits counts the times appends found the queue full and
	// waited for a group to leave it (Options.QueueFullWait);
	// RefusedQueueFull the appends refused.
	QueueFullWaits uint64 `json:"queue_full_waits"`
	RefusedInvalid uint64 `json:"refused_invalid"`

	// FoldersRemade counts the times the spool folder was found deleted
	// (or another put in its place) under the appender, which made it
	// again as a new spool (remade.go). RecordsLostWithFolder is what the
	// deleted folders held that the writer had not drained, as far as the
	// appender knew: its last scan, at most a second old, plus what it
	// wrote since; records the writer applied in that second are counted
	// too, so it is an upper bound.
	FoldersRemade         uint64 `json:"folders_remade"`
	RecordsLostWithFolder uint64 `json:"records_lost_with_folder"`

	// QueuedRecords and QueuedBytes are in memory, not yet durable.
	QueuedRecords int   `json:"queued_records"`
	QueuedBytes   int64 `json:"queued_bytes"`

	// Depth is what is on disk and not yet drained by the writer (as far as
	// its advisory writer-position.json tells), active segment included.
	DepthSegments int    `json:"depth_segments"`
	DepthRecords  uint64 `json:"depth_records"`
	DepthBytes    int64  `json:"depth_bytes"`
	// DepthOldest is the receive time of the oldest record in those
	// segments, to within a segment's span (a partly drained segment
	// counts from its first record); zero when there is none.
	DepthOldest time.Time `json:"depth_oldest_received_at,omitzero"`
	// MaxBytes is the byte cap in force (negative: none).
	MaxBytes int64 `json:"max_bytes"`
	// SpoolBytes is what the byte cap counts: segments and quarantine.
	SpoolBytes int64 `json:"spool_bytes"`
	DiskFree   int64 `json:"disk_free_bytes"`
	// MinFreeBytes is the free-disk floor in force (the default scaled to
	// the file system); negative means none.
	MinFreeBytes int64 `json:"min_free_bytes"`

	// Full is true while a limit is reached, or since the last append was
	// refused with ErrFull and until one succeeds.
	Full       bool   `json:"full"`
	FullReason string `json:"full_reason,omitempty"`
	// Blocked says why no record at all can be appended now (the cap or
	// the floor is reached, or the disk ran out); empty when one can.
	Blocked string `json:"blocked,omitempty"`

	// RecoveredSegments were left unsealed by a dead appender and sealed at
	// open; QuarantinedRecords were damaged in them.
	RecoveredSegments  int    `json:"recovered_segments"`
	QuarantinedRecords int    `json:"quarantined_records"`
	NextSeq            uint64 `json:"next_seq"`
	LastError          string `json:"last_error,omitempty"`
}

// Stats returns the appender's counters and gauges.
func (a *Appender) Stats() AppenderStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statsLocked()
}

func (a *Appender) statsLocked() AppenderStats {
	s := a.stats
	s.FsyncP50, s.FsyncP99 = a.fsyncLat.percentiles()
	s.CommitP50, s.CommitP99 = a.commitLat.percentiles()
	s.QueuedRecords = a.pendingCount
	s.QueuedBytes = a.pendingBytes
	s.SpoolBytes = a.spoolBytes
	s.DiskFree = a.diskFree
	s.MinFreeBytes = a.opts.MinFreeBytes
	s.MaxBytes = a.opts.MaxBytes
	s.Blocked = a.fullLocked(0)
	s.FullReason = s.Blocked
	if s.FullReason == "" {
		s.FullReason = a.refusedFull
	}
	s.Full = s.FullReason != ""
	s.NextSeq = a.nextSeq
	return s
}

// latencyRing keeps the last n durations.
type latencyRing struct {
	d    []time.Duration
	next int
	full bool
}

func (r *latencyRing) init(n int) { r.d = make([]time.Duration, n) }

func (r *latencyRing) add(d time.Duration) {
	r.d[r.next] = d
	r.next++
	if r.next == len(r.d) {
		r.next, r.full = 0, true
	}
}

func (r *latencyRing) percentiles() (p50, p99 time.Duration) {
	n := r.next
	if r.full {
		n = len(r.d)
	}
	if n == 0 {
		return 0, 0
	}
	s := slices.Clone(r.d[:n])
	slices.Sort(s)
	return s[(n-1)*50/100], s[(n-1)*99/100]
}
