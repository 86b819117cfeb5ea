package writer

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/writer/internal/writertest"
)

// TestWriter_Corpus_Totals drains the real capture and checks the totals
// a firmware-correct, CoreScope-compatible writer must end with
// (docs/reference/corpus.md), and that every stored hash is the firmware's.
func TestWriter_Corpus_Totals(t *testing.T) {
	cfg := writertest.CorpusConfig(t)
	recs := writertest.CorpusRecords(t)
	src := spoolOf(t, recs)
	drain(t, src, Options{Config: cfg}, int64(len(recs)))
	checkCorpusTotals(t, cfg.DBPath, recs)
	// Drained segments are deleted once their rows are durable.
	if n := sealedSegments(t, src.r.Dir()); n != 0 {
		t.Errorf("%d sealed segments left after draining", n)
	}
}

func checkCorpusTotals(t *testing.T, dbPath string, recs []Record) {
	t.Helper()
	db := writertest.OpenRaw(t, dbPath)
	expected, valid := expectedHashes(t)
	for _, c := range []struct {
		what  string
		query string
		want  int64
	}{
		{"transmissions", `SELECT COUNT(*) FROM transmissions`, 498},
		{"observations", `SELECT COUNT(*) FROM observations`, 498},
		{"observations without observer", `SELECT COUNT(*) FROM observations WHERE observer_idx IS NULL`, 0},
		{"observations with a dangling observer", `SELECT COUNT(*) FROM observations o LEFT JOIN observers b ON b.rowid = o.observer_idx WHERE b.id IS NULL`, 0},
		{"observers", `SELECT COUNT(*) FROM observers`, 31},
		// 22 observers publish packets, but D5EF2ED7…'s only one is the
		// rejected version-3 frame (observation 465).
		{"observers with stored packets", `SELECT COUNT(*) FROM observers WHERE last_packet_at IS NOT NULL`, 21},
		{"rejected frame's observer", `SELECT packet_count FROM observers WHERE id LIKE 'D5EF2ED7%' AND last_packet_at IS NULL`, 1},
		// Observations 85 and 294: one observer reports one frame twice.
		{"observations of the twice-reported advert", `SELECT COUNT(*) FROM observations b
			JOIN transmissions t ON t.id = b.transmission_id WHERE t.hash = 'd555071c5aafa5e0'`, 1},
		{"nodes", `SELECT COUNT(*) FROM nodes`, 90},
		{"advert_count sum", `SELECT SUM(advert_count) FROM nodes`, 102},
		{"dropped_packets", `SELECT COUNT(*) FROM dropped_packets`, 0},
		{"observer_metrics", `SELECT COUNT(*) FROM observer_metrics`, 30},
		{"GRP_TXT", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 5`, 165},
		{"ADVERT", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 4`, 102},
		{"RESPONSE", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 1`, 78},
		{"REQ", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 0`, 60},
		{"TXT_MSG", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 2`, 44},
		{"PATH", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 8`, 20},
		{"ANON_REQ", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 7`, 17},
		{"TRACE", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 9`, 8},
		{"CONTROL", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 11`, 4},
		{"adverts without from_pubkey", `SELECT COUNT(*) FROM transmissions WHERE payload_type = 4 AND from_pubkey IS NULL`, 0},
		{"last_seen before first_seen", `SELECT COUNT(*) FROM transmissions WHERE last_seen < strftime('%s', first_seen)`, 0},
		{"iata not upper-case", `SELECT COUNT(*) FROM observers WHERE iata != UPPER(TRIM(iata))`, 0},
	} {
		if got := writertest.Count(t, db, c.query); got != c.want {
			t.Errorf("%s = %d, want %d", c.what, got, c.want)
		}
	}
	wantChannels := map[string]int64{
		"#test": 35, "#wardriving": 17, "#bot": 14, "Public": 13, "#chat": 2,
		"enc_C3": 26, "enc_6E": 14, "enc_93": 10, "enc_F0": 9, "enc_66": 7, "enc_39": 4, "enc_5F": 3,
		"enc_37": 2, "enc_D9": 2, "enc_55": 1, "enc_18": 1, "enc_CA": 1, "enc_95": 1, "enc_2D": 1, "enc_11": 1, "enc_CC": 1,
	}
	rows, err := db.Query(`SELECT channel_hash, COUNT(*) FROM transmissions WHERE payload_type = 5 GROUP BY channel_hash`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for rows.Next() {
		var ch string
		var n int64
		rows.Scan(&ch, &n)
		got[ch] = n
	}
	rows.Close()
	for ch, n := range wantChannels {
		if got[ch] != n {
			t.Errorf("channel_hash %s: %d transmissions, want %d", ch, got[ch], n)
		}
	}
	for ch := range got {
		if _, ok := wantChannels[ch]; !ok {
			t.Errorf("unexpected channel_hash %q (%d)", ch, got[ch])
		}
	}

	rows, err = db.Query(`SELECT raw_hex, hash FROM transmissions`)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for rows.Next() {
		var raw, hash string
		rows.Scan(&raw, &hash)
		want, ok := expected[strings.ToLower(raw)]
		if !ok {
			t.Errorf("stored raw %s is not in expected.jsonl", raw)
			continue
		}
		if hash != want {
			t.Errorf("raw %s: stored hash %s, expected.jsonl says %s", raw, hash, want)
		}
		checked++
	}
	rows.Close()
	if checked != 498 {
		t.Errorf("checked %d hashes, want 498", checked)
	}

	// packet_count: one per status message plus one per packet message
	// the firmware accepts (a rejected frame does not touch its observer).
	wantCount := map[string]int64{}
	for _, r := range recs {
		parts := strings.Split(r.Topic, "/")
		switch parts[3] {
		case "status":
			wantCount[parts[2]]++
		case "packets":
			var p struct{ Raw string }
			json.Unmarshal(r.Payload, &p)
			if valid[strings.ToLower(p.Raw)] {
				wantCount[parts[2]]++
			}
		}
	}
	for id, n := range wantCount {
		if got := writertest.Count(t, db, `SELECT packet_count FROM observers WHERE id = ?`, id); got != n {
			t.Errorf("observer %s packet_count = %d, want %d", id, got, n)
		}
	}
}

// expectedHashes maps each raw (lower-case) of expected.jsonl to its
// firmware content hash, and says which raws are valid frames.
func expectedHashes(t *testing.T) (hashes map[string]string, valid map[string]bool) {
	t.Helper()
	f, err := os.Open("testdata/expected.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	valid = map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Raw         string  `json:"raw"`
			Valid       bool    `json:"valid"`
			ContentHash *string `json:"content_hash"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line.ContentHash != nil {
			out[strings.ToLower(line.Raw)] = *line.ContentHash
		}
		valid[strings.ToLower(line.Raw)] = line.Valid
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, valid
}
