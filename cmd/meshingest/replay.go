package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/meshingest/meshingest/internal/replay"
	"github.com/meshingest/meshingest/shared"
)

const replayUsage = `usage: meshingest replay [flags] FILE|-

Publishes a capture in the corpus JSONL format ({"topic","payload","received_at"}
per line; what 'meshingest spool export' writes) to an MQTT broker. FILE "-"
reads standard input. A file is checked completely before anything is
published; a bad line is reported with its number.

flags:
`

func runReplay(args []string) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), replayUsage); fs.PrintDefaults() }
	brokerURL := fs.String("broker", "mqtt://127.0.0.1:1883", "broker `URL`; user:password@ in it is used for login")
	username := fs.String("username", "", "MQTT username")
	password := fs.String("password", "", "MQTT password (env MESHINGEST_REPLAY_PASSWORD keeps it out of ps)")
	clientID := fs.String("client-id", "", "MQTT client id (default meshingest-replay-<pid>)")
	qos := fs.Int("qos", 0, "publish QoS: 0 or 1 (1: each message acknowledged by the broker)")
	rate := fs.Float64("rate", 0, "at most `N` messages per second (0: as fast as the broker takes them)")
	speed := fs.Float64("speed", 0, "keep the capture's received_at gaps, `N` times faster (1 = real time; 0: off)")
	maxGap := fs.Duration("max-gap", time.Minute, "with --speed, shorten longer gaps of the capture to this (0: keep them)")
	var loop loopFlag = 1
	fs.Var(&loop, "loop", "play the capture again and again until interrupted; --loop=N plays it N times")
	quiet := fs.Bool("quiet", false, "no progress line")

	path, err := parseWithOnePositional(fs, args)
	if err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsagePrinted):
			return 2
		}
		fmt.Fprintln(os.Stderr, "meshingest replay:", err)
		fs.Usage()
		return 2
	}
	if *qos != 0 && *qos != 1 {
		fmt.Fprintf(os.Stderr, "meshingest replay: --qos %d is not supported; use 0 or 1\n", *qos)
		return 2
	}
	if *password == "" {
		*password = os.Getenv("MESHINGEST_REPLAY_PASSWORD")
	}

	src := replay.FileSource(path)
	if path == "-" && loop != 1 {
		fmt.Fprintln(os.Stderr, "meshingest replay:", replay.ErrStdinOnce)
		return 2
	}
	if path != "-" {
		n, err := replay.Validate(src)
		if err != nil {
			fmt.Fprintf(os.Stderr, "meshingest replay: %s: %v; nothing was published\n", path, err)
			return 1
		}
		if n == 0 {
			fmt.Fprintf(os.Stderr, "meshingest replay: %s holds no messages\n", path)
			return 1
		}
	}

	ctx, _, stop := shared.SignalContext(context.Background())
	defer stop()
	opts := replay.Options{
		Broker: *brokerURL, Username: *username, Password: *password, ClientID: *clientID,
		QoS: byte(*qos), Rate: *rate, Speed: *speed, MaxGap: *maxGap, Passes: int(loop),
	}
	if !*quiet {
		opts.Progress, opts.ProgressEvery = progressPrinter(os.Stderr)
	}
	st, err := replay.Run(ctx, src, opts)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "meshingest "+err.Error())
		return 1
	}
	if *quiet {
		fmt.Fprintln(os.Stderr, progressLine(st))
	}
	return 0
}

// progressPrinter rewrites one line on a terminal every second; elsewhere
// (a log, CI) it prints a line every ten seconds.
func progressPrinter(w *os.File) (func(replay.Stats), time.Duration) {
	st, err := w.Stat()
	if err == nil && st.Mode()&os.ModeCharDevice != 0 {
		return func(s replay.Stats) {
			end := ""
			if s.Done {
				end = "\n"
			}
			fmt.Fprintf(w, "\r\033[K%s%s", progressLine(s), end)
		}, time.Second
	}
	return func(s replay.Stats) { fmt.Fprintln(w, progressLine(s)) }, 10 * time.Second
}

func progressLine(s replay.Stats) string {
	passes := "∞"
	if s.Passes > 0 {
		passes = strconv.Itoa(s.Passes)
	}
	verb := "replaying"
	if s.Done {
		verb = "replayed"
	}
	return fmt.Sprintf("%s: %d messages, %.1f KiB of payload, pass %d/%s, %s, %.0f msg/s",
		verb, s.Published, float64(s.PayloadBytes)/1024, s.Pass, passes, s.Elapsed.Round(100*time.Millisecond), s.Rate())
}

// loopFlag is --loop (forever, stored as 0 passes) or --loop=N (N passes).
type loopFlag int

func (l *loopFlag) String() string   { return strconv.Itoa(int(*l)) }
func (l *loopFlag) IsBoolFlag() bool { return true }
func (l *loopFlag) Set(s string) error {
	switch s {
	case "true":
		*l = 0
		return nil
	case "false":
		*l = 1
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("want --loop (until interrupted) or --loop=N with N ≥ 1, not %q", s)
	}
	*l = loopFlag(n)
	return nil
}

// parseWithOnePositional parses flags placed before or after the one
// positional argument.
// errUsagePrinted: the flag package has said what is wrong, with the usage.
var errUsagePrinted = errors.New("bad flag")

func parseWithOnePositional(fs *flag.FlagSet, args []string) (string, error) {
	if status, ok := parseFlags(fs, args); !ok { // help on stdout, a bad flag on stderr
		if status == 0 {
			return "", flag.ErrHelp
		}
		return "", errUsagePrinted
	}
	if fs.NArg() == 0 {
		return "", errors.New("missing the capture FILE (or - for standard input)")
	}
	pos := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("one capture file at a time; unexpected %q", fs.Arg(0))
	}
	return pos, nil
}
