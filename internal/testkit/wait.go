package testkit

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails tb if it still does not
// after timeout. Tests wait on a condition, never on a fixed sleep, and the
// timeout is a deadline for a loaded machine, not a performance claim: give
// what a quiet machine needs many times over. The poll starts at 5 ms and
// backs off to 200 ms, so a cheap condition is seen at once and an
// expensive one (a database query) is not run in a tight loop.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	interval := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
		interval = min(2*interval, 200*time.Millisecond)
	}
}
