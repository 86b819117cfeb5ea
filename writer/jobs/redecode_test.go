package jobs

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer"
	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// withoutBot is the corpus configuration without the #bot channel: its
// messages are stored as enc_CA.
func withoutBot(t *testing.T) (noBot, full *cfgAndRecords) {
	t.Helper()
	noBot = &cfgAndRecords{cfg: writertest.CorpusConfig(t), recs: writertest.CorpusRecords(t)}
	noBot.cfg.HashChannels = slices.DeleteFunc(slices.Clone(noBot.cfg.HashChannels), func(s string) bool { return s == "#bot" })
	drainRecords(t, noBot.cfg, noBot.recs)
	full = corpusDatabase(t)
	return noBot, full
}

type storedDecoding struct {
	decoded, channel sql.NullString
}

func decodings(t *testing.T, path string) map[string]storedDecoding {
	t.Helper()
	db := writertest.OpenRaw(t, path)
	rows, err := db.Query(`SELECT hash, decoded_json, channel_hash FROM transmissions`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]storedDecoding{}
	for rows.Next() {
		var h string
		var d storedDecoding
		rows.Scan(&h, &d.decoded, &d.channel)
		out[h] = d
	}
	return out
}

// TestRedecode_AddedKey_EncRowsBecomeChannelRows: the corpus stored without
// the #bot key and re-decoded after it was added equals the corpus stored
// with it, row for row; a second run finds nothing to do.
func TestRedecode_AddedKey_EncRowsBecomeChannelRows(t *testing.T) {
	noBot, full := withoutBot(t)
	db := writertest.OpenRaw(t, noBot.cfg.DBPath)
	botHash := "enc_CA"
	if h := decoder.ChannelHash(func() []byte { k := decoder.HashtagKey("#bot"); return k[:] }()); h != 0xCA {
		t.Fatalf("#bot's channel hash is %02X", h)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions WHERE channel_hash = ?`, botHash); n != 15 {
		t.Fatalf("%d enc_CA rows without the #bot key, want 15 (14 #bot, 1 another channel)", n)
	}

	cfg := *noBot.cfg
	cfg.HashChannels = full.cfg.HashChannels
	var windows int
	prog, err := Redecode(context.Background(), &cfg, RedecodeOptions{Window: 100, Pause: time.Millisecond,
		Progress: func(RedecodeProgress) { windows++ }})
	if err != nil {
		t.Fatal(err)
	}
	// 14 #bot messages decrypted; the 15th enc_CA row now has a key to
	// fail with ("decryption_failed" instead of "no_key").
	if !prog.Done || prog.Updated != 15 || prog.Cursor != prog.Upper || windows < 2 {
		t.Errorf("progress %+v after %d windows; want done, 15 rows rewritten", prog, windows)
	}
	if n := writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions WHERE channel_hash = '#bot'
		AND json_extract(decoded_json, '$.type') = 'CHAN' AND json_extract(decoded_json, '$.channel') = '#bot'`); n != 14 {
		t.Errorf("%d decrypted #bot CHAN rows, want 14", n)
	}
	got, want := decodings(t, noBot.cfg.DBPath), decodings(t, full.cfg.DBPath)
	if len(got) != len(want) {
		t.Fatalf("%d transmissions, want %d", len(got), len(want))
	}
	for h, w := range want {
		if got[h] != w {
			t.Errorf("transmission %s: decoded_json %s channel_hash %s\nwant %s %s", h, got[h].decoded.String, got[h].channel.String, w.decoded.String, w.channel.String)
		}
	}

	again, err := Redecode(context.Background(), &cfg, RedecodeOptions{})
	if err != nil || !again.AlreadyDone || again.Updated != 15 {
		t.Errorf("second run: %+v, %v; want already done", again, err)
	}
}

// TestRedecode_Interrupted_ResumesWhereItStopped: a run cancelled after
// its first window resumes from there and ends with the same rows.
func TestRedecode_Interrupted_ResumesWhereItStopped(t *testing.T) {
	noBot, full := withoutBot(t)
	cfg := *noBot.cfg
	cfg.HashChannels = full.cfg.HashChannels
	ctx, cancel := context.WithCancel(context.Background())
	first, err := Redecode(ctx, &cfg, RedecodeOptions{Window: 50, Pause: time.Millisecond, Progress: func(RedecodeProgress) { cancel() }})
	if !errors.Is(err, context.Canceled) || first.Done || first.Cursor != 50 {
		t.Fatalf("interrupted run: %+v, %v; want stopped after the first window", first, err)
	}
	second, err := Redecode(context.Background(), &cfg, RedecodeOptions{Window: 50, Pause: time.Millisecond})
	if err != nil || !second.Resumed || !second.Done || second.Updated != 15 || second.Upper != first.Upper {
		t.Errorf("resumed run: %+v, %v", second, err)
	}
	got, want := decodings(t, noBot.cfg.DBPath), decodings(t, full.cfg.DBPath)
	for h, w := range want {
		if got[h] != w {
			t.Errorf("transmission %s differs after the resumed run", h)
		}
	}
	// Other keys start over.
	cfg.HashChannels = append(slices.Clone(cfg.HashChannels), "#another")
	third, err := Redecode(context.Background(), &cfg, RedecodeOptions{})
	if err != nil || third.Resumed || third.AlreadyDone || !third.Done || third.Updated != 0 {
		t.Errorf("run with other keys: %+v, %v; want a new run that changes nothing", third, err)
	}
}

// TestRedecode_WhileTheWriterRuns: redecode and a writer draining a large
// backlog share the database: both finish, nothing is lost, and the writer
// never sees the database refuse a batch (redecode's locks are shorter
// than its busy timeout).
func TestRedecode_WhileTheWriterRuns(t *testing.T) {
	t.Parallel() // long: runs beside the package's other long ones
	noBot, full := withoutBot(t)
	n := streamSize(40000, 5000, 5000)
	// A backlog heard right after the corpus, in a spool folder of its own:
	// its records are numbered from 1 again, so the position the corpus
	// left in the database is forgotten.
	recs, _ := generatedRecords(t, 7, n, noBot.recs[len(noBot.recs)-1].ReceivedAt.Add(time.Minute))
	mustExec(t, writertest.OpenRaw(t, noBot.cfg.DBPath), `DELETE FROM meshingest_state WHERE key = 'spool_position'`)
	w, _ := newWriter(t, spoolOf(t, recs), noBot.cfg)
	cfg := *noBot.cfg
	cfg.HashChannels = full.cfg.HashChannels
	done := make(chan RedecodeProgress, 1)
	go func() {
		// Start once the writer is busy.
		for w.Stats().Messages.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		prog, err := Redecode(context.Background(), &cfg, RedecodeOptions{Window: 20, Pause: time.Millisecond})
		if err != nil {
			t.Error(err)
		}
		done <- prog
	}()
	drain(t, w, nil, int64(n))
	prog := <-done
	if n := w.Stats().WriteErrors.Load(); n != 0 {
		t.Errorf("the database refused %d of the writer's batches", n)
	}
	if got := w.Stats().Messages.Load(); got != int64(n) {
		t.Errorf("writer consumed %d messages, want %d", got, n)
	}
	// Every channel message the run covered is decoded as the writer
	// decodes with the new keys (the generated backlog has #bot messages
	// too, stored as enc_CA by the writer without the key).
	decode, err := writer.DecodeOptions(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := writertest.OpenRaw(t, noBot.cfg.DBPath)
	rows, err := db.Query(`SELECT id, raw_hex, decoded_json, channel_hash FROM transmissions
		WHERE payload_type = 5 AND id <= ?`, prog.Upper)
	if err != nil {
		t.Fatal(err)
	}
	checked, bot := 0, 0
	for rows.Next() {
		var id int64
		var raw, decoded, channel string
		rows.Scan(&id, &raw, &decoded, &channel)
		f, _ := decoder.DecodeFrame(raw)
		p := decoder.DecodePacket(f, decode)
		if string(p.DecodedJSON()) != decoded || p.ChannelHash().String != channel {
			t.Errorf("transmission %d: %s %s, want %s %s", id, channel, decoded, p.ChannelHash().String, p.DecodedJSON())
		}
		checked++
		if channel == "#bot" {
			bot++
		}
	}
	rows.Close()
	if bot < 14 || prog.Updated < 15 {
		t.Errorf("%d #bot rows after %d rewritten, want at least the corpus's 14 and 15", bot, prog.Updated)
	}
	t.Logf("redecode covered %d transmissions while the writer stored %d more; %d rows rewritten, %d channel messages checked",
		prog.Upper, writertest.Count(t, db, `SELECT COUNT(*) FROM transmissions WHERE id > ?`, prog.Upper), prog.Updated, checked)
}
