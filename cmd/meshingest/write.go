package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/meshingest/meshingest/writer/jobs"
	"github.com/prometheus/client_golang/prometheus"
)

const writeUsage = `usage: meshingest write [--config FILE]

Drains the spool into CoreScope's SQLite database (dbPath) — spoolDir
itself, and every receiver instance's folder below it (receive
--instance), each publication applied once — creating or
upgrading its schema first, and keeps draining whatever the receiver spools
until SIGTERM; then it finishes the batch in progress and exits 0. Each
batch is one transaction that also stores the spool position, so a crash
loses and repeats nothing. While the database refuses writes (locked,
read-only, disk full) the writer retries and the spool keeps everything;
see writer/MAINTENANCE.md.

One writer per database and per spool folder: a second one exits at once
with status 3 (exitLocked), naming the lock file and the pid holding it. The
systemd unit does not restart on that status (RestartPreventExitStatus=3):
restarting would not make the other writer go away.

flags:
`

// writerReload: on SIGHUP the writer applies the channel keys, the
// transport regions and the log level; the rest it reads needs a restart.
// (It reads every key but the receiver's own: mqttSources only for their
// iataFilter and region.)
var writerReload = reloadScope{
	used: []string{"dbPath", "mqttSources", "mqtt", "logLevel", "channelKeys", "hashChannels", "channelKeysPath", "hashRegions",
		"validateSignatures", "geo_filter", "foreignAdverts", "retention", "metrics", "clientRxCoverage", "db",
		"observerBlacklist", "observerIATAWhitelist", "neighborEdgesMaxAgeDays", "spoolDir", "writer.*", "receiver.statsFile"},
	reloadable: []string{"logLevel", "channelKeys", "hashChannels", "channelKeysPath", "hashRegions"},
}

// exitLocked is the status of a writer that another writer keeps out of
// its database or spool folder: distinct, so that systemd's
// RestartPreventExitStatus= can tell it from a crash, which it restarts.
const exitLocked = 3

func runWrite(args []string) int {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), writeUsage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "configuration `file` (CoreScope's config.json plus meshingest's keys); none: defaults and environment")
	if status, ok := parseFlagsOnly(fs, args); !ok {
		return status
	}
	cfg, ok := loadConfig(fs, *configPath)
	if !ok {
		return 2
	}
	log, lvl, err := startLogging("writer", cfg.LogLevel, cfg)
	if err != nil { // LoadConfig checked logLevel
		fmt.Fprintln(os.Stderr, "meshingest write:", err)
		return 2
	}
	// The Go memory limit, by the number of spools drained
	// (writer.MemoryLimit), unless GOMEMLIMIT says otherwise.
	setMemoryLimit := os.Getenv("GOMEMLIMIT") == ""
	if setMemoryLimit {
		debug.SetMemoryLimit(writer.MemoryLimit(1))
	}

	ctx, reload, stop := shared.SignalContext(context.Background())
	defer stop()
	// The spool in spoolDir, or every receiver instance's below it
	// (receive --instance): one writer drains them all.
	src, err := writer.OpenMergedSource(cfg.SpoolDir, spool.ReaderOptions{
		OnQuarantine: func(ev spool.QuarantineEvent) {
			// Every record the segment held is in exactly one of the
			// counts; the stats file's meshingest.spool.reader sums them.
			log.Warn().Uint64("segment", ev.Segment).Str("reason", ev.Reason).Str("path", ev.Path).Str("moved_to", ev.Moved).
				Int("held_records", ev.Held).Int("kept_records", ev.Kept).Int("quarantined_records", ev.Damaged).
				Int("set_aside_records", ev.SetAside).Int("lost_records", ev.Lost).Bool("lost_exact", ev.LostExact).
				Int("unreadable_entries", ev.Entries).Msg(ev.String())
		},
	})
	if errors.Is(err, spool.ErrConsumerLocked) {
		log.Error().Err(err).Msg("another writer drains this spool folder; not starting")
		return exitLocked
	}
	if err != nil {
		log.Error().Err(err).Msg("cannot open the spool")
		return 1
	}
	defer src.Close()
	// CoreScope's jobs are registered here, explicitly (writer.New runs
	// none of its own); writer.jobs = false leaves them out.
	stats := writer.NewStats()
	j := jobs.New(cfg, log, stats)
	opts := writer.Options{Config: cfg, Log: log, Stats: stats, Hook: j.Hook(), Tasks: j.Tasks()}
	if setMemoryLimit {
		opts.OnSpools = func(spools int) {
			limit := writer.MemoryLimit(spools)
			if debug.SetMemoryLimit(limit) != limit {
				log.Info().Int("spools", spools).Int64("memory_limit_mib", limit>>20).Msg("Go memory limit set for the spools drained")
			}
		}
	}
	var reg *prometheus.Registry
	if cfg.Writer.MetricsListen != "" {
		reg = shared.NewRegistry()
		opts.Registry = reg
	}
	w, err := writer.NewMerged(src, opts)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 2
	}
	if reg != nil {
		if _, err := shared.ServeMetrics(ctx, cfg.Writer.MetricsListen, reg, w.Health(), log); err != nil {
			log.Error().Err(err).Msg("cannot serve metrics")
			return 1
		}
	}
	cur := cfg
	onSIGHUP(ctx, reload, func() { cur = reloadWriter(log, lvl, w, *configPath, cur) })
	if err := w.Run(ctx); errors.Is(err, writer.ErrLocked) {
		return exitLocked // Run logged it
	} else if err != nil {
		var de *dbfile.Error
		if errors.As(err, &de) && de.Permanent() {
			// Retrying cannot fix it: exit with the hint rather than
			// retry for ever without being ready. 2, like a bad
			// configuration, so that systemd's restarts stop soon.
			log.Error().Err(de.Err).Str("db", de.Path).Str("kind", string(de.Kind)).Str("hint", de.Hint()).Msg("cannot use the database: " + de.Op)
			return 2
		}
		log.Error().Err(err).Msg("writer stopped")
		return 1
	}
	return 0
}

// reloadWriter applies the configuration file again (SIGHUP) and returns
// the configuration now in force: channel keys, regions and the log level
// change; what else changed that the writer reads is logged as needing a
// restart, at every reload until it is restarted. A configuration that
// does not load changes nothing.
func reloadWriter(log zerolog.Logger, lvl *shared.LogLevel, w *writer.Writer, path string, cur *shared.Config) *shared.Config {
	next, ok := loadForReload(log, path)
	if !ok {
		return cur
	}
	_, restart := writerReload.split(shared.ChangedKeys(cur, next))
	inForce := *cur
	// The level first, so that the lines about the rest are logged at it.
	reloadLogLevel(log, lvl, next.LogLevel)
	inForce.LogLevel = next.LogLevel
	if err := w.Reload(next); err != nil {
		log.Error().Err(err).Msg("SIGHUP: channel keys and regions not reloaded; the running ones are unchanged")
	} else {
		inForce.ChannelKeys, inForce.HashChannels, inForce.ChannelKeysPath, inForce.HashRegions = next.ChannelKeys, next.HashChannels, next.ChannelKeysPath, next.HashRegions
	}
	reportRestart(log, "writer", restart)
	return &inForce
}
