// Package demo is `meshingest demo`: the whole pipeline on real traffic in
// one command, with nothing installed but Go. It starts the embedded broker,
// the receiver and the writer as supervised child processes (exactly what
// `meshingest run` does), replays the embedded real capture to the broker,
// waits until every message is in the database, stops, and summarises the
// database it leaves behind.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/meshingest/meshingest/internal/capture"
	"github.com/meshingest/meshingest/internal/dbsummary"
	"github.com/meshingest/meshingest/internal/replay"
	"github.com/meshingest/meshingest/internal/supervise"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// ChannelKeys are the keys that decrypt the corpus's group messages: the
// well-known Public key, and hashtag channels whose keys derive from their
// names.
var (
	ChannelKeys  = map[string]string{"Public": "8b3387e9c5cdea6ac9e5edbaa115cd72"}
	HashChannels = []string{"#test", "#wardriving", "#bot", "#chat"}
)

// configEnv are the environment variables that override the configuration
// file (shared.LoadConfig).
var configEnv = []string{"DB_PATH", "MQTT_BROKER", "MQTT_TOPIC", "MESHINGEST_SPOOL_DIR", "CORESCOPE_INGESTOR_STATS"}

// Options configure Run.
type Options struct {
	// Dir receives the configuration, database, spool and logs. It must
	// not exist or be empty: a demo adds to nothing.
	Dir string
	// Executable is the meshingest binary; "" means this process's own.
	Executable string
	// Timeout bounds the wait for the writer to drain everything.
	Timeout time.Duration
	// Out receives the progress lines and the summary.
	Out io.Writer
}

// Result is what the demo left behind.
type Result struct {
	Summary    dbsummary.Summary
	Published  int64
	Database   string
	Config     string
	Log        string
	Drained    time.Duration // from the end of the replay to an empty spool
	LagSeconds float64       // receive → committed, of the last record
}

// ErrDirNotEmpty is returned when Options.Dir already holds files.
var ErrDirNotEmpty = errors.New("demo: the folder is not empty")

// Run runs the demo. The children's logs go to demo.log in Dir, so the
// terminal shows only progress and the result.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if err := prepareDir(opts.Dir); err != nil {
		return Result{}, err
	}
	res := Result{
		Database: filepath.Join(opts.Dir, "meshcore.db"),
		Config:   filepath.Join(opts.Dir, "config.json"),
		Log:      filepath.Join(opts.Dir, "demo.log"),
	}
	statsFile := filepath.Join(opts.Dir, "corescope-ingestor-stats.json")
	spoolDir := filepath.Join(opts.Dir, "spool")
	cfg := map[string]any{
		"dbPath":       res.Database,
		"spoolDir":     spoolDir,
		"channelKeys":  ChannelKeys,
		"hashChannels": HashChannels,
		"writer":       map[string]any{"statsFile": statsFile},
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(res.Config, append(data, '\n'), 0o600); err != nil {
		return res, fmt.Errorf("demo: %w", err)
	}
	logFile, err := os.OpenFile(res.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return res, fmt.Errorf("demo: %w", err)
	}
	defer logFile.Close()
	log := shared.NewLogger(logFile, "run", "info", shared.LogJSON)

	// The demo's own settings must win over the environment's overrides: an
	// operator's DB_PATH would otherwise point the demo at a real database.
	// The configuration is loaded in this process too, so they are unset
	// here for the demo's duration, and kept from the children.
	env := supervise.Environ(os.Environ(), configEnv...)
	for _, name := range configEnv {
		if v, ok := os.LookupEnv(name); ok {
			defer os.Setenv(name, v)
			os.Unsetenv(name)
		}
	}
	stack, err := supervise.NewStack(supervise.StackOptions{
		ConfigPath: res.Config, Executable: opts.Executable, Env: env,
		Stdout: logFile, Stderr: logFile, Log: log,
		// A demo that cannot start its children should say so soon.
		Supervise: supervise.Options{MaxBackoff: 5 * time.Second, StopTimeout: 20 * time.Second},
	})
	if err != nil {
		return res, err
	}
	fmt.Fprintf(opts.Out, "embedded MQTT broker on %s; starting the receiver and the writer (logs: %s)\n", stack.Broker.Addr(), res.Log)

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	go func() { stack.Run(runCtx); close(stopped) }()
	stopStack := func() { stop(); <-stopped }
	defer stopStack()

	// A message published before the receiver has subscribed would go
	// nowhere: wait for its subscription.
	if err := waitSubscribed(ctx, stack, 30*time.Second); err != nil {
		return res, fmt.Errorf("demo: %w (status: %s); see %s", err, stack.Supervisor(), res.Log)
	}
	n, err := replay.Validate(replay.BytesSource(capture.DemoBytes()))
	if err != nil {
		return res, fmt.Errorf("demo: the embedded capture: %w", err)
	}
	fmt.Fprintf(opts.Out, "replaying %d real MQTT messages (31 observers in the San Francisco Bay Area, March 2026) at QoS 1\n", n)
	st, err := replay.Run(ctx, replay.BytesSource(capture.DemoBytes()), replay.Options{
		Broker: stack.Broker.URL(), QoS: 1, Passes: 1, ClientID: "meshingest-demo-replay",
	})
	if err != nil {
		return res, err
	}
	res.Published = st.Published
	replayed := time.Now()
	fmt.Fprintf(opts.Out, "published %d messages in %s; waiting until every one is in the database\n", st.Published, st.Elapsed.Round(time.Millisecond))

	waitCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	status, err := waitDrained(waitCtx, stack, spoolDir, st.Published)
	if err != nil {
		return res, fmt.Errorf("demo: %w (status: %s); see %s", err, stack.Supervisor(), res.Log)
	}
	res.Drained = time.Since(replayed)
	if ws, err := readWriterExtra(statsFile); err == nil {
		res.LagSeconds = ws.LagSeconds
	}
	stopStack()

	res.Summary, err = dbsummary.Read(ctx, res.Database)
	if err != nil {
		return res, fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(opts.Out, "spool drained %s after the replay; receiver and writer stopped\n\n", res.Drained.Round(10*time.Millisecond))
	res.Summary.WriteTable(opts.Out,
		dbsummary.Row{Label: "spool depth", Value: fmt.Sprintf("%d records not yet in the database", status.Stats.DepthRecords)},
		dbsummary.Row{Label: "lag", Value: fmt.Sprintf("%.1f s from the last message's receipt to the writer's report of its commit", res.LagSeconds)},
		dbsummary.Row{Label: "database", Value: res.Database},
		dbsummary.Row{Label: "configuration", Value: res.Config},
	)
	fmt.Fprintf(opts.Out, "\nServe it with CoreScope: DB_PATH=%s (or open it with sqlite3).\n", res.Database)
	return res, nil
}

func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dir, 0o700)
	case err != nil:
		return fmt.Errorf("demo: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("%w: %s; give a new or empty folder with --dir", ErrDirNotEmpty, dir)
	}
	return nil
}

// waitDrained waits until the receiver has every published message on disk
// and the writer has committed all of it. The first half is the embedded
// broker's view: the receiver acknowledges a QoS 1 message only once it is
// durable, so nothing unacknowledged in its session, once every message was
// sent to it, means nothing left outside the spool. The
// second is the spool's: the appender's depth gauge (records on disk after
// the writer's position), refreshed after that moment, is zero.
func waitDrained(ctx context.Context, stack *supervise.Stack, spoolDir string, published int64) (spool.AppenderStatus, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var allDurable time.Time
	for {
		select {
		case <-ctx.Done():
			if allDurable.IsZero() {
				b := stack.Broker.Stats()
				return spool.AppenderStatus{}, fmt.Errorf("the receiver did not take every message of %d (broker: %+v)", published, b)
			}
			return spool.AppenderStatus{}, errors.New("the writer did not drain the spool in time")
		case <-tick.C:
		}
		if allDurable.IsZero() {
			// Every message reached the broker and was written to the
			// receiver, and the receiver's session holds none unacknowledged.
			b := stack.Broker.Stats()
			held, ok := stack.Broker.Unacknowledged(supervise.EmbeddedClientID)
			if b.MessagesReceived >= published && b.MessagesSent >= published && ok && held == 0 {
				allDurable = time.Now()
			}
			continue
		}
		st, err := spool.ReadAppenderStatus(spoolDir)
		if err != nil || st.UpdatedAt.Before(allDurable) {
			continue
		}
		if st.Stats.QueuedRecords == 0 && st.Stats.DepthRecords == 0 {
			return st, nil
		}
	}
}

func waitSubscribed(ctx context.Context, stack *supervise.Stack, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !stack.Broker.Subscribed(supervise.EmbeddedClientID, "meshcore/SJC/x/packets") {
		if time.Now().After(deadline) {
			return fmt.Errorf("the receiver has not subscribed to the embedded broker within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// writerExtra is the part of the writer's stats file the summary shows.
type writerExtra struct {
	LagSeconds float64 `json:"lag_seconds"`
}

func readWriterExtra(path string) (writerExtra, error) {
	var f struct {
		Meshingest writerExtra `json:"meshingest"`
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return writerExtra{}, err
	}
	err = json.Unmarshal(data, &f)
	return f.Meshingest, err
}
