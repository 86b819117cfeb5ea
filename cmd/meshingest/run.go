package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/internal/supervise"
	"github.com/meshingest/meshingest/shared"
)

const runUsage = `usage: meshingest run [--config FILE]

Runs the receiver and the writer as two supervised child processes: a crash
of one is logged and it is restarted; SIGTERM or Ctrl-C stops both cleanly.
With no broker in the configuration (mqttSources, mqtt, MQTT_BROKER), or
with broker.listen set, an embedded MQTT broker is started and the receiver
subscribes to it. The database and the spool default to ./data/.

flags:
`

func runRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), runUsage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "configuration `file` (CoreScope's config.json plus meshingest's keys); none: defaults and environment")
	if status, ok := parseFlagsOnly(fs, args); !ok {
		return status
	}
	cfg, ok := loadConfig(fs, *configPath)
	if !ok {
		return 2
	}
	log := shared.NewLogger(os.Stderr, "run", cfg.LogLevel, shared.LogAuto)

	stack, err := supervise.NewStack(supervise.StackOptions{
		ConfigPath: *configPath, Stdout: os.Stdout, Stderr: os.Stderr, Log: log,
	})
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	ev := log.Info().Str("database", stack.Config.DBPath).Str("spool", stack.Config.SpoolDir).Str("config", stack.ChildConfig)
	if stack.Broker != nil {
		ev = ev.Str("embeddedBroker", stack.Broker.Addr().String())
	}
	ev.Msg("starting the receiver and the writer")

	ctx, reload, stop := shared.SignalContext(context.Background())
	defer stop()
	done := make(chan struct{})
	go func() { stack.Run(ctx); close(done) }()
	superviseLoop(ctx, stack, reload, done, log)
	log.Info().Msg("stopped")
	return 0
}

// superviseLoop speaks to systemd for the run process (the children are
// kept off NOTIFY_SOCKET), passes SIGHUP on (Stack.Reload), and returns
// when the stack has stopped.
func superviseLoop(ctx context.Context, stack *supervise.Stack, reload <-chan os.Signal, done <-chan struct{}, log zerolog.Logger) {
	sup := stack.Supervisor()
	notify := shared.NewNotifier()
	notify.Ready("started the receiver and the writer")
	statusTick := time.NewTicker(10 * time.Second)
	defer statusTick.Stop()
	var watchdog <-chan time.Time
	if d := shared.WatchdogInterval(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-ctx.Done():
			notify.Stopping()
			<-done
			return
		case <-done:
			return
		case <-reload:
			if err := stack.Reload(); err != nil {
				log.Error().Err(err).Msg("SIGHUP: not reloaded")
			}
		case <-statusTick.C:
			notify.Status(sup.String())
		case <-watchdog:
			notify.Watchdog()
		}
	}
}
