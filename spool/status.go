package spool

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// Segment states in SegmentInfo.
const (
	StateSealed   = "sealed"
	StateActive   = "active"   // being appended to by a live appender
	StateUnsealed = "unsealed" // left by a dead appender; sealed when the next one opens
	StateDamaged  = "damaged"  // sealed, but its trailer does not verify
)

// SegmentInfo describes one segment file.
type SegmentInfo struct {
	ID       uint64    `json:"id"`
	Name     string    `json:"name,omitempty"`
	State    string    `json:"state"`
	Bytes    int64     `json:"bytes"`
	Records  uint64    `json:"records"`
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Oldest   time.Time `json:"oldest_received_at"`
	Newest   time.Time `json:"newest_received_at"`
	Problem  string    `json:"problem,omitempty"`
	// Spool is the identity the segment's trailer names (zero in a
	// format 1 trailer, or when unreadable).
	Spool Identity `json:"spool,omitzero"`
}

// sealedInfo reads a sealed segment's size and trailer summary, without
// checking its data CRC (that is a full read; see Verify).
func sealedInfo(dir string, s segmentFile) (SegmentInfo, error) {
	info := SegmentInfo{ID: s.ID, Name: s.Name, State: StateSealed}
	f, err := openSpoolFile(filepath.Join(dir, s.Name), os.O_RDONLY, 0)
	if err != nil {
		return info, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return info, err
	}
	info.Bytes = fi.Size()
	t, err := readTrailer(f, fi.Size())
	if err != nil {
		info.State, info.Problem = StateDamaged, err.Error()
		return info, nil
	}
	info.Records, info.FirstSeq, info.LastSeq, info.Spool = t.Records, t.FirstSeq, t.LastSeq, t.Spool
	info.Oldest, info.Newest = t.OldestTime(), t.NewestTime()
	return info, nil
}

// depthCache remembers the trailers of sealed segments between scans: they
// are immutable, so a scan costs one readdir plus a read for each new file.
type depthCache map[string]SegmentInfo

// scanSealed lists the sealed segments with their summaries.
func scanSealed(dir string, cache depthCache) ([]SegmentInfo, error) {
	segs, err := listSegments(dir, sealedExt)
	if err != nil {
		return nil, err
	}
	infos := make([]SegmentInfo, 0, len(segs))
	seen := make(map[string]bool, len(segs))
	for _, s := range segs {
		seen[s.Name] = true
		if info, ok := cache[s.Name]; ok {
			infos = append(infos, info)
			continue
		}
		info, err := sealedInfo(dir, s)
		if errors.Is(err, os.ErrNotExist) {
			continue // drained and deleted meanwhile
		}
		if err != nil {
			info.State, info.Problem = StateDamaged, err.Error()
		} else if cache != nil && info.State == StateSealed {
			cache[s.Name] = info
		}
		infos = append(infos, info)
	}
	for name := range cache {
		if !seen[name] {
			delete(cache, name)
		}
	}
	return infos, nil
}

// undrained is how many of a segment's records come after pos. Seqs are
// contiguous within a segment unless salvage dropped some, so this can
// overcount a repaired segment by the records it lost.
func undrained(s SegmentInfo, pos Position) uint64 {
	switch {
	case s.Records == 0 || pos.Seq >= s.LastSeq:
		return 0
	case pos.Seq < s.FirstSeq:
		return s.Records
	}
	return min(s.LastSeq-pos.Seq, s.Records)
}

// AppenderStatus is what the appender publishes in appender-status.json
// (atomically, without fsync), so that `spool status` never has to open the
// active segment, whose lock the appender holds. It is rewritten when a
// figure changed, checked once a second, and at least every
// statusHeartbeat otherwise, so UpdatedAt says the appender is alive.
type AppenderStatus struct {
	PID       int           `json:"pid"`
	UpdatedAt time.Time     `json:"updated_at"`
	Closed    bool          `json:"closed"`
	Active    *SegmentInfo  `json:"active,omitempty"`
	Stats     AppenderStats `json:"stats"`
}

// ReadAppenderStatus reads the appender's last published status.
func ReadAppenderStatus(dir string) (AppenderStatus, error) {
	var st AppenderStatus
	b, err := os.ReadFile(filepath.Join(dir, statusFile))
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(b, &st)
	return st, err
}

// statusHeartbeat is the longest appender-status.json goes unwritten while
// nothing changes: well inside StatusStaleAfter.
const statusHeartbeat = 2 * time.Second

// StatusStaleAfter is the age after which a consumer stops trusting the
// appender's status: a live appender rewrites it at least every
// statusHeartbeat, so an older one is a hung or dead appender's.
const StatusStaleAfter = 5 * time.Second

// housekeeping refreshes the byte, free-disk and depth figures once a
// second, and the status file when they changed, on its own goroutine so
// that the scans never delay a group. It owns a.depth, a.lastStatus and
// a.statusAt.
func (a *Appender) housekeeping() {
	defer close(a.hkExited)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	a.housekeep()
	for {
		select {
		case <-a.stopHK:
			return
		case <-t.C:
			a.housekeep()
		}
	}
}

// statfsFree is the space available to us on dir's file system, -1 when
// unknown.
func statfsFree(dir string) int64 {
	var fs syscall.Statfs_t
	if syscall.Statfs(dir, &fs) != nil {
		return -1
	}
	return int64(fs.Bavail) * int64(fs.Bsize)
}

// statfsTotal is the size of dir's file system, -1 when unknown.
func statfsTotal(dir string) int64 {
	var fs syscall.Statfs_t
	if syscall.Statfs(dir, &fs) != nil {
		return -1
	}
	return int64(fs.Blocks) * int64(fs.Bsize)
}

func (a *Appender) housekeep() {
	// Taken before the scan, so that a record made durable meanwhile
	// counts in both: the lost count of a remade folder stays an upper
	// bound (remade.go).
	a.mu.Lock()
	appended, folder := a.stats.AppendedRecords, a.folder
	a.mu.Unlock()
	free := statfsFree(a.dir)
	sealed, scanErr := scanSealed(a.dir, a.depth)
	bytes := quarantineBytes(a.dir)
	for _, s := range sealed {
		bytes += s.Bytes
	}
	pos, _ := ReadWriterPosition(a.dir)
	// A folder deleted under the appender (or not its own any more) keeps
	// the figures of the last scan: they are what it held, to count as
	// lost when the folder is made again (remade.go).
	ours := scanErr == nil && a.folderIsOurs()

	a.mu.Lock()
	if !pos.Spool.IsZero() && pos.Spool != a.id.ID {
		pos = Position{} // a position in another spool drained nothing of this one
	}
	if !ours || a.folder.dir != folder.dir || a.folder.lock != folder.lock {
		a.mu.Unlock() // or remade since the scan began
		return
	}
	a.folder.scannedAppended = appended
	if a.activeInfo != nil {
		bytes += a.activeInfo.Bytes
	}
	a.spoolBytes, a.diskFree = bytes, free
	if a.noSpace && free > max(a.opts.MinFreeBytes, 0)+a.noSpaceNeed {
		a.noSpace, a.noSpaceNeed = false, 0
	}
	a.stats.DepthSegments, a.stats.DepthRecords, a.stats.DepthBytes = 0, 0, 0
	a.stats.DepthOldest = time.Time{}
	older := func(t time.Time) {
		if !t.IsZero() && (a.stats.DepthOldest.IsZero() || t.Before(a.stats.DepthOldest)) {
			a.stats.DepthOldest = t
		}
	}
	for _, s := range sealed {
		if s.LastSeq != 0 && s.LastSeq <= pos.Seq {
			continue // drained; the writer deletes it soon
		}
		a.stats.DepthSegments++
		a.stats.DepthRecords += undrained(s, pos)
		a.stats.DepthBytes += s.Bytes
		older(s.Oldest)
	}
	if ai := a.activeInfo; ai != nil {
		a.stats.DepthSegments++
		a.stats.DepthRecords += ai.Records
		a.stats.DepthBytes += ai.Bytes
		older(ai.Oldest)
	}
	st := AppenderStatus{PID: os.Getpid(), Closed: a.closed, Stats: a.statsLocked()}
	if a.activeInfo != nil {
		ai := *a.activeInfo
		st.Active = &ai
	}
	a.mu.Unlock()
	now := time.Now()
	if a.sameStatus(st) && now.Sub(a.statusAt) < statusHeartbeat {
		return
	}
	a.lastStatus, a.statusAt = st, now
	st.UpdatedAt = now.UTC()
	shared.WriteJSONAtomic(filepath.Join(a.dir, statusFile), st)
}

// sameStatus says st carries what the last status file did. The free-disk
// figure counts as changed only by a MiB or more: other programs move it
// all the time.
func (a *Appender) sameStatus(st AppenderStatus) bool {
	last := a.lastStatus
	if a.statusAt.IsZero() || st.Closed != last.Closed || (st.Active == nil) != (last.Active == nil) ||
		st.Active != nil && *st.Active != *last.Active {
		return false
	}
	const slack = 1 << 20
	if d := st.Stats.DiskFree - last.Stats.DiskFree; d > -slack && d < slack {
		st.Stats.DiskFree = last.Stats.DiskFree
	}
	return st.Stats == last.Stats
}

// UnwrittenGauge counts, for a consumer, the records a spool holds after
// a position: the sealed segments from their trailers (cached, being
// immutable) and the active one from the appender's status. It counts
// from the consumer's own position, not from the advisory one the
// appender's DepthRecords starts at, which lags the consumer's by a
// commit: a figure saved with a commit must not count that commit's
// records. Safe for concurrent use.
type UnwrittenGauge struct {
	dir   string
	mu    sync.Mutex
	cache depthCache
}

// NewUnwrittenGauge makes a gauge of the spool folder dir.
func NewUnwrittenGauge(dir string) *UnwrittenGauge {
	return &UnwrittenGauge{dir: dir, cache: depthCache{}}
}

// After is how many records the spool holds after pos, or -1 when it
// cannot tell: the folder cannot be listed, or a segment is being written
// by an appender whose status is older than a few heartbeats, or was left
// unsealed by a dead one (its records are known once it is recovered).
// Records of segments another spool's trailer names do not count. The
// active segment's figure is at most a status interval old, so records
// made durable in that interval may be missing.
func (g *UnwrittenGauge) After(pos Position) int64 {
	g.mu.Lock()
	sealed, err := scanSealed(g.dir, g.cache)
	g.mu.Unlock()
	if err != nil {
		return -1
	}
	open, err := listSegments(g.dir, activeExt, tmpExt)
	if err != nil {
		return -1
	}
	var n uint64
	seen := make(map[uint64]bool, len(sealed))
	for _, s := range sealed {
		seen[s.ID] = true
		if s.State != StateSealed {
			return -1 // damaged: what it holds is known once it is read
		}
		if !pos.Spool.IsZero() && !s.Spool.IsZero() && s.Spool != pos.Spool {
			continue
		}
		n += undrained(s, pos)
	}
	var st AppenderStatus
	fresh := false
	if len(open) > 0 {
		var err error
		st, err = ReadAppenderStatus(g.dir)
		fresh = err == nil && !st.Closed && time.Since(st.UpdatedAt) <= StatusStaleAfter
	}
	for _, s := range open {
		switch {
		case seen[s.ID]:
			// sealed meanwhile: counted from its trailer
		case !fresh:
			return -1
		case st.Active != nil && st.Active.ID == s.ID:
			n += undrained(*st.Active, pos)
		}
		// Any other is a segment written whole (a seal or an import)
		// that the listing caught before its rename; it holds records
		// the status counts nowhere yet, which the next call sees.
	}
	return int64(n)
}
