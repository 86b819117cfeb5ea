package spool

import (
	"time"

	"github.com/meshingest/meshingest/shared"
)

// Profile names a set of timing defaults: how soon a record is durable
// and visible to the writer against how many syncs and bytes that costs.
type Profile string

const (
	// ProfileLowLatency (the default) commits a group the moment the first
	// record arrives after an idle spell, and under load starts groups at
	// most every MinGroupInterval (records arriving during a group's sync
	// form the next one). Every group is written as a segment of its own,
	// sealed at once, so the writer reads it as soon as it is durable. At
	// 250 records/s: about 2 × 1/MinGroupInterval syncs/s (one fdatasync
	// and one folder fsync per group). QoS 0 loss window on a crash:
	// MinGroupInterval plus one commit.
	ProfileLowLatency Profile = "low-latency"
	// ProfileLowWear is for SD cards and other flash that wears per write:
	// the appender gathers records for GroupWindow (1 s) after the first
	// one and seals segments at SegmentMaxAge (1 s), so at low rates one
	// group is one segment: 2 syncs/s and the fewest bytes. A record is
	// visible to the writer about a second after it arrived. QoS 0 loss
	// window on a crash: GroupWindow plus one commit.
	ProfileLowWear Profile = "low-wear"
)

// Defaults, chosen by the benchmarks in the package documentation.
const (
	// DefaultGroupWindow is the low-wear profile's gathering window; it
	// equals DefaultSegmentMaxAge so that at low rates one group is one
	// segment, written and sealed at once for one fdatasync and one folder
	// fsync. The low-latency profile gathers nothing (window 0).
	DefaultGroupWindow = time.Second
	// DefaultMinGroupInterval is the low-latency profile's least time
	// between the starts of two groups. 150 ms keeps the receiver at about
	// 13 syncs/s and the writer at about 7 commits/s under steady load
	// (both together ≤ 25/s), and adds at most 150 ms to a record's
	// latency; an idle appender commits the next record at once.
	DefaultMinGroupInterval = 150 * time.Millisecond
	DefaultAckWindow        = 20 * time.Millisecond
	DefaultGroupMaxRecords  = 4096
	DefaultGroupMaxBytes    = 4 << 20
	DefaultSegmentMaxBytes  = 8 << 20
	DefaultSegmentMaxAge    = time.Second
	DefaultMaxPayloadBytes  = 64 << 10
	DefaultQueueMaxBytes    = 32 << 20
	DefaultQueueFullWait    = 5 * time.Second
	DefaultMaxBytes         = 16 << 30
	// DefaultMinFreeBytes is the free-disk floor on a large disk; on one
	// smaller than 10 GiB the default is DefaultMinFreePercent of its size
	// instead, so that a small disk (an SD card, a 4 GiB VM volume) is not
	// "full" from the start.
	DefaultMinFreeBytes   = 512 << 20
	DefaultMinFreePercent = 5
)

// Options tune an Appender. The zero value of a field means its default,
// which depends on Profile.
type Options struct {
	// Profile selects the timing defaults below (ProfileLowLatency when
	// empty or unknown; the configuration file's spool.profile is checked
	// by shared.Config.Validate). Fields set explicitly override the
	// profile's.
	Profile Profile
	// GroupWindow is how long the appender gathers QoS 0 records after the
	// first one before one commit and fsync (low-wear: 1 s; low-latency:
	// 0, commit at once). It bounds what a crash can lose of QoS 0 traffic
	// and how late the writer sees a record; longer windows mean fewer
	// fsyncs.
	GroupWindow time.Duration
	// MinGroupInterval is the least time between the starts of two groups
	// (low-latency: 150 ms; low-wear: GroupWindow). A record that arrives
	// when the last group started longer ago than this, and no group is
	// being written, is committed at once; under load records gather for
	// the rest of the interval. Shorter means lower latency under load and
	// more syncs: about 2 per interval with low-latency.
	MinGroupInterval time.Duration
	// AckWindow closes a group that holds a QoS >= 1 record this long after
	// that record arrived. A broker keeps only a few unacknowledged QoS 1
	// messages in flight (mosquitto: 20), so their acks cannot wait a whole
	// GroupWindow; each short group costs about one fdatasync.
	AckWindow time.Duration
	// GroupMaxRecords and GroupMaxBytes close a group early under load.
	// Larger groups mean fewer fsyncs per record and more memory.
	GroupMaxRecords int
	GroupMaxBytes   int
	// SegmentMaxBytes and SegmentMaxAge seal the active segment (low-wear
	// only: with low-latency every group is a sealed segment of its own
	// and there is no active segment). The age bounds how late the writer
	// sees a record (it reads sealed segments only); the size bounds the
	// memory a reader maps per segment.
	SegmentMaxBytes int64
	SegmentMaxAge   time.Duration
	// MaxPayloadBytes refuses larger payloads with ErrPayloadTooLarge.
	MaxPayloadBytes int
	// QueueMaxBytes bounds the memory held by records not yet on disk; past
	// it Append returns ErrQueueFull. While the disk stalls, this is how
	// much the receiver can absorb before it must drop.
	QueueMaxBytes int64
	// QueueFullWait is how long appends may wait in all for room in a
	// full queue within any 2 × QueueFullWait before they are refused with
	// ErrQueueFull (zero: the default; negative: refuse at once). Waiting
	// makes a burst the disk cannot take at once push back on the MQTT
	// connection instead of being dropped at QoS 0; the receiver's handler
	// is blocked meanwhile, and so is every packet behind the burst, the
	// broker's PINGRESP too: it must stay well under the ping timeout
	// (10 s). A longer wait trades counted drops for a lost connection,
	// whose broker-side losses nobody counts.
	QueueFullWait time.Duration
	// MaxBytes caps the spool folder (segments and quarantine); a negative
	// value means no cap. MinFreeBytes is the free-disk floor; negative
	// means none, zero the default: the smaller of DefaultMinFreeBytes and
	// DefaultMinFreePercent of the file system's size. Either one reached
	// makes Append return ErrFull.
	MaxBytes     int64
	MinFreeBytes int64

	// BeforeSync, when set, is called on the appender goroutine before every
	// fsync or fdatasync the appender makes. It is for tests that simulate a
	// slow or stalled disk; production code leaves it nil.
	BeforeSync func()
}

// OptionsFromConfig maps the spool section of the configuration file onto
// Options; zero fields keep their defaults.
func OptionsFromConfig(c shared.SpoolConfig) Options {
	return Options{
		Profile:          Profile(c.Profile),
		MinGroupInterval: time.Duration(c.MinGroupIntervalMs) * time.Millisecond,
		GroupWindow:      time.Duration(c.GroupWindowMs) * time.Millisecond,
		GroupMaxRecords:  c.GroupMaxRecords,
		SegmentMaxBytes:  c.SegmentMaxBytes,
		SegmentMaxAge:    time.Duration(c.SegmentMaxAgeMs) * time.Millisecond,
		MaxBytes:         c.MaxBytes,
		MinFreeBytes:     c.MinFreeBytes,
		MaxPayloadBytes:  c.MaxPayloadBytes,
		QueueMaxBytes:    c.QueueMaxBytes,
		QueueFullWait:    time.Duration(c.QueueFullWaitMs) * time.Millisecond,
	}
}

// sealEachGroup says every group is written as a sealed segment of its own.
func (o Options) sealEachGroup() bool { return o.Profile != ProfileLowWear }

// Resolved is o with every default filled in as an Appender would run it,
// but the free-disk floor (it depends on the file system's size).
func (o Options) Resolved() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	if o.Profile != ProfileLowWear {
		o.Profile = ProfileLowLatency
	}
	if o.GroupWindow < 0 {
		o.GroupWindow = 0
	}
	if o.GroupWindow == 0 && o.Profile == ProfileLowWear {
		o.GroupWindow = DefaultGroupWindow
	}
	if o.MinGroupInterval <= 0 {
		o.MinGroupInterval = DefaultMinGroupInterval
		if o.Profile == ProfileLowWear {
			o.MinGroupInterval = o.GroupWindow
		}
	}
	if o.AckWindow <= 0 {
		o.AckWindow = DefaultAckWindow
	}
	if o.GroupWindow > 0 && o.AckWindow > o.GroupWindow {
		o.AckWindow = o.GroupWindow
	}
	if o.GroupMaxRecords <= 0 {
		o.GroupMaxRecords = DefaultGroupMaxRecords
	}
	if o.GroupMaxBytes <= 0 {
		o.GroupMaxBytes = DefaultGroupMaxBytes
	}
	if o.SegmentMaxBytes <= 0 {
		o.SegmentMaxBytes = DefaultSegmentMaxBytes
	}
	if o.SegmentMaxAge <= 0 {
		o.SegmentMaxAge = DefaultSegmentMaxAge
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if o.QueueMaxBytes <= 0 {
		o.QueueMaxBytes = DefaultQueueMaxBytes
	}
	if o.QueueFullWait == 0 {
		o.QueueFullWait = DefaultQueueFullWait
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	return o
}

// defaultMinFree is the default free-disk floor for a file system of
// total bytes (0 when unknown): DefaultMinFreeBytes, or
// DefaultMinFreePercent of a smaller disk.
func defaultMinFree(total int64) int64 {
	if total <= 0 {
		return DefaultMinFreeBytes
	}
	return min(DefaultMinFreeBytes, total/100*DefaultMinFreePercent)
}

// ReaderOptions tune a Reader.
type ReaderOptions struct {
	// Inspect opens the spool for inspection only (the CLI): damage is
	// reported through OnQuarantine and in Stats, and the intact records of
	// a damaged segment are still read, but nothing is moved, rewritten or
	// deleted. The writer leaves it false.
	Inspect bool
	// OnQuarantine, when set, is called for every damaged segment found.
	OnQuarantine func(QuarantineEvent)
	// PollInterval is the first interval at which WaitSealed lists the
	// folder besides waiting for the watch's event (default 50 ms: small
	// against the one-second seal age); it doubles while nothing comes, up
	// to PollMaxInterval (default 1 s; 200 ms at most when the folder
	// cannot be watched, since the poll is then all there is). A longer
	// bound costs an idle reader fewer listings and a reader that misses
	// an event more latency.
	PollInterval    time.Duration
	PollMaxInterval time.Duration
}
