package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BenchScenarios and ChaosScenarios are what `meshingest-harness bench` and
// `meshingest-harness chaos` run by default.
var (
	BenchScenarios = []string{"steady"}
	ChaosScenarios = append([]string{"receiver-kill-qos1", "receiver-kill-qos0", "writer-kill", "db-lock", "broker-restart", "spool-cap", "segment-damage", "vacuum-swap"},
		BoundaryScenarios...)
)

// Command is `meshingest-harness bench` and `meshingest-harness chaos`: flags, the suite,
// the report and the plot. It returns the exit status: 0 when every
// scenario passed, 1 when one failed, 2 for bad flags.
func Command(name string, args []string, defaults []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	full := FullConfig()
	report := fs.String("report", "harness-report.md", "write the markdown report to `FILE`")
	plotPath := fs.String("plot", "", "write the PNG plot of lag and spool depth to `FILE` (default: the report's name with -lag.png)")
	work := fs.String("work", "", "keep every run's files (logs, database, spool) under `DIR` (default: a new temporary folder)")
	binary := fs.String("binary", "", "the meshingest `executable` under test (default: meshingest beside this executable, else on PATH)")
	short := fs.Bool("short", false, "the short version: fewer kills, a 30 s lock, 15 s of steady load")
	only := fs.String("only", strings.Join(defaults, ","), "comma-separated `scenarios` to run; all: "+strings.Join(scenarioNames(), ","))
	seed := fs.Uint64("seed", full.Seed, "load generator seed")
	rate := fs.Float64("rate", full.Rate, "steady load in messages per second")
	steady := fs.Duration("steady", 0, "steady load duration (default 10m, 15s with --short)")
	lock := fs.Duration("lock", 0, "how long the database lock is held (default 10m, 30s with --short)")
	kills := fs.Int("kills", 0, "SIGKILLs per kill scenario (default 100, 5 with --short)")
	noStrace := fs.Bool("no-strace", false, "do not count fsyncs with strace during the steady phase")
	profile := fs.String("profile", "", "the spool.profile of the processes under test: low-latency (the product's default) or low-wear")
	poll := fs.Duration("poll", 0, "how often the latency poller reads the database, the latency figures' resolution (default 100ms)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: meshingest-harness %s [flags]\n\n", name)
		fmt.Fprintln(fs.Output(), "Runs the load and fault harness against real receiver and writer processes,")
		fmt.Fprintln(fs.Output(), "a real mosquitto and real files, and writes a markdown report and a PNG plot.")
		fmt.Fprintln(fs.Output(), "Scenarios:")
		for _, s := range Scenarios() {
			fmt.Fprintf(fs.Output(), "  %-20s %s\n", s.Name, s.Description)
		}
		fmt.Fprintln(fs.Output())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg := full
	if *short {
		cfg = ShortConfig()
	}
	cfg.Seed, cfg.Rate = *seed, *rate
	if *steady > 0 {
		cfg.Steady = *steady
	}
	if *lock > 0 {
		cfg.Lock = *lock
	}
	if *kills > 0 {
		cfg.ReceiverKills, cfg.QoS0Kills, cfg.WriterKills = *kills, *kills, *kills
	}
	cfg.Strace = cfg.Strace && !*noStrace
	cfg.Profile, cfg.Poll = *profile, *poll
	if *short {
		cfg.Strace = !*noStrace
	}
	cfg.Only = strings.Split(*only, ",")
	for _, n := range cfg.Only {
		if !contains(scenarioNames(), n) {
			fmt.Fprintf(os.Stderr, "meshingest-harness %s: unknown scenario %q; known: %s\n", name, n, strings.Join(scenarioNames(), ", "))
			return 2
		}
	}
	if *binary == "" {
		exe, err := productBinary()
		if err != nil {
			fmt.Fprintf(os.Stderr, "meshingest-harness %s: %v\n", name, err)
			return 2
		}
		*binary = exe
	}
	cfg.Binary = *binary
	if *work == "" {
		dir, err := os.MkdirTemp("", "meshingest-"+name+"-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "meshingest-harness %s: %v\n", name, err)
			return 1
		}
		*work = dir
	}
	cfg.WorkDir = *work
	cfg.Progress = os.Stderr
	if *plotPath == "" {
		*plotPath = strings.TrimSuffix(*report, filepath.Ext(*report)) + "-lag.png"
	}
	suite, err := NewSuite(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshingest-harness %s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	info := RunInfo{Command: "meshingest-harness " + name + " " + strings.Join(args, " "), Started: time.Now(), Config: cfg, Version: version(cfg.Binary), LoadStart: LoadAvg()}
	fmt.Fprintf(os.Stderr, "meshingest-harness %s: files under %s\n", name, cfg.WorkDir)
	results := suite.Run(ctx)
	info.Finished, info.LoadEnd = time.Now(), LoadAvg()
	plotted := *plotPath
	if err := WritePlot(*plotPath, results); err != nil {
		fmt.Fprintf(os.Stderr, "meshingest-harness %s: %v\n", name, err)
		plotted = ""
	}
	if err := WriteReport(*report, plotted, info, results); err != nil {
		fmt.Fprintf(os.Stderr, "meshingest-harness %s: write report: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "meshingest-harness %s: report %s, plot %s\n", name, *report, plotted)
	status := 0
	for _, r := range results {
		fmt.Fprintf(os.Stderr, "  %-20s %s\n", r.Name, r.Verdict())
		if !r.Pass {
			status = 1
		}
	}
	return status
}

func scenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// version is the binary's `meshingest version` output.
func version(bin string) string {
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		return bin
	}
	return strings.TrimSpace(string(out))
}

// productBinary finds the meshingest executable the harness runs: the one
// beside this executable (both built into one folder), else the one on PATH.
func productBinary() (string, error) {
	if exe, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(exe), "meshingest")
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() {
			return beside, nil
		}
	}
	if p, err := exec.LookPath("meshingest"); err == nil {
		return p, nil
	}
	return "", errors.New("no meshingest executable beside this one or on PATH; build it (go build -o meshingest ./cmd/meshingest) or pass --binary")
}
