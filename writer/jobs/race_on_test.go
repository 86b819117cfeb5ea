//go:build race

package jobs

// raceEnabled: the race detector slows the writer about tenfold, so the
// largest streams are shortened under it (see the tests that use it).
const raceEnabled = true
