package receiver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// Reconnect timing. The backoff is capped low on purpose: the receiver must
// be back within 5 s of a broker's return however long the broker was away,
// and one connection attempt (and one log line) every few seconds costs a
// broker nothing.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 3 * time.Second
	// drainTimeout bounds how long a closing connection waits for the acks
	// of messages already on their way to disk (the spool settles a QoS 1
	// record within its ack window, a QoS 0 one within a group window).
	drainTimeout = 2 * time.Second
	// redeliveryMin and redeliveryMax space the reconnects that fetch held
	// QoS 1 messages back while the spool keeps refusing them.
	redeliveryMin = 200 * time.Millisecond
	redeliveryMax = 30 * time.Second
	// warnEvery is the most a repeated drop or refusal is logged.
	warnEvery = time.Minute
	// A broker that stays unreachable is logged at its first failure, then
	// after connectLogFirst, doubling up to connectLogMost between lines.
	connectLogFirst = time.Minute
	connectLogMost  = time.Hour
	// overdueAfter is how long past its due time a source's loop may be
	// before the receiver reports it not ready (a connection loop that
	// does not move on is a bug or a wedged library, never a broker).
	overdueAfter = 10 * time.Second
)

// source is one MQTT broker. Its loop goroutine owns the connections: it
// connects, subscribes, waits for the connection to end, and connects again
// with a bounded backoff, so one unreachable broker never holds up the
// others. Messages arrive on paho's goroutine in onMessage, which only
// hands them to the spool and never waits.
type source struct {
	cfg      shared.Source
	endpoint brokerEndpoint
	filter   regionFilter
	status   *sourceStatus
	spool    Spool
	progress *progress
	log      zerolog.Logger
	warn     *shared.Throttle
	// maxPayload is the spool's payload limit, enforced on the connection
	// (oversize.go) so that a larger message is never held in memory.
	maxPayload int
	// instance is the receiver instance's name (Options.Instance), part
	// of the client id.
	instance string

	// intake is cleared when the source stops taking messages; QoS 1
	// messages that arrive after that stay with the broker.
	intake atomic.Bool

	// drain bounds the wait for acks when the source is stopped; set
	// before stop is closed.
	drain time.Duration
	// redelivery is the wait before the next reconnect that fetches held
	// QoS 1 messages; only the loop goroutine uses it.
	redelivery time.Duration
	// connectLog spaces the lines about a broker that stays unreachable;
	// only the loop goroutine uses it.
	connectLog *shared.Decay
	// due is when the loop will have moved on from what it waits for now
	// (a connection attempt, a back-off), Unix ns; 0 while a connection is
	// up, which may last for ever. Readiness reads it.
	due atomic.Int64

	firstAttempt chan struct{} // closed once the first connection attempt has ended
	stop         chan struct{} // closed to end the loop
	stopped      chan struct{} // closed when the loop has returned
	stopOnce     sync.Once
}

// session is one connection: a fresh paho client, its acknowledgement queue
// and its own backpressure state. A new connection is a new session on the
// broker's side too (it redelivers what the last one left unacknowledged),
// so nothing here carries over.
type session struct {
	client mqtt.Client
	acks   *ackQueue
	lost   chan error    // the connection dropped
	heldCh chan struct{} // the first QoS 1 message was held back
	// held is set once a QoS 1 message was neither stored nor
	// acknowledged. From then on every QoS 1 message of this session is
	// left with the broker, so that it redelivers them all, in order, on
	// the reconnect that ends the session.
	held atomic.Bool
	// stored counts the records this session got into the spool.
	stored atomic.Int64
	// nonce marks this connection's stand-ins for oversized publishes.
	nonce [nonceLen]byte
}

func newSource(cfg shared.Source, instance string, status *sourceStatus, sp Spool, maxPayload int, prog *progress, log zerolog.Logger) (*source, error) {
	ep, err := parseBroker(cfg)
	if err != nil {
		return nil, err
	}

	status.setBroker(shared.MaskBrokerURL(cfg.Broker), cfg.QoS)
	s := &source{
		cfg:          cfg,
		endpoint:     ep,
		filter:       newRegionFilter(cfg.IATAFilter),
		status:       status,
		spool:        sp,
		progress:     prog,
		log:          log.With().Str("source", cfg.Name).Str("broker", shared.MaskBrokerURL(cfg.Broker)).Logger(),
		warn:         shared.NewThrottle(warnEvery),
		maxPayload:   maxPayload,
		instance:     instance,
		redelivery:   redeliveryMin,
		connectLog:   shared.NewDecay(connectLogFirst, connectLogMost),
		firstAttempt: make(chan struct{}),
		stop:         make(chan struct{}),
		stopped:      make(chan struct{}),
	}
	s.intake.Store(true)
	return s, nil
}

func (s *source) start() { go s.loop() }

// stopIntake makes onMessage ignore every further message.
func (s *source) stopIntake() { s.intake.Store(false) }

// close ends the loop: the current connection waits up to drain for the
// acks of messages already handed to the spool, then disconnects (keeping
// a QoS 1 session on the broker). It returns when the loop has returned.
func (s *source) close(drain time.Duration) {
	s.stopIntake()
	s.stopOnce.Do(func() {
		s.drain = drain
		close(s.stop)
	})
	<-s.stopped
}

func (s *source) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *source) loop() {
	defer close(s.stopped)
	first := true
	delay := reconnectMin
	for !s.stopping() {
		// An attempt waits for the connection, then the subscription.
		s.setDue(2*connectTimeout(s.cfg) + time.Second)
		sess, err := s.connect()
		if first {
			close(s.firstAttempt)
			first = false
		}
		if err != nil {
			if s.stopping() {
				return
			}
			s.status.setError(err)
			wait := jitter(delay)
			s.connectFailed(err, wait)
			delay = min(2*delay, reconnectMax)
			s.setDue(wait)
			if !s.sleep(wait) {
				return
			}
			continue
		}
		// Reconnect at once after a drop: the backoff grows only while
		// attempts fail.
		delay = reconnectMin
		s.due.Store(0)
		if s.serve(sess) == endStop {
			return
		}
	}
}

// connectFailed logs a failed attempt: the first of a run, then once a
// minute, two, four … up to hourly with the count held back, so that a
// broker down for a week does not fill the journal.
func (s *source) connectFailed(err error, wait time.Duration) {
	now := time.Now()
	ok, suppressed, since := s.connectLog.Allow(now)
	if !ok {
		return
	}
	ev := s.log.Warn().Err(err).Int64("attempt", s.status.connectAttempts.Load()).Int64("retry_ms", wait.Milliseconds())
	if suppressed > 0 {
		ev = ev.Int("failures_not_logged", suppressed).Int64("failing_for_s", int64(now.Sub(since).Seconds()))
	}
	ev.Msg("cannot connect to broker; retrying every few seconds (logged again after 1 min, then at doubling intervals up to hourly, while it fails)")
}

// setDue says the loop moves on within d.
func (s *source) setDue(d time.Duration) { s.due.Store(time.Now().Add(d).UnixNano()) }

// overdue is how long past its due time the loop is, 0 when it is not.
func (s *source) overdue(now time.Time) time.Duration {
	due := s.due.Load()
	if due == 0 {
		return 0
	}
	return max(now.Sub(time.Unix(0, due)), 0)
}

// jitter spreads d by ±20 % (never past reconnectMax), so receivers
// restarted together do not reconnect in lockstep.
func jitter(d time.Duration) time.Duration {
	j := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(j, reconnectMax)
}

func (s *source) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// connect makes one attempt: connect, then subscribe to every topic.
func (s *source) connect() (*session, error) {
	attempt := s.status.connectAttempts.Add(1)
	sess := &session{lost: make(chan error, 1), heldCh: make(chan struct{}, 1), nonce: newNonce()}
	sess.acks = newAckQueue(s.status)
	opts := clientOptions(s.cfg, s.instance, s.endpoint, s.maxPayload, sess.nonce,
		func(_ mqtt.Client, m mqtt.Message) { s.onMessage(sess, m) },
		func(_ mqtt.Client, err error) {
			select {
			case sess.lost <- err:
			default:
			}
		})
	sess.client = mqtt.NewClient(opts)
	s.log.Debug().Int64("attempt", attempt).Msg("connecting")

	fail := func(err error) (*session, error) {
		sess.client.Disconnect(0)
		sess.acks.stop()
		return nil, fmt.Errorf("connect to %s: %s", s.status.brokerURL(), shared.MaskPasswords(err.Error()))
	}
	tok := sess.client.Connect()
	if err := s.await(tok, connectTimeout(s.cfg)+time.Second); err != nil {
		return fail(err)
	}
	ct := tok.(*mqtt.ConnectToken)

	filters := make(map[string]byte, len(s.cfg.Topics))
	for _, t := range s.cfg.Topics {
		filters[t] = byte(s.cfg.QoS)
	}
	sub := sess.client.SubscribeMultiple(filters, nil)
	if err := s.await(sub, connectTimeout(s.cfg)); err != nil {
		return fail(fmt.Errorf("subscribe: %w", err))
	}
	for topic, code := range sub.(*mqtt.SubscribeToken).Result() {
		if code == 0x80 {
			return fail(fmt.Errorf("subscribe: the broker refused topic %q (not authorised?)", topic))
		}
	}
	s.status.markConnected(time.Now())
	ev := s.log.Info().Int64("attempt", attempt).Bool("sessionPresent", ct.SessionPresent()).
		Strs("topics", s.cfg.Topics).Int("qos", s.cfg.QoS)
	if failures, since := s.connectLog.Reset(); failures > 0 {
		ev = ev.Int("failed_attempts", failures).Int64("failed_for_s", int64(time.Since(since).Seconds()))
	}
	ev.Msg("connected and subscribed")
	return sess, nil
}

var errStopped = errors.New("source stopped")

// await waits for tok, the timeout, or the source being stopped.
func (s *source) await(tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no answer within %s", timeout)
	case <-s.stop:
		return errStopped
	}
}

// How a connection ended.
type sessionEnd int

const (
	endLost      sessionEnd = iota // the connection dropped
	endRedeliver                   // we reconnected to get held QoS 1 messages back
	endStop                        // the source was stopped
)

// serve runs while a connection is up.
func (s *source) serve(sess *session) sessionEnd {
	for {
		select {
		case err := <-sess.lost:
			return s.lost(sess, err)
		case <-s.stop:
			s.disconnect(sess)
			return endStop
		case <-sess.heldCh:
			return s.redeliver(sess)
		}
	}
}

// redeliver ends a session in which QoS 1 messages were held back. The
// broker redelivers unacknowledged messages only to a new session, so a
// reconnect is how they come back. It first waits until every record this
// session handed to the spool is on disk and acknowledged — the spool has
// then worked through what it had — and reconnects soon after if the
// session stored anything (a burst outran the in-memory bound). If it
// stored nothing (the spool is full, or the disk stalls), each further
// attempt waits twice as long, up to redeliveryMax.
func (s *source) redeliver(sess *session) sessionEnd {
	if sess.stored.Load() > 0 {
		s.redelivery = redeliveryMin
	}
	wait := s.redelivery
	s.redelivery = min(2*s.redelivery, redeliveryMax)
	s.log.Warn().Int64("storedThisSession", sess.stored.Load()).Int64("reconnect_in_ms", wait.Milliseconds()).
		Msg("spool refused QoS 1 messages; leaving them unacknowledged with the broker and reconnecting to have them redelivered")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !sess.acks.idle() {
		select {
		case err := <-sess.lost:
			return s.lost(sess, err)
		case <-s.stop:
			s.disconnect(sess)
			return endStop
		case <-tick.C:
		}
	}
	// While the spool is full (byte cap, free-disk floor) only the writer
	// releasing segments helps: reconnect as soon as the spool's bytes
	// shrink, else after wait. (The spool's Full flag cannot tell: it
	// stays set until an append succeeds.)
	base := s.spool.Stats()
	deadline := time.Now().Add(wait)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for time.Now().Before(deadline) {
		select {
		case err := <-sess.lost:
			return s.lost(sess, err)
		case <-s.stop:
			s.disconnect(sess)
			return endStop
		case <-poll.C:
		}
		if s.spool.Stats().SpoolBytes < base.SpoolBytes {
			break
		}
	}
	s.status.redeliveries.Add(1)
	s.disconnect(sess)
	return endRedeliver
}

func (s *source) lost(sess *session, err error) sessionEnd {
	sess.acks.stop()
	s.status.markDisconnected(time.Now(), err)
	s.log.Warn().Err(maskedErr(err)).Msg("connection lost; reconnecting")
	return endLost
}

// disconnect closes a connection cleanly: acknowledgements for records
// already handed to the spool go out first (bounded by drainTimeout), and
// the broker keeps a QoS 1 session for the next connection.
func (s *source) disconnect(sess *session) {
	wait := drainTimeout
	if s.stopping() {
		wait = s.drain
	}
	if !sess.acks.waitIdle(wait) {
		s.log.Warn().Int64("waited_ms", wait.Milliseconds()).Msg("closing the connection with QoS 1 acknowledgements still pending; the broker will redeliver those messages")
	}
	sess.client.Disconnect(250)
	sess.acks.stop()
	s.status.markDisconnected(time.Now(), nil)
}

func maskedErr(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(shared.MaskPasswords(err.Error()))
}

// onMessage runs on paho's goroutine for every message, in receive order.
// It must never wait long whatever the disk does: a handler that waits
// starves paho's reader, the keepalive fails, and the broker throws the
// backlog away (measured.md). So it only appends and queues the
// acknowledgement. An append into a full queue waits for room for at most
// spool.queueFullWaitMs, once per stall (spool.Options.QueueFullWait):
// that short push-back lets a burst the disk cannot take at once wait in
// the socket and the broker instead of being dropped.
func (s *source) onMessage(sess *session, m mqtt.Message) {
	now := time.Now()
	s.status.markReceived(now, m.Retained(), m.Duplicate())
	qos1 := m.Qos() > 0
	if !s.intake.Load() {
		return // closing: a QoS 1 message stays with the broker
	}
	if !s.filter.pass(m.Topic()) {
		s.status.filtered.Add(1)
		if qos1 {
			sess.acks.pushAck(m)
		}
		return
	}
	if size, ok := oversized(m.Payload(), sess.nonce); ok {
		// Discarded on the connection; it can never be stored, so a
		// QoS 1 one is acknowledged, or the broker would resend it
		// forever.
		if qos1 {
			sess.acks.pushAck(m)
		}
		s.status.countDrop(reasonOversized)
		if allowed, suppressed := s.warn.Allow(reasonOversized, now); allowed {
			s.log.Warn().Str("topic", m.Topic()).Int64("size_bytes", size).Int("limit_bytes", s.maxPayload).
				Int("qos", int(m.Qos())).Int("suppressedLastMinute", suppressed).
				Msg("dropped a message over spool.maxPayloadBytes as it arrived, without holding it in memory (counted as oversized; a QoS 1 one is acknowledged)")
		}
		return
	}
	if qos1 && sess.held.Load() {
		s.status.countHeld(reasonBackpressure)
		return
	}
	var p *pendingAck
	if qos1 {
		p = sess.acks.push(m)
	}
	payload := m.Payload()
	rec := spool.Record{
		ReceivedAt: now.UTC(),
		Source:     s.cfg.Name,
		Broker:     s.status.brokerURL(),
		Topic:      m.Topic(),
		QoS:        m.Qos(),
		Retained:   m.Retained(),
		Duplicate:  m.Duplicate(),
		MessageID:  m.MessageID(),
		Payload:    payload,
	}
	s.progress.appended.Add(1)
	err := s.spool.Append(rec, func(err error) { s.onWritten(sess, p, err) })
	if err == nil {
		s.status.appended.Add(1)
		s.status.appendBytes.Add(int64(len(payload)))
		sess.stored.Add(1)
		return
	}
	s.progress.appended.Add(-1)
	s.refused(sess, p, err, now)
}

// onWritten runs on the spool's goroutine when the group holding a record
// is on disk (err nil) or failed. It must not block either.
func (s *source) onWritten(sess *session, p *pendingAck, err error) {
	s.progress.settle(err)
	if err == nil {
		s.status.durable.Add(1)
		if p != nil {
			sess.acks.resolve(p, ackSend)
		}
		return
	}
	if p != nil {
		sess.acks.resolve(p, ackSkip)
		s.status.countHeld(reasonWriteFailed)
		s.hold(sess)
	} else {
		s.status.countDrop(reasonWriteFailed)
	}
	s.warnThrottled(reasonWriteFailed, p != nil, err, time.Now())
}

// refused handles an Append the spool turned down.
func (s *source) refused(sess *session, p *pendingAck, err error, now time.Time) {
	switch {
	case errors.Is(err, spool.ErrClosed):
		// Shutting down; a QoS 1 message stays with the broker.
		if p != nil {
			sess.acks.resolve(p, ackSkip)
		}
		return
	case errors.Is(err, spool.ErrPayloadTooLarge), errors.Is(err, spool.ErrInvalidRecord):
		// It will never fit: acknowledge it anyway, or the broker would
		// redeliver it forever.
		if p != nil {
			sess.acks.resolve(p, ackSend)
		}
		reason := reasonOversized
		if errors.Is(err, spool.ErrInvalidRecord) {
			reason = reasonInvalidRecord
		}
		s.status.countDrop(reason)
		s.warnThrottled(reason, false, err, now)
		return
	}
	reason := refusalReason(err)
	if p != nil {
		sess.acks.resolve(p, ackSkip)
		s.status.countHeld(reason)
		s.hold(sess)
	} else {
		s.status.countDrop(reason)
	}
	s.warnThrottled(reason, p != nil, err, now)
}

func refusalReason(err error) string {
	switch {
	case errors.Is(err, spool.ErrFull):
		return reasonSpoolFull
	case errors.Is(err, spool.ErrQueueFull):
		return reasonQueueFull
	default:
		return reasonWriteFailed
	}
}

// hold switches the session to leaving every QoS 1 message with the broker
// and tells the loop to reconnect later.
func (s *source) hold(sess *session) {
	if !sess.held.Swap(true) {
		sess.heldCh <- struct{}{}
	}
}

func (s *source) warnThrottled(reason string, held bool, err error, now time.Time) {
	key := reason
	if held {
		key += "/held"
	}
	ok, suppressed := s.warn.Allow(key, now)
	if !ok {
		return
	}
	ev := s.log.Warn().Err(err).Str("reason", reason).Int("suppressedLastMinute", suppressed)
	if held {
		ev.Msg("spool refused a QoS 1 message; not acknowledging it, so the broker keeps it for redelivery")
	} else {
		ev.Msg("spool refused a QoS 0 message; dropped (counted in the stats file)")
	}
}
