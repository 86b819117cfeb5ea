// Package replay publishes a capture in the corpus JSONL format (package
// capture) to an MQTT broker: as fast as the broker takes it, at a fixed
// rate, or on the capture's own timeline sped up N times, once or in a loop.
// It is how the demo feeds the receiver, how the end-to-end tests feed a
// real broker, and how an operator replays a spool export.
package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/shared"
)

// Options configures Run.
type Options struct {
	// Broker is the broker URL: mqtt://host:1883 (also tcp://, mqtts://,
	// ssl://, tls://, ws://, wss://). A user:password in the URL is used
	// when Username is empty.
	Broker             string
	Username, Password string
	// ClientID defaults to meshingest-replay-<pid>.
	ClientID string
	// QoS of every publish: 0 (what observers use) or 1 (each message is
	// acknowledged by the broker; Run returns only when all are).
	QoS byte
	// Rate caps publishing at this many messages per second; 0 means no cap.
	Rate float64
	// Speed, when above 0, keeps the gaps between the capture's received_at
	// times, divided by Speed (1 = real time). Lines without received_at
	// follow the previous line at once. Rate still caps the result.
	Speed float64
	// MaxGap shortens any single gap of the capture's timeline to at most
	// this (only with Speed). The corpus opens with status messages stamped
	// days before its packets; without a cap a real-time replay would sit
	// silent for days. Zero means no cap.
	MaxGap time.Duration
	// Passes is how many times the capture is played; 0 means until ctx
	// ends. Each pass starts its timeline afresh.
	Passes int
	// InFlight bounds the publishes not yet completed by paho (written, or
	// acknowledged at QoS 1); it keeps memory flat on a large capture.
	// Zero means 256.
	InFlight int
	// Progress, when set, is called about every ProgressEvery (default 1 s)
	// and once at the end, from Run's goroutine.
	Progress      func(Stats)
	ProgressEvery time.Duration
}

// Stats describe what a replay has published so far.
type Stats struct {
	Published    int64 // messages completed (acknowledged at QoS 1)
	PayloadBytes int64 // payload bytes of those messages
	Pass         int   // the pass in progress, from 1
	Passes       int   // Options.Passes (0: until stopped)
	Elapsed      time.Duration
	Done         bool // the final call
}

// Rate is the average message rate since the start.
func (s Stats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Published) / s.Elapsed.Seconds()
}

// Source opens the capture once per pass.
type Source func() (io.ReadCloser, error)

// FileSource reads a capture file; "-" is standard input, which can be
// played only once.
func FileSource(path string) Source {
	if path == "-" {
		used := false
		return func() (io.ReadCloser, error) {
			if used {
				return nil, ErrStdinOnce
			}
			used = true
			return io.NopCloser(os.Stdin), nil
		}
	}
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// BytesSource plays an in-memory capture, such as capture.DemoBytes().
func BytesSource(b []byte) Source {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// ErrStdinOnce is returned when a replay from standard input is asked to
// loop: standard input cannot be read twice.
var ErrStdinOnce = errors.New("replay: standard input can be played only once; save it to a file to loop")

// Validate reads the whole capture and returns the first bad line's error,
// so that a replay from a file publishes nothing when any line is bad,
// rather than stopping halfway. It returns the number of messages.
func Validate(src Source) (int, error) {
	rc, err := src()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	r := capture.NewReader(rc)
	n := 0
	for {
		_, err := r.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// Run connects, publishes the capture opts.Passes times (or until ctx
// ends) and disconnects. A bad line stops the replay with an error naming
// the line; what was published before it stays published. When ctx ends,
// Run returns ctx's error after the publishes in flight have completed.
func Run(ctx context.Context, src Source, opts Options) (Stats, error) {
	if opts.QoS > 1 {
		return Stats{}, fmt.Errorf("replay: QoS %d is not supported; use 0 or 1", opts.QoS)
	}
	if opts.Rate < 0 || opts.Speed < 0 || opts.Passes < 0 {
		return Stats{}, errors.New("replay: rate, speed and passes must not be negative")
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 256
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = time.Second
	}
	client, err := connect(opts)
	if err != nil {
		return Stats{}, err
	}
	defer client.Disconnect(250)

	p := &player{opts: opts, client: client, start: time.Now(), lastProgress: time.Now()}
	p.stats.Passes = opts.Passes
	runErr := p.run(ctx, src)
	if err := p.drain(); err != nil && runErr == nil {
		runErr = err
	}
	p.stats.Done = true
	p.report(true)
	return p.snapshot(), runErr
}

func connect(opts Options) (paho.Client, error) {
	u, err := url.Parse(opts.Broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("replay: broker %q is not a URL like mqtt://host:1883", shared.MaskBrokerURL(opts.Broker))
	}
	user, pass := opts.Username, opts.Password
	if user == "" && u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	u.User = nil
	id := opts.ClientID
	if id == "" {
		id = "meshingest-replay-" + strconv.Itoa(os.Getpid())
	}
	o := paho.NewClientOptions().AddBroker(u.String()).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(30 * time.Second).
		SetProtocolVersion(4)
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("replay: connect to %s: timed out; is the broker running?", shared.MaskBrokerURL(opts.Broker))
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("replay: connect to %s: %s", shared.MaskBrokerURL(opts.Broker), shared.MaskPasswords(err.Error()))
	}
	return c, nil
}

type pending struct {
	tok   paho.Token
	bytes int
}

type player struct {
	opts   Options
	client paho.Client
	start  time.Time

	// window holds the publishes paho has not completed yet, oldest first.
	window       []pending
	stats        Stats
	lastProgress time.Time
	nextSend     time.Time // the rate cap's earliest next send
}

func (p *player) run(ctx context.Context, src Source) error {
	for pass := 1; p.opts.Passes == 0 || pass <= p.opts.Passes; pass++ {
		p.stats.Pass = pass
		if err := p.playOnce(ctx, src); err != nil {
			return err
		}
	}
	return nil
}

func (p *player) playOnce(ctx context.Context, src Source) error {
	rc, err := src()
	if err != nil {
		return fmt.Errorf("replay: open capture: %w", err)
	}
	defer rc.Close()
	r := capture.NewReader(rc)
	// The timeline of this pass: capture time t0 is played at wall time w0.
	var t0, prevAt time.Time
	var w0 time.Time
	var shift time.Duration // total gap removed by MaxGap so far
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if derr := p.drain(); derr != nil {
				return derr
			}
			return fmt.Errorf("replay: %w (fix or remove the line; %d messages were published before it)", err, p.stats.Published)
		}
		if p.opts.Speed > 0 && !m.ReceivedAt.IsZero() {
			if t0.IsZero() {
				t0, prevAt, w0 = m.ReceivedAt, m.ReceivedAt, time.Now()
			}
			if gap := m.ReceivedAt.Sub(prevAt); p.opts.MaxGap > 0 && gap > p.opts.MaxGap {
				shift += gap - p.opts.MaxGap
			}
			if m.ReceivedAt.After(prevAt) {
				prevAt = m.ReceivedAt
			}
			offset := time.Duration(float64(m.ReceivedAt.Sub(t0)-shift) / p.opts.Speed)
			if err := p.sleepUntil(ctx, w0.Add(offset)); err != nil {
				return err
			}
		}
		if p.opts.Rate > 0 {
			if err := p.sleepUntil(ctx, p.nextSend); err != nil {
				return err
			}
			now := time.Now()
			interval := time.Duration(float64(time.Second) / p.opts.Rate)
			// A cap, not a schedule: time lost to a slow broker is not
			// made up with a burst.
			if p.nextSend.Before(now) {
				p.nextSend = now
			}
			p.nextSend = p.nextSend.Add(interval)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.publish(m); err != nil {
			return err
		}
	}
}

func (p *player) sleepUntil(ctx context.Context, at time.Time) error {
	for {
		d := time.Until(at)
		if d <= 0 {
			return ctx.Err()
		}
		// Wake at least every ProgressEvery so a slow timeline still
		// reports progress.
		d = min(d, p.opts.ProgressEvery)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		p.reap(false)
		p.report(false)
	}
}

func (p *player) publish(m capture.Message) error {
	if len(p.window) >= p.opts.InFlight {
		if err := p.complete(p.window[0]); err != nil {
			return err
		}
		p.window = p.window[1:]
	}
	tok := p.client.Publish(m.Topic, p.opts.QoS, m.Retained, m.Payload)
	p.window = append(p.window, pending{tok: tok, bytes: len(m.Payload)})
	if err := p.reap(false); err != nil {
		return err
	}
	p.report(false)
	return nil
}

// reap completes the publishes at the head of the window that are done
// (all of them, waiting, when wait is set).
func (p *player) reap(wait bool) error {
	for len(p.window) > 0 {
		head := p.window[0]
		if !wait {
			select {
			case <-head.tok.Done():
			default:
				return nil
			}
		}
		if err := p.complete(head); err != nil {
			return err
		}
		p.window = p.window[1:]
	}
	return nil
}

func (p *player) complete(pd pending) error {
	if !pd.tok.WaitTimeout(60 * time.Second) {
		return errors.New("replay: the broker has not acknowledged a publish for 60 s; is it overloaded or gone?")
	}
	if err := pd.tok.Error(); err != nil {
		return fmt.Errorf("replay: publish: %s", shared.MaskPasswords(err.Error()))
	}
	p.stats.Published++
	p.stats.PayloadBytes += int64(pd.bytes)
	return nil
}

func (p *player) drain() error { return p.reap(true) }

func (p *player) snapshot() Stats {
	s := p.stats
	s.Elapsed = time.Since(p.start)
	return s
}

func (p *player) report(final bool) {
	if p.opts.Progress == nil {
		return
	}
	if !final && time.Since(p.lastProgress) < p.opts.ProgressEvery {
		return
	}
	p.lastProgress = time.Now()
	p.opts.Progress(p.snapshot())
}
