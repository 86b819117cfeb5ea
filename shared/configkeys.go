package shared

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// coreScopeKeys are the top-level keys of CoreScope's config.json that
// meshingest does not read itself (those it reads are Config's fields):
// the keys of its server's Config (cmd/server/config.go), of its
// ingestor's Config (cmd/ingestor/config.go) and of config.example.json,
// at CoreScope a06ac8ac (2026-07-18). One file serves CoreScope and
// meshingest, so these are never warned about; a key an edit or two away
// from one of these or of meshingest's is refused as a typo.
var coreScopeKeys = []string{
	// the server
	"analytics", "apiKey", "areas", "batteryThresholds", "branding", "cacheInvalidateMs", "cacheTTL",
	"compression", "corsAllowedOrigins", "customizer", "debugAffinity", "distThresholds", "externalUrls",
	"healthThresholds", "hiddenNamePrefixes", "home", "knownChannelsRefreshMs", "knownChannelsUrl", "limits",
	"listLimits", "liveMap", "map", "mapDarkTileProvider", "mapDefaults", "markerStroke", "maxHopDist",
	"neighborGraph", "nodeBlacklist", "nodeColors", "observersCache", "packetStore", "perfSlowMs", "port",
	"regions", "resolvedPath", "roles", "runtime", "snrThresholds", "theme", "themeDark", "tiles",
	"timestamps", "typeColors", "wsReconnectMs",
	// the ingestor
	"ingestBufferSize",
	// config.example.json
	"defaultRegion", "https",
}

// coreScopeSectionKeys are keys of CoreScope's sections that meshingest's
// struct for the section lacks (it reads fewer of them): still valid.
var coreScopeSectionKeys = map[string][]string{
	"db": {"vacuumOnStartup", "load"},
}

// strictSections are the objects whose keys are checked exactly: an
// unknown key there is refused (with the known key it is nearest to), for
// a typo inside them would silently change what is stored or kept. They
// are meshingest's own sections and CoreScope's sections meshingest acts
// on; their keys come from Config's types, plus coreScopeSectionKeys.
var strictSections = []string{"spool", "receiver", "writer", "broker", "retention", "geo_filter", "foreignAdverts",
	"metrics", "mqtt", "clientRxCoverage", "db"}

// isComment reports a key CoreScope's config uses for comments
// ("_comment", "_comment_mqttSources"): allowed at every level.
func isComment(key string) bool { return strings.HasPrefix(key, "_") }

// jsonKeys lists the JSON keys of struct type t.
func jsonKeys(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		keys = append(keys, name)
	}
	return keys
}

// fieldType is the type of Config's field with JSON key key.
func fieldType(key string) reflect.Type {
	t := reflect.TypeFor[Config]()
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == key {
			return f.Type
		}
	}
	return nil
}

// KnownTopLevelKeys are every top-level key a config.json may hold:
// meshingest's (Config's fields) and CoreScope's.
func KnownTopLevelKeys() []string {
	keys := append(jsonKeys(reflect.TypeFor[Config]()), coreScopeKeys...)
	sort.Strings(keys)
	return slices.Compact(keys)
}

// SectionKeys are the keys of a strict section, e.g. "retention".
func SectionKeys(section string) []string {
	t := fieldType(section)
	if t == nil {
		return nil
	}
	return append(jsonKeys(t), coreScopeSectionKeys[section]...)
}

// checkKeys checks the keys of the file: top-level keys against
// KnownTopLevelKeys (one near a known key is an error, another unknown one
// a warning), and the keys of mqttSources[] and of the strict sections
// exactly. encoding/json matches keys regardless of case, so a key that
// differs from a known one only in case is known.
func checkKeys(path string, data []byte) (warnings []string, err error) {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil, nil // not an object; decoding the Config reports it
	}
	known := KnownTopLevelKeys()
	for _, key := range sortedKeys(top) {
		if isComment(key) || containsFold(known, key) {
			continue
		}
		if near := nearest(key, known); near != "" {
			return nil, &ConfigError{Path: path, Field: key, Msg: fmt.Sprintf("unknown key; did you mean %q? (a misspelt key is ignored and its default used)", near)}
		}
		warnings = append(warnings, unknownKeyWarning(path, key))
	}
	var sources []json.RawMessage
	json.Unmarshal(top["mqttSources"], &sources) // its type is checked with the Config
	for i, raw := range sources {
		if err := checkSection(path, fmt.Sprintf("mqttSources[%d]", i), raw, jsonKeys(reflect.TypeFor[Source]())); err != nil {
			return nil, err
		}
	}
	for _, name := range strictSections {
		for key, raw := range top {
			if strings.EqualFold(key, name) {
				if err := checkSection(path, name, raw, SectionKeys(name)); err != nil {
					return nil, err
				}
			}
		}
	}
	return warnings, nil
}

// checkSection refuses a key of an object that is none of known.
func checkSection(path, field string, raw json.RawMessage, known []string) error {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil // null, or a type error the Config decoding reports
	}
	for _, key := range sortedKeys(obj) {
		if isComment(key) || containsFold(known, key) {
			continue
		}
		msg := fmt.Sprintf("unknown key %q", key)
		if near := nearest(key, known); near != "" {
			msg += fmt.Sprintf("; did you mean %q?", near)
		} else {
			msg += "; known keys: " + strings.Join(known, ", ")
		}
		return &ConfigError{Path: path, Field: field, Msg: msg}
	}
	return nil
}

// unknownKeyWarning says an unknown top-level key is ignored, and where it
// belongs when it is the name of a key inside a section.
func unknownKeyWarning(path, key string) string {
	var inside []string
	for _, section := range strictSections {
		if containsFold(SectionKeys(section), key) {
			inside = append(inside, section+"."+key)
		}
	}
	where := path
	if where == "" {
		where = "environment"
	}
	msg := fmt.Sprintf("config %s: unknown top-level key %q (neither CoreScope's nor meshingest's) is ignored", where, key)
	if len(inside) > 0 {
		msg += "; it is a key of " + strings.Join(inside, " and ") + ": move it there"
	}
	return msg
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// unitSuffixes end the names of keys with a unit; "groupWindow" for
// "groupWindowMs" is a typo whatever the edit distance.
var unitSuffixes = []string{"Ms", "Sec", "Days", "Bytes", "KiB", "MB", "Hours"}

// nearest is the known key key is most likely a typo of: within one edit
// of a key of four or five letters, two of a longer one (ignoring case),
// or the key without its unit suffix; "" when there is none. Keys of three
// letters or fewer are too short to guess at.
func nearest(key string, known []string) string {
	for _, k := range known {
		for _, unit := range unitSuffixes {
			if strings.EqualFold(k, key+unit) {
				return k
			}
		}
	}
	best, bestD := "", 3
	for _, k := range known {
		limit := 0
		switch n := len(k); {
		case n >= 6:
			limit = 2
		case n >= 4:
			limit = 1
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d <= limit && d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
