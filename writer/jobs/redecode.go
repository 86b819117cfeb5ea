package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/dbfile"
	"github.com/rs/zerolog"
)

// Redecode (`meshingest redecode`) decodes stored transmissions again from
// their raw_hex and rewrites decoded_json and channel_hash where the
// decoding now differs. The writer decides them once, when a transmission
// is first stored: a channel message heard before its key was configured
// stays "enc_XX" (CoreScope's later ingestor calls the fix a key
// backfill). By default only channel messages that were not decrypted are
// looked at, and a row only ever changes from not decrypted to decrypted;
// with All every transmission is decoded again and any difference is
// written (after a decoder rule changed).
//
// It is a second writer on the database, safe to run while `meshingest
// write` runs: it changes only decoded_json and channel_hash of rows that
// exist, which the writer never rewrites (its caches hold ids and times);
// each transaction covers a short window of ids and holds the write lock
// for milliseconds, with a pause between windows, so the writer's own
// busy_timeout absorbs it. Restart the writer with the new keys first, so
// that what it stores from then on is decoded with them: a run covers the
// rows that exist when it starts.
//
// Progress (a cursor over transmission ids) is stored in meshingest_state
// in the same transaction as each window's rows, so an interrupted run
// resumes where it stopped. It is tied to the keys and the mode it started
// with: a run with other keys starts from the beginning, and a finished run
// is not repeated for the same keys unless Restart is set.

// RedecodeOptions tune a run. Zero values mean the defaults.
type RedecodeOptions struct {
	// All decodes every transmission again, not only the channel messages
	// that were not decrypted.
	All bool
	// Restart ignores the stored progress and starts from the first row.
	Restart bool
	// Window is how many transmission ids one transaction covers. Larger
	// windows finish sooner and hold the lock longer. Default 2000 (a few
	// milliseconds of lock for channel messages; decoding every advert's
	// signature again in All mode is slower).
	Window int
	// Pause is the time between two transactions, in which the writer
	// takes the lock. Default 20 ms.
	Pause time.Duration
	// BusyTimeout is how long one attempt waits for the lock before it is
	// retried. Default 5 s.
	BusyTimeout time.Duration
	// Progress, if set, is called after every committed window.
	Progress func(RedecodeProgress)
	Log      zerolog.Logger
}

// RedecodeProgress is where a run is.
type RedecodeProgress struct {
	Fingerprint string    `json:"fingerprint"` // the keys and mode of the run
	All         bool      `json:"all"`
	Cursor      int64     `json:"cursor"`  // the last transmission id done
	Upper       int64     `json:"upper"`   // the last id the run covers (the newest at its start)
	Scanned     int64     `json:"scanned"` // rows decoded again
	Updated     int64     `json:"updated"` // rows rewritten
	Started     time.Time `json:"started"`
	Done        bool      `json:"done"`

	Resumed     bool `json:"-"` // this run continued a stored one
	AlreadyDone bool `json:"-"` // nothing to do: a run with these keys finished
}

// Fraction is the part of the id range done.
func (p RedecodeProgress) Fraction() float64 {
	if p.Upper <= 0 || p.Done {
		return 1
	}
	return float64(p.Cursor) / float64(p.Upper)
}

const stateRedecode = "redecode"

// ErrNotMeshingestDatabase: redecode needs the schema the writer creates.
var ErrNotMeshingestDatabase = errors.New("not a database the writer has opened")

// Redecode runs (or resumes) a re-decode of the database in cfg.DBPath
// with the keys in cfg. It returns when every row is done, or with the
// progress so far when ctx ends (run it again to resume).
func Redecode(ctx context.Context, cfg *shared.Config, opts RedecodeOptions) (RedecodeProgress, error) {
	if opts.Window <= 0 {
		opts.Window = 2000
	}
	if opts.Pause <= 0 {
		opts.Pause = 20 * time.Millisecond
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	decode, err := writer.DecodeOptions(cfg)
	if err != nil {
		return RedecodeProgress{}, err
	}
	fp, err := redecodeFingerprint(cfg, opts.All)
	if err != nil {
		return RedecodeProgress{}, err
	}
	conn, closeDB, err := openForRedecode(ctx, cfg.DBPath, opts.BusyTimeout)
	if err != nil {
		return RedecodeProgress{}, err
	}
	defer closeDB()
	r := &redecoder{conn: conn, decode: decode, opts: opts}
	if err := r.checkSchema(ctx); err != nil {
		return RedecodeProgress{}, fmt.Errorf("redecode %s: %w", cfg.DBPath, err)
	}
	prog, err := r.start(ctx, fp)
	if err != nil || prog.Done {
		return prog, err
	}
	for prog.Cursor < prog.Upper {
		if err := ctx.Err(); err != nil {
			return prog, err
		}
		if err := r.window(ctx, &prog); err != nil {
			return prog, err
		}
		if opts.Progress != nil {
			opts.Progress(prog)
		}
		if prog.Cursor < prog.Upper {
			sleepCtx(ctx, opts.Pause)
		}
	}
	prog.Done = true
	if err := r.inTx(ctx, func() error { return saveStateJSON(ctx, r.conn, stateRedecode, prog) }); err != nil {
		return prog, err
	}
	opts.Log.Info().Int64("scanned", prog.Scanned).Int64("updated", prog.Updated).Int64("took_ms", time.Since(prog.Started).Milliseconds()).
		Msg("redecode finished")
	return prog, nil
}

// openForRedecode opens an existing database as a second writer: the busy
// timeout is set before anything else (the writer may hold the lock right
// then), and nothing about the file is changed (the writer made it WAL).
func openForRedecode(ctx context.Context, path string, busy time.Duration) (*sql.Conn, func(), error) {
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("open database %s: %w", path, err)
	}
	q := url.Values{}
	q.Set("mode", "rw")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "synchronous(FULL)")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("open database %s: %w", path, err)
	}
	closeDB := func() { conn.Close(); db.Close() }
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		closeDB()
		return nil, nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		closeDB()
		return nil, nil, fmt.Errorf("open database %s: journal_mode is %q, not wal: %w; run `meshingest write` once first", path, mode, ErrNotMeshingestDatabase)
	}
	return conn, closeDB, nil
}

type redecoder struct {
	conn   *sql.Conn
	decode decoder.Options
	opts   RedecodeOptions
	busy   bool // a busy episode is being reported
}

func (r *redecoder) checkSchema(ctx context.Context) error {
	for _, table := range []string{"transmissions", "meshingest_state"} {
		var n int
		if err := r.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w (no table %s); run `meshingest write` once, it creates or upgrades the schema", ErrNotMeshingestDatabase, table)
		}
	}
	return nil
}

// start resumes the stored run for these keys, or starts a new one.
func (r *redecoder) start(ctx context.Context, fp string) (RedecodeProgress, error) {
	var prog RedecodeProgress
	err := r.inTx(ctx, func() error {
		var stored RedecodeProgress
		found, err := readStateJSON(ctx, r.conn, stateRedecode, &stored)
		if err != nil {
			return err
		}
		if found && !r.opts.Restart && stored.Fingerprint == fp {
			prog = stored
			prog.AlreadyDone, prog.Resumed = stored.Done, !stored.Done
			return nil
		}
		if found && !stored.Done && stored.Fingerprint != fp && !r.opts.Restart {
			r.opts.Log.Info().Int64("cursor", stored.Cursor).Int64("upper", stored.Upper).
				Msg("an unfinished redecode was for other keys or another mode; starting over with these")
		}
		prog = RedecodeProgress{Fingerprint: fp, All: r.opts.All, Started: time.Now().UTC()}
		if err := r.conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM transmissions`).Scan(&prog.Upper); err != nil {
			return err
		}
		return saveStateJSON(ctx, r.conn, stateRedecode, prog)
	})
	return prog, err
}

// window decodes the next window of ids again and commits the changed rows
// with the new cursor.
func (r *redecoder) window(ctx context.Context, prog *RedecodeProgress) error {
	hi := min(prog.Cursor+int64(r.opts.Window), prog.Upper)
	next := *prog
	err := r.inTx(ctx, func() error {
		next = *prog
		// Without All: the channel messages not decrypted (a decrypted
		// row is never rewritten, whatever the keys say now).
		filter := ` AND payload_type IN (5, 6) AND (decoded_json IS NULL OR decoded_json NOT LIKE '%"decryptionStatus":"decrypted"%')`
		if r.opts.All {
			filter = ""
		}
		rows, err := r.conn.QueryContext(ctx, `SELECT id, raw_hex, decoded_json, channel_hash FROM transmissions
			WHERE id > ? AND id <= ? AND raw_hex != ''`+filter, prog.Cursor, hi)
		if err != nil {
			return err
		}
		type change struct {
			id      int64
			decoded []byte
			channel sql.NullString
		}
		var changes []change
		for rows.Next() {
			var id int64
			var raw string
			var decoded, channel sql.NullString
			if err := rows.Scan(&id, &raw, &decoded, &channel); err != nil {
				rows.Close()
				return err
			}
			f, err := decoder.DecodeFrame(raw)
			if err != nil {
				continue // stored before the firmware's rules were applied; leave it
			}
			next.Scanned++
			p := decoder.DecodePacket(f, r.decode)
			nd, nc := p.DecodedJSON(), p.ChannelHash()
			if nd == nil || (bytes.Equal(nd, []byte(decoded.String)) && decoded.Valid && nc == channel) {
				continue
			}
			changes = append(changes, change{id, nd, nc})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, c := range changes {
			if _, err := r.conn.ExecContext(ctx, `UPDATE transmissions SET decoded_json = ?, channel_hash = ? WHERE id = ?`,
				string(c.decoded), c.channel, c.id); err != nil {
				return fmt.Errorf("rewrite transmission %d: %w", c.id, err)
			}
		}
		next.Updated += int64(len(changes))
		next.Cursor = hi
		return saveStateJSON(ctx, r.conn, stateRedecode, next)
	})
	if err == nil {
		*prog = next
	}
	return err
}

// inTx runs fn in a write transaction, waiting (and retrying) while
// another process holds the lock, until ctx ends.
func (r *redecoder) inTx(ctx context.Context, fn func() error) error {
	wctx := context.WithoutCancel(ctx)
	delay := 100 * time.Millisecond
	for {
		err := r.attempt(wctx, fn)
		if err == nil {
			if r.busy {
				r.busy = false
				r.opts.Log.Info().Msg("database accepts writes again; redecode continues")
			}
			return nil
		}
		if !dbfile.IsBusy(err) {
			return err
		}
		if !r.busy {
			r.busy = true
			r.opts.Log.Warn().Err(err).Msg("database busy (the writer or a maintenance job holds the lock); redecode waits and retries")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleepCtx(ctx, delay)
		delay = min(2*delay, 2*time.Second)
	}
}

func (r *redecoder) attempt(ctx context.Context, fn func() error) error {
	if _, err := r.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	if err := fn(); err != nil {
		r.conn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	if _, err := r.conn.ExecContext(ctx, "COMMIT"); err != nil {
		r.conn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// redecodeFingerprint identifies what a run decodes with: the mode and
// everything in the configuration that changes a decoding.
func redecodeFingerprint(cfg *shared.Config, all bool) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "all=%v\x00verify=%v\x00", all, cfg.ShouldValidateSignatures())
	names := make([]string, 0, len(cfg.ChannelKeys))
	for n := range cfg.ChannelKeys {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(h, "key %s=%s\x00", n, cfg.ChannelKeys[n])
	}
	for _, list := range [][]string{cfg.HashChannels, cfg.HashRegions} {
		s := slices.Clone(list)
		slices.Sort(s)
		for _, v := range s {
			fmt.Fprintf(h, "%s\x00", v)
		}
		h.Write([]byte{1})
	}
	if cfg.ChannelKeysPath != "" {
		b, err := os.ReadFile(cfg.ChannelKeysPath)
		if err != nil {
			return "", fmt.Errorf("read channelKeysPath %s: %w", cfg.ChannelKeysPath, err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}
