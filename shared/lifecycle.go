package shared

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// SignalContext returns a context cancelled by SIGTERM or SIGINT (a clean
// stop) and a channel that receives SIGHUP (reload). stop releases the
// signal handlers.
func SignalContext(parent context.Context) (ctx context.Context, reload <-chan os.Signal, stop func()) {
	ctx, cancel := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return ctx, hup, func() {
		signal.Stop(hup)
		cancel()
	}
}
