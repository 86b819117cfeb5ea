package harness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/tests/loadgen"
)

// Publisher plays the observers: it takes messages from a loadgen
// Generator and publishes them to the broker at a paced rate, remembering
// when each transmission and each observation was first published so the
// latency poller can time its arrival in the database.
type Publisher struct {
	client paho.Client
	qos    byte
	gen    *loadgen.Generator

	window chan struct{} // bounds QoS 1 publishes not yet acknowledged
	wg     sync.WaitGroup

	mu        sync.Mutex
	txTimes   map[string]time.Time      // content hash → first publish
	obsTimes  map[observation]time.Time // observation → first publish
	published atomic.Int64
	retries   atomic.Int64
	paused    chan struct{} // closed while publishing may go on
	// sending is held by Run from its look at paused to the end of the
	// publish: Pause takes it once after closing the gate, so that no
	// publish it did not see starts (and adds to wg) while it waits.
	sending sync.Mutex
	failed  error
}

// observation is an observation row's natural key.
type observation struct{ hash, observer, path string }

// NewPublisher connects to the broker. qos 1 makes every publish wait for
// the broker's acknowledgement (in a bounded window), so nothing is lost
// between the harness and the broker.
func NewPublisher(brokerURL string, qos byte, gen *loadgen.Generator) (*Publisher, error) {
	p := &Publisher{
		qos: qos, gen: gen, window: make(chan struct{}, 2000),
		txTimes: map[string]time.Time{}, obsTimes: map[observation]time.Time{},
		paused: make(chan struct{}),
	}
	close(p.paused)
	opts := paho.NewClientOptions().AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("harness-publisher-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetMaxReconnectInterval(500 * time.Millisecond).SetOrderMatters(false).
		SetKeepAlive(10 * time.Second).SetWriteTimeout(10 * time.Second)
	p.client = paho.NewClient(opts)
	tok := p.client.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("publisher: connect to %s: %v", brokerURL, tok.Error())
	}
	return p, nil
}

// Close waits for outstanding acknowledgements and disconnects.
func (p *Publisher) Close() {
	p.wg.Wait()
	p.client.Disconnect(250)
}

// Published is the number of messages handed to the broker.
func (p *Publisher) Published() int64 { return p.published.Load() }

// Retries counts publishes repeated after an error. At QoS 1 a repeat may
// reach the broker twice (the first attempt may have arrived), so the
// report names them.
func (p *Publisher) Retries() int64 { return p.retries.Load() }

// Run publishes n messages at rate messages per second (0: as fast as the
// window allows) and returns when they are all handed over (at QoS 1:
// acknowledged), or ctx ends.
func (p *Publisher) Run(ctx context.Context, n int, rate float64) error {
	start := time.Now()
	for i := 0; i < n; i++ {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.pauseGate():
		}
		p.sending.Lock()
		select {
		case <-p.pauseGate():
		default: // paused since the look above: wait at the gate again
			p.sending.Unlock()
			i--
			continue
		}
		err := p.publish(p.gen.Next())
		p.sending.Unlock()
		if err != nil {
			return err
		}
	}
	return p.Drain()
}

// RunFor publishes at rate until d has passed or ctx ends.
func (p *Publisher) RunFor(ctx context.Context, d time.Duration, rate float64) error {
	return p.Run(ctx, int(d.Seconds()*rate), rate)
}

func (p *Publisher) pauseGate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Pause stops publishing and waits until every publish so far is
// acknowledged; Resume lets Run go on.
func (p *Publisher) Pause() {
	p.mu.Lock()
	p.paused = make(chan struct{})
	p.mu.Unlock()
	p.sending.Lock() // a publish under way has added itself to wg
	p.sending.Unlock()
	p.wg.Wait()
}

func (p *Publisher) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.paused:
	default:
		close(p.paused)
	}
}

// notePublished records now as the publish time of m's transmission and
// observation, if they are the first, for the latency figures; it returns
// now.
func (p *Publisher) notePublished(m loadgen.Message) time.Time {
	now := time.Now()
	if m.Stored() {
		p.mu.Lock()
		if _, ok := p.txTimes[m.Hash]; !ok {
			p.txTimes[m.Hash] = now
		}
		k := observation{m.Hash, m.ObserverID, m.PathJSON}
		if _, ok := p.obsTimes[k]; !ok {
			p.obsTimes[k] = now
		}
		p.mu.Unlock()
	}
	return now
}

// publish hands m to paho. A message taken from the generator is in its
// accounting, so it is published whatever happens to the run's context:
// while the client is not connected it is retried (for up to a minute).
func (p *Publisher) publish(m loadgen.Message) error {
	p.notePublished(m)
	if p.qos == 1 {
		p.window <- struct{}{} // freed as acknowledgements arrive
		tok := p.client.Publish(m.Topic, 1, false, m.Payload)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.window }()
			if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
				err := tok.Error()
				if err == nil {
					err = errors.New("no acknowledgement within 60 s")
				}
				p.fail(fmt.Errorf("publisher: QoS 1 publish of message %d: %w", m.Seq, err))
				return
			}
			p.published.Add(1)
		}()
		return nil
	}
	deadline := time.Now().Add(time.Minute)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			p.retries.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
		tok := p.client.Publish(m.Topic, 0, false, m.Payload)
		tok.Wait()
		if tok.Error() == nil {
			p.published.Add(1)
			return nil
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("publisher: message %d not accepted within a minute: %w", m.Seq, tok.Error())
			p.fail(err)
			return err
		}
	}
}

func (p *Publisher) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed == nil {
		p.failed = err
	}
}

// Drain waits until every QoS 1 publish is acknowledged and returns the
// first failure, if any.
func (p *Publisher) Drain() error {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// firstPublished returns when the transmission with hash was first
// published.
func (p *Publisher) firstPublished(hash string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.txTimes[hash]
	return t, ok
}

// ObservationPublished returns when the observation (content hash,
// observer id, path_json) was first published.
func (p *Publisher) ObservationPublished(hash, observer, path string) (time.Time, bool) {
	return p.observationPublished(observation{hash, observer, path})
}

func (p *Publisher) observationPublished(k observation) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.obsTimes[k]
	return t, ok
}
