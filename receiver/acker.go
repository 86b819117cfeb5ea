package receiver

import (
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ackState is what becomes of one QoS 1 message's acknowledgement.
type ackState uint8

const (
	ackWaiting ackState = iota // its record is not on disk yet
	ackSend                    // on disk (or deliberately discarded): acknowledge it
	ackSkip                    // not stored: leave it with the broker, which redelivers it on the next session
)

type pendingAck struct {
	msg   mqtt.Message
	state ackState
}

// ackQueue acknowledges one connection's QoS 1 messages in the order they
// were received, each only once the spool says its record is on disk. It
// has its own goroutine because paho's Ack can block on a dead connection,
// and neither paho's message handler nor the spool's goroutine (which
// reports durability) may ever wait on the network. One queue belongs to
// one connection: an acknowledgement for an earlier connection is
// meaningless (the broker redelivers those with DUP), so when the
// connection ends the queue is dropped with whatever it still holds.
type ackQueue struct {
	status *sourceStatus

	mu      sync.Mutex
	pending []*pendingAck // receive order, oldest first
	// outstanding counts messages pushed and not yet either acknowledged
	// or skipped; zero means every stored message has been acknowledged.
	outstanding int
	stopped     bool

	wake chan struct{}
	quit chan struct{}
	done chan struct{}
}

func newAckQueue(status *sourceStatus) *ackQueue {
	q := &ackQueue{status: status, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go q.run()
	return q
}

// push adds a message whose record is being written; resolve it later.
func (q *ackQueue) push(msg mqtt.Message) *pendingAck {
	p := &pendingAck{msg: msg}
	q.mu.Lock()
	if !q.stopped {
		q.pending = append(q.pending, p)
		q.outstanding++
	}
	q.mu.Unlock()
	return p
}

// pushAck adds a message to acknowledge without storing it (filtered out).
func (q *ackQueue) pushAck(msg mqtt.Message) {
	q.resolve(q.push(msg), ackSend)
}

// resolve settles p. It never blocks: it is called from the spool's
// goroutine.
func (q *ackQueue) resolve(p *pendingAck, state ackState) {
	q.mu.Lock()
	p.state = state
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *ackQueue) run() {
	defer close(q.done)
	var batch []*pendingAck
	for {
		select {
		case <-q.quit:
			return
		case <-q.wake:
		}
		q.mu.Lock()
		n := 0
		for n < len(q.pending) && q.pending[n].state != ackWaiting {
			n++
		}
		batch = append(batch[:0], q.pending[:n]...)
		clear(q.pending[:n])
		q.pending = q.pending[n:]
		q.mu.Unlock()

		sent := 0
		for _, p := range batch {
			if p.state == ackSend {
				p.msg.Ack()
				sent++
			}
		}
		clear(batch)
		q.status.acked.Add(int64(sent))
		q.mu.Lock()
		q.outstanding -= n
		q.mu.Unlock()
	}
}

// idle reports whether every message pushed so far has been acknowledged
// or skipped.
func (q *ackQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.outstanding == 0
}

// waitIdle waits up to timeout for idle. It polls: it runs only when a
// connection is being closed, not per message.
func (q *ackQueue) waitIdle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !q.idle() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// stop ends the goroutine; messages not yet acknowledged stay with the
// broker.
func (q *ackQueue) stop() {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return
	}
	q.stopped = true
	q.pending = nil
	q.mu.Unlock()
	close(q.quit)
}
