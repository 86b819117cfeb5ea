package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/meshingest/meshingest/deploy"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/dbfile"
)

const configUsage = `usage: meshingest config check [--config FILE]

Loads the configuration as the receiver and the writer do (the file, then
the environment overrides, then the defaults), checks it, and prints the
effective configuration as JSON on standard output, every default filled
in and every password and channel key masked. Warnings (an unknown key,
a database that does not exist yet and would be created) go to standard
error.

Exit status: 0 when the configuration is valid (warnings or not), 1 when
it is not (the error names the file and the key), 2 for bad flags.

flags:
`

func runConfig(args []string) int {
	return configCommand(args, os.Stdout, os.Stderr)
}

func configCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, configUsage)
			return 0
		}
		fmt.Fprint(stderr, configUsage)
		return 2
	}
	fset := flag.NewFlagSet("config check", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprint(fset.Output(), configUsage); fset.PrintDefaults() }
	configPath := fset.String("config", "", "configuration `file` (CoreScope's config.json plus meshingest's keys); none: defaults and environment")
	if status, ok := parseFlagsOnlyTo(fset, args[1:], stdout); !ok {
		return status
	}
	cfg, err := shared.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "meshingest config check: %v\n", err)
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if err := checkFiles(cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "meshingest config check: %v\n", err)
		return 1
	}
	out, err := json.MarshalIndent(maskConfig(effectiveConfig(cfg)), "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "meshingest config check: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return 0
}

// checkFiles looks at the files the configuration names, as far as the
// processes would at start: an unreadable channelKeysPath stops the writer
// (an error here too); a database or spool folder that does not exist yet
// is created, which is right for a new installation and wrong after a
// typo in a path, so it is a warning with the full path.
func checkFiles(cfg *shared.Config, stderr io.Writer) error {
	if cfg.ChannelKeysPath != "" {
		if _, err := os.ReadFile(cfg.ChannelKeysPath); err != nil {
			return &shared.ConfigError{Field: "channelKeysPath", Msg: fmt.Sprintf("cannot read %s: %v; the writer would not start", cfg.ChannelKeysPath, err)}
		}
	}
	for _, p := range []struct{ key, path, what string }{
		{"dbPath", cfg.DBPath, "the writer will create a new, empty database there"},
		{"spoolDir", cfg.SpoolDir, "the receiver will create a new, empty spool there"},
	} {
		abs, _ := filepath.Abs(p.path)
		if _, err := os.Stat(p.path); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "warning: %s %s does not exist: %s (relative paths are from the current folder, %s under systemd)\n",
				p.key, abs, p.what, deploy.StateDir)
		}
	}
	return nil
}

// effectiveConfig is cfg with every default the code applies filled in,
// as the processes run it. spool.minFreeBytes stays 0 when unset: its
// default depends on the size of the spool's file system (the smaller of
// 512 MiB and 5 %), which the receiver measures when it opens the spool.
func effectiveConfig(cfg *shared.Config) *shared.Config {
	c := *cfg
	ms := func(d time.Duration) int { return int(d / time.Millisecond) }
	sp := &c.Spool
	// The timing defaults depend on the profile: the spool resolves them.
	so := spool.OptionsFromConfig(*sp).Resolved()
	sp.Profile = string(so.Profile)
	sp.GroupWindowMs = ms(so.GroupWindow)
	sp.MinGroupIntervalMs = ms(so.MinGroupInterval)
	if sp.GroupMaxRecords <= 0 {
		sp.GroupMaxRecords = spool.DefaultGroupMaxRecords
	}
	if sp.SegmentMaxBytes <= 0 {
		sp.SegmentMaxBytes = spool.DefaultSegmentMaxBytes
	}
	sp.SegmentMaxAgeMs = ms(so.SegmentMaxAge)
	if sp.MaxBytes == 0 {
		sp.MaxBytes = spool.DefaultMaxBytes
	}
	if sp.MaxPayloadBytes <= 0 {
		sp.MaxPayloadBytes = spool.DefaultMaxPayloadBytes
	}
	if sp.QueueMaxBytes <= 0 {
		sp.QueueMaxBytes = spool.DefaultQueueMaxBytes
	}
	if sp.QueueFullWaitMs == 0 {
		sp.QueueFullWaitMs = int(spool.DefaultQueueFullWait.Milliseconds())
	}
	w := &c.Writer
	if w.BatchMaxRecords <= 0 {
		w.BatchMaxRecords = writer.DefaultBatchMaxRecords
	}
	if w.BatchMaxMs <= 0 {
		w.BatchMaxMs = ms(writer.DefaultBatchMaxTime)
	}
	if w.RetryMaxMs <= 0 {
		w.RetryMaxMs = ms(writer.DefaultRetryMax)
	}
	if w.CacheKiB <= 0 {
		w.CacheKiB = dbfile.DefaultCacheKiB
	}
	if w.PageSize <= 0 {
		w.PageSize = dbfile.DefaultPageSize
	}
	if w.WALAutoCheckpointPages <= 0 {
		w.WALAutoCheckpointPages = dbfile.DefaultWALAutoCheckpointPages
	}
	if w.NotReadyAfterSec <= 0 {
		w.NotReadyAfterSec = int(writer.DefaultNotReadyAfter / time.Second)
	}
	if w.DedupWindowMs == 0 {
		w.DedupWindowMs = ms(writer.DefaultDedupWindow)
	}
	if w.DedupMemoryMinutes == 0 {
		w.DedupMemoryMinutes = int(writer.DefaultDedupMemory / time.Minute)
	}
	jobs := w.JobsEnabled()
	w.Jobs = &jobs
	return &c
}

// maskConfig replaces every secret with ****: source and broker
// passwords (in their fields and inside URLs) and channel keys.
func maskConfig(cfg *shared.Config) *shared.Config {
	c := *cfg
	c.MQTTSources = append([]shared.Source(nil), cfg.MQTTSources...)
	for i := range c.MQTTSources {
		s := &c.MQTTSources[i]
		s.Broker = shared.MaskBrokerURL(s.Broker)
		if s.Password != "" {
			s.Password = "****"
		}
	}
	if cfg.MQTT != nil {
		legacy := *cfg.MQTT
		legacy.Broker = shared.MaskBrokerURL(legacy.Broker)
		c.MQTT = &legacy
	}
	if len(cfg.ChannelKeys) > 0 {
		c.ChannelKeys = make(map[string]string, len(cfg.ChannelKeys))
		for name := range cfg.ChannelKeys {
			c.ChannelKeys[name] = "****"
		}
	}
	if c.Broker.Password != "" {
		c.Broker.Password = "****"
	}
	return &c
}
