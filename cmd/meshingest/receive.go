package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/receiver"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

// receiverReload: on SIGHUP the receiver applies its sources and the log
// level; the rest it reads needs a restart.
var receiverReload = reloadScope{
	used:       []string{"mqttSources", "mqtt", "logLevel", "spoolDir", "spool.*", "receiver.*"},
	reloadable: []string{"mqttSources", "mqtt", "logLevel"},
}

// runReceive is `meshingest receive`: MQTT sources into the spool.
// Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on a runtime
// failure, 2 for bad flags or configuration.
func runReceive(args []string) int {
	fs := flag.NewFlagSet("receive", flag.ContinueOnError)
	configPath := fs.String("config", "", "CoreScope `config.json` with meshingest's keys (environment overrides apply)")
	logLevel := fs.String("log-level", "", "log level (debug, info, warn, error); overrides logLevel in the config, also on reload")
	instance := fs.String("instance", "", "run as the receiver `NAME` among several on this configuration: spool into <spoolDir>/NAME, with MQTT client ids and a stats file of its own (docs/configuration.md#receiver-instances)")
	metricsListen := fs.String("metrics-listen", "", "serve metrics on `ADDR` instead of receiver.metricsListen (each instance needs its own)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: meshingest receive [--config FILE] [--log-level LEVEL] [--instance NAME] [--metrics-listen ADDR]")
		fmt.Fprintln(fs.Output(), "Subscribes to the configured MQTT sources and appends every message to the spool.")
		fmt.Fprintln(fs.Output(), "SIGTERM stops cleanly; SIGHUP reloads the sources and logLevel from the config file.")
		fs.PrintDefaults()
	}
	if status, ok := parseFlagsOnly(fs, args); !ok {
		return status
	}
	cfg, ok := loadConfig(fs, *configPath)
	if !ok {
		return 2
	}
	if *instance != "" {
		if err := shared.CheckInstanceName(*instance); err != nil {
			fmt.Fprintln(os.Stderr, "meshingest receive: --instance:", err)
			return 2
		}
	}
	// The flags' folders and addresses, applied to every configuration
	// read (a reload's too, so it does not see them as changed keys).
	adjust := func(c *shared.Config) {
		if *instance != "" {
			c.SpoolDir, c.Receiver.StatsFile = shared.InstanceSpoolDir(c.SpoolDir, *instance), shared.InstanceStatsFile(c.Receiver.StatsFile, *instance)
		}
		if *metricsListen != "" {
			c.Receiver.MetricsListen = *metricsListen
		}
	}
	adjust(cfg)
	level := cfg.LogLevel
	if *logLevel != "" {
		level = *logLevel
	}
	log, lvl, err := startLogging("receiver", level, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshingest receive: --log-level:", err)
		return 2
	}
	if *instance != "" {
		log = log.With().Str("instance", *instance).Logger()
	}
	if len(cfg.MQTTSources) == 0 {
		fmt.Fprintln(os.Stderr, "meshingest receive: config: mqttSources: no MQTT source configured; add one (or set mqtt.broker or MQTT_BROKER)")
		return 2
	}

	ctx, reload, stop := shared.SignalContext(context.Background())
	defer stop()

	app, err := spool.OpenAppender(cfg.SpoolDir, spool.OptionsFromConfig(cfg.Spool))
	if err != nil {
		log.Error().Err(err).Str("spoolDir", cfg.SpoolDir).Msg("cannot open the spool")
		return 1
	}
	opts := receiver.Options{
		Sources: cfg.MQTTSources,
		Spool:   app,
		// The same limit the spool was opened with (0: its default).
		MaxPayloadBytes: cfg.Spool.MaxPayloadBytes,
		StatsFile:       cfg.Receiver.StatsFile,
		Instance:        *instance,
		Log:             log,
		Notifier:        shared.NewNotifier(),
	}
	if cfg.Receiver.MetricsListen != "" {
		opts.Registry = shared.NewRegistry()
	}
	rcv, err := receiver.New(opts)
	if err != nil {
		app.Close()
		fmt.Fprintln(os.Stderr, "meshingest receive:", err)
		return 2
	}
	if opts.Registry != nil {
		if _, err := shared.ServeMetrics(ctx, cfg.Receiver.MetricsListen, opts.Registry, rcv.Health(), log); err != nil {
			app.Close()
			log.Error().Err(err).Msg("cannot serve metrics")
			return 1
		}
	}
	cur := cfg
	onSIGHUP(ctx, reload, func() { cur = reloadReceiver(log, lvl, rcv, *configPath, *logLevel, cur, adjust) })
	if err := rcv.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// reloadReceiver applies the configuration file again (SIGHUP) and returns
// the configuration now in force: the sources and the log level (unless
// --log-level fixed it) change; what else changed that the receiver reads
// is logged as needing a restart, at every reload until it is restarted.
// A configuration that does not load changes nothing.
func reloadReceiver(log zerolog.Logger, lvl *shared.LogLevel, rcv *receiver.Receiver, path, levelFlag string, cur *shared.Config, adjust func(*shared.Config)) *shared.Config {
	next, ok := loadForReload(log, path)
	if !ok {
		return cur
	}
	adjust(next)
	apply, restart := receiverReload.split(shared.ChangedKeys(cur, next))
	inForce := *cur
	// The level first, so that the lines about the rest are logged at it.
	switch {
	case levelFlag == "":
		reloadLogLevel(log, lvl, next.LogLevel)
		inForce.LogLevel = next.LogLevel
	case matchKey("logLevel", apply):
		log.Warn().Str("logLevel", next.LogLevel).Str("flag", levelFlag).Msg("SIGHUP: logLevel changed in the config, but --log-level sets the level; not changed")
	}
	if err := rcv.Reload(next.MQTTSources); err != nil {
		log.Error().Err(err).Msg("SIGHUP: sources not reloaded; the running sources are unchanged")
	} else {
		inForce.MQTTSources, inForce.MQTT = next.MQTTSources, next.MQTT
	}
	reportRestart(log, "receiver", restart)
	return &inForce
}
