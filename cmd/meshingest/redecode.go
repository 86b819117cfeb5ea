package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/jobs"
)

const redecodeUsage = `usage: meshingest redecode [--config FILE] [--all] [--restart]

Decodes the stored transmissions again from their raw_hex and rewrites
decoded_json and channel_hash where the result changed: after channel keys
were added (channelKeys, hashChannels, channelKeysPath), the channel
messages stored as enc_XX become decrypted #channel rows. With --all every
transmission is decoded again and any difference is written (after a
decoder rule changed).

Safe while 'meshingest write' runs: it writes in short transactions with
pauses between them and waits while the database is locked. Restart the
writer with the new keys first; a run covers the rows that exist when it
starts. Interrupted (Ctrl-C, SIGTERM), it stops after the window in progress
and the next run resumes there. A finished run is not repeated for the same
keys and mode (--restart forces it). CoreScope's server shows the rewritten
rows after its next restart.

Exit status: 0 done, 1 failed or interrupted, 2 usage or configuration error.

flags:
`

func runRedecode(args []string) int { return redecodeCommand(args, os.Stderr) }

func redecodeCommand(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("redecode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), redecodeUsage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "configuration `file` (CoreScope's config.json plus meshingest's keys); none: defaults and environment")
	all := fs.Bool("all", false, "decode every transmission again, not only channel messages that were not decrypted")
	restart := fs.Bool("restart", false, "ignore the stored progress and start from the first row")
	if status, ok := parseFlagsOnly(fs, args); !ok {
		return status
	}
	cfg, ok := loadConfig(fs, *configPath)
	if !ok {
		return 2
	}
	log := shared.NewLogger(stderr, "redecode", cfg.LogLevel, shared.LogAuto)
	ctx, _, stop := shared.SignalContext(context.Background())
	defer stop()

	line := redecodeLine{w: stderr}
	prog, err := jobs.Redecode(ctx, cfg, jobs.RedecodeOptions{
		All: *all, Restart: *restart, Log: log, Progress: line.print,
	})
	switch {
	case prog.AlreadyDone:
		fmt.Fprintf(stderr, "redecode: already done for these keys (%d rows rewritten then); --restart runs it again\n", prog.Updated)
		return 0
	case err != nil && ctx.Err() != nil:
		line.print(prog)
		fmt.Fprintln(stderr, "redecode: interrupted; run it again to resume")
		return 1
	case err != nil:
		log.Error().Err(err).Msg("redecode failed; run it again to resume")
		return 1
	}
	line.last = time.Time{}
	line.print(prog)
	return 0
}

// redecodeLine prints where a run is, at most once a second.
type redecodeLine struct {
	w     io.Writer
	last  time.Time
	first *jobs.RedecodeProgress
	at    time.Time
}

func (l *redecodeLine) print(p jobs.RedecodeProgress) {
	now := time.Now()
	if l.first == nil {
		first := p
		l.first, l.at = &first, now
	}
	if now.Sub(l.last) < time.Second && !p.Done {
		return
	}
	l.last = now
	rate, eta := "", ""
	if sec := now.Sub(l.at).Seconds(); sec > 0 && p.Cursor > l.first.Cursor {
		perSec := float64(p.Cursor-l.first.Cursor) / sec
		rate = fmt.Sprintf(", %.0f ids/s", perSec)
		if left := p.Upper - p.Cursor; left > 0 {
			eta = ", " + (time.Duration(float64(left)/perSec) * time.Second).Round(time.Second).String() + " left"
		}
	}
	state := "redecode"
	if p.Done {
		state = "redecode done"
	}
	fmt.Fprintf(l.w, "%s: %5.1f%% (transmission id %d of %d), %d decoded again, %d rewritten%s%s\n",
		state, 100*p.Fraction(), p.Cursor, p.Upper, p.Scanned, p.Updated, rate, eta)
}
