package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
)

// reloadScope is what a process makes of a changed configuration on
// SIGHUP: the keys it reads (used) and those of them it applies while it
// runs (reloadable). A pattern is a key ("logLevel") or a whole section
// ("spool.*"). Keys the process does not read are the other process's
// business and are not mentioned.
type reloadScope struct {
	used, reloadable []string
}

func matchKey(key string, patterns []string) bool {
	for _, p := range patterns {
		if section, ok := strings.CutSuffix(p, ".*"); ok && (key == section || strings.HasPrefix(key, section+".")) {
			return true
		}
		if key == p {
			return true
		}
	}
	return false
}

// split sorts the changed keys into those the process applies now and
// those that need a restart.
func (sc reloadScope) split(changed []string) (apply, restart []string) {
	for _, key := range changed {
		switch {
		case matchKey(key, sc.reloadable):
			apply = append(apply, key)
		case matchKey(key, sc.used):
			restart = append(restart, key)
		}
	}
	return apply, restart
}

// reportRestart logs, once per reload, the changed keys this process reads
// but cannot apply while it runs, by name only.
func reportRestart(log zerolog.Logger, process string, restart []string) {
	if len(restart) == 0 {
		return
	}
	log.Warn().Strs("keys", restart).
		Msg(fmt.Sprintf("SIGHUP: these settings changed but are not reloaded; they take effect when the %s is restarted", process))
}

// reloadLogLevel applies logLevel (already checked by LoadConfig) and logs
// the change. The line goes out at info before a less verbose level takes
// over, or after a more verbose one did, so that it is seen whenever
// either level shows info.
func reloadLogLevel(log zerolog.Logger, lvl *shared.LogLevel, name string) {
	to, err := shared.ParseLogLevel(name)
	if err != nil {
		log.Error().Err(err).Msg("SIGHUP: log level not changed")
		return
	}
	was := lvl.Level()
	if to == was {
		return
	}
	line := func() { log.Info().Str("from", was.String()).Str("to", to.String()).Msg("SIGHUP: log level changed") }
	if to > was {
		line()
		lvl.Set(to)
		return
	}
	lvl.Set(to)
	line()
}

// startLogging makes a long-running process's logger at level (a
// --log-level flag, else the configuration's logLevel) and logs the
// configuration's warnings once.
func startLogging(component, level string, cfg *shared.Config) (zerolog.Logger, *shared.LogLevel, error) {
	lv, err := shared.ParseLogLevel(level)
	if err != nil {
		return zerolog.Logger{}, nil, err
	}
	lvl := shared.NewLogLevel(lv)
	log := shared.NewLoggerWithLevel(os.Stderr, component, lvl, shared.LogAuto)
	for _, w := range cfg.Warnings {
		log.Warn().Msg(w)
	}
	return log, lvl, nil
}

// onSIGHUP calls reload for every SIGHUP until ctx ends, one at a time.
func onSIGHUP(ctx context.Context, sighup <-chan os.Signal, reload func()) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sighup:
				reload()
			}
		}
	}()
}

// loadForReload loads the configuration again and logs its warnings; a
// configuration that does not load is logged and changes nothing.
func loadForReload(log zerolog.Logger, path string) (*shared.Config, bool) {
	next, err := shared.LoadConfig(path)
	if err != nil {
		log.Error().Err(err).Msg("SIGHUP: configuration not reloaded; the running settings are unchanged")
		return nil, false
	}
	for _, w := range next.Warnings {
		log.Warn().Msg(w)
	}
	return next, true
}
