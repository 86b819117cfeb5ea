package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/receiver"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer"
)

// docRow is one row of a key table in docs/configuration.md.
type docRow struct {
	keys             []string
	def, meaning     string
	section, rawLine string
}

var backticked = regexp.MustCompile("`([^`]+)`")

// readConfigDoc returns the rows of the key tables (those with a key, a
// default and a meaning column) and the whole text.
func readConfigDoc(t *testing.T) ([]docRow, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []docRow
	section := ""
	inKeyTable := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			section, inKeyTable = line[3:], false
		case line == "| key | default | meaning |":
			inKeyTable = true
		case inKeyTable && strings.HasPrefix(line, "| `"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) != 3 {
				t.Fatalf("row %q has %d cells, want 3 (no | inside a cell)", line, len(cells))
			}
			r := docRow{def: strings.TrimSpace(cells[1]), meaning: strings.TrimSpace(cells[2]), section: section, rawLine: line}
			for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
				r.keys = append(r.keys, m[1])
			}
			rows = append(rows, r)
		case inKeyTable && !strings.HasPrefix(line, "|"):
			inKeyTable = false
		}
	}
	if len(rows) < 30 {
		t.Fatalf("read %d key rows from docs/configuration.md", len(rows))
	}
	return rows, string(data)
}

// codeKeys are the keys the code reads, from shared.Config's JSON tags:
// a leaf is "key" or "section.key"; a list of objects (mqttSources) or an
// object documented as a whole (geo_filter, mqtt) gives "parent" with its
// fields, which its row's meaning must name.
func codeKeys() (leaves []string, fields map[string][]string) {
	fields = map[string][]string{}
	wholeObjects := map[string]bool{"geo_filter": true, "mqtt": true}
	t := reflect.TypeFor[shared.Config]()
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			fields[name+"[]"] = tagNames(ft.Elem())
		case ft.Kind() == reflect.Struct && wholeObjects[name]:
			fields[name] = tagNames(ft)
		case ft.Kind() == reflect.Struct:
			for _, sub := range tagNames(ft) {
				leaves = append(leaves, name+"."+sub)
			}
		default:
			leaves = append(leaves, name)
		}
	}
	return leaves, fields
}

func tagNames(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// Every key the code reads is documented, and every documented key is one
// the code reads: the table cannot drift from shared.Config again.
func TestConfigDoc_EveryKeyDocumented(t *testing.T) {
	rows, _ := readConfigDoc(t)
	byKey := map[string]docRow{}
	for _, r := range rows {
		for _, k := range r.keys {
			if _, dup := byKey[k]; dup {
				t.Errorf("%s has two rows", k)
			}
			byKey[k] = r
		}
	}
	leaves, fields := codeKeys()
	known := map[string]bool{}
	for _, k := range leaves {
		known[k] = true
		if _, ok := byKey[k]; !ok {
			t.Errorf("the code reads %s; docs/configuration.md has no row for it", k)
		}
	}
	for parent, subs := range fields {
		known[parent] = true
		r, ok := byKey[parent]
		if !ok {
			t.Errorf("the code reads %s; docs/configuration.md has no row for it", parent)
			continue
		}
		for _, sub := range subs {
			if !strings.Contains(r.meaning, "`"+sub+"`") {
				t.Errorf("the row of %s does not name its field `%s`", parent, sub)
			}
		}
	}
	for k := range byKey {
		if !known[k] {
			t.Errorf("docs/configuration.md documents %s, which the code does not read", k)
		}
	}
}

// codeDefaults are the defaults the code applies, by key: meshingest's
// from the effective configuration `config check` prints (the processes'
// own defaults: spool.Default*, writer.Default*), CoreScope's from the
// accessors the writer reads them with.
func codeDefaults(t *testing.T) (map[string]any, *shared.Config) {
	t.Helper()
	clearConfigEnv(t)
	cfg, err := shared.LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	eff := effectiveConfig(cfg)
	data, _ := json.Marshal(eff)
	var m map[string]any
	json.Unmarshal(data, &m)
	defaults := map[string]any{}
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			for sk, sv := range sub {
				defaults[k+"."+sk] = sv
			}
			continue
		}
		defaults[k] = v
	}
	for k, v := range map[string]any{
		"retention.nodeDays": cfg.NodeDays(), "retention.observerDays": cfg.ObserverDays(), "retention.metricsDays": cfg.MetricsDays(),
		"retention.packetDays": cfg.PacketDays(), "retention.clientRxDays": cfg.ClientRxDays(),
		"metrics.sampleIntervalSec": int(cfg.MetricsSampleInterval().Seconds()), "neighborEdgesMaxAgeDays": cfg.NeighborEdgesDays(),
		"db.incrementalVacuumPages": cfg.VacuumPages(), "validateSignatures": cfg.ShouldValidateSignatures(),
		"clientRxCoverage.enabled": false, "foreignAdverts.mode": map[bool]string{false: "flag", true: "drop"}[cfg.DropForeignAdverts()],
	} {
		defaults[k] = v
	}
	if lvl, _ := shared.ParseLogLevel(cfg.LogLevel); true {
		defaults["logLevel"] = lvl.String()
	}
	return defaults, eff
}

var sizeDefault = regexp.MustCompile(`^(\d+) (KiB|MiB|GiB)$`)

// Every default the tables give is the code's.
func TestConfigDoc_DefaultsAreTheCodes(t *testing.T) {
	rows, text := readConfigDoc(t)
	defaults, eff := codeDefaults(t)
	// Defaults that depend on where things are: the text the doc gives,
	// and what the code must do for it to be true.
	textual := map[string]func() bool{
		"spoolDir": func() bool { return eff.SpoolDir == filepath.Join(filepath.Dir(eff.DBPath), "spool") },
		"receiver.statsFile": func() bool {
			return eff.Receiver.StatsFile == filepath.Join(eff.SpoolDir, "receiver-stats.json")
		},
		"spool.groupWindowMs": func() bool {
			want := fmt.Sprintf("0 (low-wear: %d)", spool.DefaultGroupWindow.Milliseconds())
			lw := spool.Options{Profile: spool.ProfileLowWear}.Resolved()
			return row(rows, "spool.groupWindowMs").def == want && eff.Spool.GroupWindowMs == 0 && lw.GroupWindow == spool.DefaultGroupWindow
		},
		"spool.minFreeBytes": func() bool {
			want := fmt.Sprintf("%d MiB or %d %% of the disk, whichever is smaller", spool.DefaultMinFreeBytes>>20, spool.DefaultMinFreePercent)
			return row(rows, "spool.minFreeBytes").def == want && eff.Spool.MinFreeBytes == 0
		},
	}
	for _, r := range rows {
		if r.def == "" {
			continue
		}
		for _, k := range r.keys {
			if check, ok := textual[k]; ok {
				if !check() {
					t.Errorf("%s: the default %q is not what the code does", k, r.def)
				}
				continue
			}
			got, present := defaults[k]
			var want any
			switch m := sizeDefault.FindStringSubmatch(r.def); {
			case r.def == "off":
				if present && got != "" {
					t.Errorf("%s: the doc says off, the code's default is %v", k, got)
				}
				continue
			case m != nil:
				n, _ := strconv.ParseFloat(m[1], 64)
				want = n * map[string]float64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
			case r.def == "true" || r.def == "false":
				want = r.def == "true"
			case strings.HasPrefix(r.def, "`") && strings.HasSuffix(r.def, "`"):
				want = strings.Trim(r.def, "`")
			default:
				n, err := strconv.ParseFloat(r.def, 64)
				if err != nil {
					t.Errorf("%s: the default %q is neither a number, a size, true/false, off nor `text`, and no check knows it", k, r.def)
					continue
				}
				want = n
			}
			if fmt.Sprint(normalize(got)) != fmt.Sprint(normalize(want)) {
				t.Errorf("%s: the doc's default is %v, the code's %v", k, want, got)
			}
		}
	}
	// The defaults inside the sources' row, and the memory limit.
	srcRow := row(rows, "mqttSources[]").meaning
	for re, want := range map[string]string{
		"`topics` \\(default `([^`]+)`\\)":          shared.DefaultTopic,
		"`connectTimeoutSec` \\(default (\\d+)\\)":  strconv.Itoa(int(receiver.DefaultConnectTimeout.Seconds())),
		"`rejectUnauthorized` \\(default (\\w+):":   strconv.FormatBool(shared.Source{}.VerifyTLS()),
		"`clientId` \\(default `meshingest-<host>-": "",
	} {
		m := regexp.MustCompile(re).FindStringSubmatch(srcRow)
		if m == nil || (want != "" && m[1] != want) {
			t.Errorf("the sources' row: %s should say %q (%v)", re, want, m)
		}
	}
	m := regexp.MustCompile(`Go memory limit of (\d+) MiB, and (\d+) MiB more for each further spool`).FindStringSubmatch(text)
	if m == nil || m[1] != strconv.Itoa(writer.MemoryLimitOneSpool>>20) || m[2] != strconv.Itoa(writer.MemoryLimitPerFurtherSpool>>20) {
		t.Errorf("the doc's memory limit %v, the writer's %d MiB and %d MiB per further spool", m, writer.MemoryLimitOneSpool>>20, writer.MemoryLimitPerFurtherSpool>>20)
	}
}

func normalize(v any) any {
	switch n := v.(type) {
	case int:
		return float64(n)
	case int64:
		return float64(n)
	}
	return v
}

// row is the row documenting key (the zero row when there is none).
func row(rows []docRow, key string) docRow {
	for _, r := range rows {
		for _, k := range r.keys {
			if k == key {
				return r
			}
		}
	}
	return docRow{}
}
