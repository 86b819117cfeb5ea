package receiver

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshingest/meshingest/shared"
)

// Drop and hold reasons, as they appear in the stats file and in metric
// labels. A message is "dropped" when it is gone for good (QoS 0, or a QoS 1
// message that can never be stored) and "held" when the receiver neither
// stored nor acknowledged a QoS 1 message, so the broker keeps it and
// delivers it again on the next session.
const (
	reasonSpoolFull     = "spool_full"     // spool byte cap or free-disk floor reached
	reasonQueueFull     = "queue_full"     // in-memory bound for records not yet on disk
	reasonOversized     = "oversized"      // payload over spool.maxPayloadBytes
	reasonInvalidRecord = "invalid_record" // cannot be encoded (never for a valid MQTT message)
	reasonWriteFailed   = "write_failed"   // the group holding it did not reach disk
	reasonBackpressure  = "backpressure"   // QoS 1 after an earlier refusal, until the source reconnects
)

// DropReasons are every reason a message can be dropped for, and
// HeldReasons every reason a QoS 1 message can be left with the broker:
// each source's counters start at zero for each of them, so a rate or an
// alert over a reason works before its first drop.
func DropReasons() []string {
	return []string{reasonSpoolFull, reasonQueueFull, reasonOversized, reasonInvalidRecord, reasonWriteFailed}
}

// HeldReasons: see DropReasons.
func HeldReasons() []string {
	return []string{reasonSpoolFull, reasonQueueFull, reasonWriteFailed, reasonBackpressure}
}

// sourceStatus is one source's counters. It outlives the source's
// connections and survives a reload that changes the source, so counters are
// "since start" as CoreScope's contract wants. The hot path (one call per
// message) uses atomics; the 5-minute window takes a short lock.
type sourceStatus struct {
	name   string
	broker atomic.Pointer[string] // masked; replaced when a reload changes the URL
	qos    atomic.Int32

	connected          atomic.Bool
	lastConnectUnix    atomic.Int64
	lastDisconnectUnix atomic.Int64
	lastPacketUnix     atomic.Int64
	connectCount       atomic.Int64
	disconnectCount    atomic.Int64
	connectAttempts    atomic.Int64
	packetsTotal       atomic.Int64

	retained     atomic.Int64 // messages with the retained flag (replayed on subscribe)
	duplicates   atomic.Int64 // messages with the DUP flag (redelivered by the broker)
	filtered     atomic.Int64 // packets outside iataFilter
	appended     atomic.Int64 // accepted by the spool
	appendBytes  atomic.Int64 // payload bytes accepted by the spool
	durable      atomic.Int64 // reported on disk by the spool
	acked        atomic.Int64 // QoS 1 acknowledgements handed to the client
	redeliveries atomic.Int64 // reconnects made so the broker redelivers held messages

	window slidingCounter

	mu        sync.Mutex
	lastError string
	dropped   map[string]int64
	held      map[string]int64
}

func newSourceStatus(name string) *sourceStatus {
	s := &sourceStatus{name: name, dropped: map[string]int64{}, held: map[string]int64{}}
	for _, r := range DropReasons() {
		s.dropped[r] = 0
	}
	for _, r := range HeldReasons() {
		s.held[r] = 0
	}
	empty := ""
	s.broker.Store(&empty)
	return s
}

func (s *sourceStatus) setBroker(masked string, qos int) {
	s.broker.Store(&masked)
	s.qos.Store(int32(qos))
}

func (s *sourceStatus) markConnected(now time.Time) {
	s.connected.Store(true)
	s.lastConnectUnix.Store(now.Unix())
	s.connectCount.Add(1)
}

// markDisconnected records the end of a connection that had been up.
func (s *sourceStatus) markDisconnected(now time.Time, err error) {
	if !s.connected.Swap(false) {
		return
	}
	s.lastDisconnectUnix.Store(now.Unix())
	s.disconnectCount.Add(1)
	if err != nil {
		s.setError(err)
	}
}

// setError keeps the last connection error, passwords masked.
func (s *sourceStatus) setError(err error) {
	s.mu.Lock()
	s.lastError = shared.MaskPasswords(err.Error())
	s.mu.Unlock()
}

// markReceived counts a message the broker delivered. A retained message is
// a replay of an old one the broker kept, sent because we subscribed: it is
// counted, but it does not move lastPacketUnix, which says when the source
// last carried live traffic.
func (s *sourceStatus) markReceived(now time.Time, retained, dup bool) {
	s.packetsTotal.Add(1)
	s.window.add(now.Unix())
	if retained {
		s.retained.Add(1)
	} else {
		s.lastPacketUnix.Store(now.Unix())
	}
	if dup {
		s.duplicates.Add(1)
	}
}

func (s *sourceStatus) countDrop(reason string) {
	s.mu.Lock()
	s.dropped[reason]++
	s.mu.Unlock()
}

func (s *sourceStatus) countHeld(reason string) {
	s.mu.Lock()
	s.held[reason]++
	s.mu.Unlock()
}

// SourceCounters is the receiver's own view of one source, beside the
// CoreScope-shaped status in the stats file.
type SourceCounters struct {
	Name string `json:"name"`
	QoS  int    `json:"qos"`
	// ConnectAttempts counts every try, failed ones included.
	ConnectAttempts int64 `json:"connectAttempts"`
	Retained        int64 `json:"retained"`
	Duplicates      int64 `json:"duplicates"`
	Filtered        int64 `json:"filtered"`
	Appended        int64 `json:"appended"`
	AppendedBytes   int64 `json:"appendedBytes"`
	Durable         int64 `json:"durable"`
	Acked           int64 `json:"acked"`
	// Dropped are messages lost for good, by reason.
	Dropped map[string]int64 `json:"dropped"`
	// Held are QoS 1 messages neither stored nor acknowledged, left with the
	// broker for redelivery, by reason.
	Held map[string]int64 `json:"held"`
	// RedeliveryReconnects are reconnects made to get held messages back.
	RedeliveryReconnects int64 `json:"redeliveryReconnects"`
}

func (s *sourceStatus) snapshot(now time.Time) (shared.SourceStatus, shared.SourceLiveness, SourceCounters) {
	s.mu.Lock()
	lastErr := s.lastError
	dropped := make(map[string]int64, len(s.dropped))
	for k, v := range s.dropped {
		dropped[k] = v
	}
	held := make(map[string]int64, len(s.held))
	for k, v := range s.held {
		held[k] = v
	}
	s.mu.Unlock()
	st := shared.SourceStatus{
		Name:               s.name,
		Broker:             *s.broker.Load(),
		Connected:          s.connected.Load(),
		LastConnectUnix:    s.lastConnectUnix.Load(),
		LastDisconnectUnix: s.lastDisconnectUnix.Load(),
		LastPacketUnix:     s.lastPacketUnix.Load(),
		ConnectCount:       s.connectCount.Load(),
		DisconnectCount:    s.disconnectCount.Load(),
		PacketsTotal:       s.packetsTotal.Load(),
		PacketsLast5m:      s.window.sum(now.Unix()),
		LastError:          lastErr,
	}
	live := shared.SourceLiveness{LastReceiptUnix: st.LastPacketUnix}
	c := SourceCounters{
		Name:                 s.name,
		QoS:                  int(s.qos.Load()),
		ConnectAttempts:      s.connectAttempts.Load(),
		Retained:             s.retained.Load(),
		Duplicates:           s.duplicates.Load(),
		Filtered:             s.filtered.Load(),
		Appended:             s.appended.Load(),
		AppendedBytes:        s.appendBytes.Load(),
		Durable:              s.durable.Load(),
		Acked:                s.acked.Load(),
		Dropped:              dropped,
		Held:                 held,
		RedeliveryReconnects: s.redeliveries.Load(),
	}
	return st, live, c
}

// windowSeconds is the span of packetsLast5m.
const windowSeconds = 300

// slidingCounter counts events over the last windowSeconds seconds in
// per-second buckets. Each bucket remembers which second it holds, so a
// bucket left over from an earlier lap of the ring is never summed.
type slidingCounter struct {
	mu     sync.Mutex
	second [windowSeconds]int64
	count  [windowSeconds]int64
}

func (c *slidingCounter) add(sec int64) {
	i := sec % windowSeconds
	c.mu.Lock()
	if c.second[i] != sec {
		c.second[i] = sec
		c.count[i] = 0
	}
	c.count[i]++
	c.mu.Unlock()
}

// sum is the count over the windowSeconds seconds ending with second now.
func (c *slidingCounter) sum(now int64) int64 {
	oldest := now - windowSeconds + 1
	var total int64
	c.mu.Lock()
	for i := range c.second {
		if s := c.second[i]; s >= oldest && s <= now {
			total += c.count[i]
		}
	}
	c.mu.Unlock()
	return total
}

// brokerURL is the source's broker URL with any password masked.
func (s *sourceStatus) brokerURL() string { return *s.broker.Load() }
