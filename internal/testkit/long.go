package testkit

import "os"

// LongEnv names the variable that turns on the long forms of the tests:
// more kills, more messages, every harness scenario at its short-config
// size. The default forms keep `go test -race ./...` inside 20 minutes
// beside six CPU hogs and a disk hog (.ci/loaded); the long forms are for
// a quiet machine before a release:
//
//	MESHINGEST_LONG_TESTS=1 go test -race -timeout 60m ./...
const LongEnv = "MESHINGEST_LONG_TESTS"

// Long reports whether the long forms of the tests should run.
func Long() bool {
	v := os.Getenv(LongEnv)
	return v != "" && v != "0"
}
