package shared

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func clearEnv(t *testing.T) {
	for _, k := range []string{"DB_PATH", "MQTT_BROKER", "MQTT_TOPIC", "MESHINGEST_SPOOL_DIR", "CORESCOPE_INGESTOR_STATS", "RUNTIME_DIRECTORY"} {
		t.Setenv(k, "")
	}
}

func TestLoadConfig_CoreScopeFileAsIs(t *testing.T) {
	clearEnv(t)
	path := writeConfig(t, `{
		"port": 3000, "https": {"cert": "x"}, "theme": {"accent": "#fff"},
		"dbPath": "/var/lib/corescope/meshcore.db",
		"mqttSources": [
			{"name": "local", "broker": "mqtt://localhost:1883", "topics": ["meshcore/#"]},
			{"name": "remote", "broker": "mqtts://bob:secret@mqtt.example:8883", "username": "bob",
			 "password": "secret", "rejectUnauthorized": false, "iataFilter": ["SJC"], "qos": 1}
		],
		"channelKeys": {"Public": "8b3387e9c5cdea6ac9e5edbaa115cd72"},
		"hashChannels": ["#test"],
		"retention": {"nodeDays": 3}
	}`)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.MQTTSources) != 2 || cfg.MQTTSources[1].QoS != 1 || cfg.MQTTSources[1].VerifyTLS() || !cfg.MQTTSources[0].VerifyTLS() {
		t.Fatalf("sources %+v", cfg.MQTTSources)
	}
	if cfg.SpoolDir != "/var/lib/corescope/spool" {
		t.Fatalf("spoolDir default %q, want beside the database", cfg.SpoolDir)
	}
	if cfg.Receiver.StatsFile != "/var/lib/corescope/spool/receiver-stats.json" || cfg.Writer.StatsFile != DefaultStatsPath {
		t.Fatalf("stats paths %q %q", cfg.Receiver.StatsFile, cfg.Writer.StatsFile)
	}
	if cfg.NodeDays() != 3 || cfg.ObserverDays() != 14 || !cfg.ShouldValidateSignatures() {
		t.Fatal("retention or signature defaults wrong")
	}
}

func TestLoadConfig_LegacyMQTTAndEnv(t *testing.T) {
	clearEnv(t)
	path := writeConfig(t, `{"mqtt": {"broker": "mqtt://old:1883", "topic": "meshcore/SJC/#"}}`)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.MQTTSources) != 1 || cfg.MQTTSources[0].Broker != "mqtt://old:1883" || cfg.MQTTSources[0].Topics[0] != "meshcore/SJC/#" {
		t.Fatalf("legacy mqtt not converted: %+v", cfg.MQTTSources)
	}
	t.Setenv("MQTT_BROKER", "tcp://envhost:1883")
	t.Setenv("DB_PATH", "/tmp/x/db.sqlite")
	t.Setenv("MESHINGEST_SPOOL_DIR", "/tmp/spool")
	t.Setenv("CORESCOPE_INGESTOR_STATS", "/tmp/s.json")
	cfg, err = LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTTSources[0].Broker != "tcp://envhost:1883" || cfg.MQTTSources[0].Topics[0] != DefaultTopic ||
		cfg.DBPath != "/tmp/x/db.sqlite" || cfg.SpoolDir != "/tmp/spool" || cfg.Writer.StatsFile != "/tmp/s.json" {
		t.Fatalf("env overrides not applied: %+v", cfg)
	}
}

func TestLoadConfig_ErrorsNameTheField(t *testing.T) {
	clearEnv(t)
	cases := []struct{ body, want string }{
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://h", "qso": 1}]}`, `mqttSources[0]: unknown key "qso"; known keys: name, broker`},
		{`{"mqttSources": [{"name": "a", "broker": "http://h"}]}`, `mqttSources[0].broker: scheme "http"`},
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://u:pw@"}]}`, `mqttSources[0].broker: no host in mqtt://u:****@`},
		{`{"mqttSources": [{"name": "a"}]}`, `mqttSources[0].broker: missing`},
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://h", "qos": 2}]}`, `mqttSources[0].qos`},
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://h"}, {"name": "a", "broker": "mqtt://g"}]}`, `mqttSources[1].name`},
		{`{"spool": {"groupWindow": 5}}`, `spool: unknown key "groupWindow"; did you mean "groupWindowMs"?`},
		{`{"channelKeys": {"x": "abc"}}`, `channelKeys.x`},
		{"{\n\"dbPath\": \"x\",\n}", `line 3`},
	}
	for _, c := range cases {
		_, err := LoadConfig(writeConfig(t, c.body))
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.body, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("error leaks the password: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

// Under systemd the receiver's stats default to the runtime directory (a
// tmpfs), off the spool's disk, whose being full is when its drop counters
// matter; an explicit statsFile is kept as it is.
func TestLoadConfig_ReceiverStatsFile_RuntimeDirectory(t *testing.T) {
	clearEnv(t)
	path := writeConfig(t, `{"dbPath": "/srv/cs/meshcore.db"}`)
	t.Setenv("RUNTIME_DIRECTORY", "/run/meshingest:/run/other")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Receiver.StatsFile != "/run/meshingest/receiver-stats.json" {
		t.Fatalf("receiver stats default %q under systemd", cfg.Receiver.StatsFile)
	}
	explicit := writeConfig(t, `{"dbPath": "/srv/cs/meshcore.db", "receiver": {"statsFile": "/srv/stats/rx.json"}}`)
	if cfg, err = LoadConfig(explicit); err != nil || cfg.Receiver.StatsFile != "/srv/stats/rx.json" {
		t.Fatalf("explicit statsFile: %v %q", err, cfg.Receiver.StatsFile)
	}
}

// A misspelt dbPath made the writer create an empty data/meshcore.db
// while CoreScope kept reading the real one: a top-level key one or two
// edits from a known one is refused, naming both.
func TestLoadConfig_TopLevelTypo_ErrorNamesBoth(t *testing.T) {
	clearEnv(t)
	cases := []struct{ body, key, want string }{
		{`{"dbPth": "/srv/cs/meshcore.db"}`, "dbPth", "dbPath"},
		{`{"mqttSource": [{"broker": "mqtt://h"}]}`, "mqttSource", "mqttSources"},
		{`{"chanelKeys": {}}`, "chanelKeys", "channelKeys"},
		{`{"spoolDri": "/x"}`, "spoolDri", "spoolDir"},
		{`{"retenton": {}}`, "retenton", "retention"},
		{`{"nodeBlaklist": []}`, "nodeBlaklist", "nodeBlacklist"}, // CoreScope's server's key
		{`{"logLvl": "debug"}`, "logLvl", "logLevel"},
	}
	for _, c := range cases {
		_, err := LoadConfig(writeConfig(t, c.body))
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.key+": unknown key; did you mean \""+c.want+"\"") {
			t.Errorf("%s: err = %v, want one naming %s and %s", c.body, err, c.key, c.want)
		}
	}
}

// Other unknown top-level keys get one warning, and CoreScope's own keys
// (its server's, its comments) none.
func TestLoadConfig_UnknownTopLevelKey_Warning(t *testing.T) {
	clearEnv(t)
	cfg, err := LoadConfig(writeConfig(t, `{"port": 3000, "apiKey": "k", "theme": {}, "_comment": "x", "_comment_mqttSources": "y",
		"DBPATH": "data/x.db", "someOtherTool": {"a": 1}, "metricsListen": "127.0.0.1:1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DBPath != "data/x.db" {
		t.Fatalf("a key in another case is read by encoding/json, so it is known: dbPath %q", cfg.DBPath)
	}
	if len(cfg.Warnings) != 2 || !strings.Contains(cfg.Warnings[0], `"metricsListen"`) ||
		!strings.Contains(cfg.Warnings[0], "receiver.metricsListen and writer.metricsListen") ||
		!strings.Contains(cfg.Warnings[1], `"someOtherTool"`) {
		t.Fatalf("warnings %q, want one for metricsListen (with where it belongs) and one for someOtherTool", cfg.Warnings)
	}
}

// Values and the keys inside CoreScope's sections are checked: a typo in
// retention or geo_filter silently changed what was kept or stored.
func TestLoadConfig_BadValuesAndSectionTypos_Refused(t *testing.T) {
	clearEnv(t)
	cases := []struct{ body, want string }{
		{`{"logLevel": "verbose"}`, `logLevel: "verbose" is not a log level; use one of debug, info, warn, error`},
		{`{"retention": {"nodeDay": 3}}`, `retention: unknown key "nodeDay"; did you mean "nodeDays"?`},
		{`{"retention": {"packetDays": -5}}`, `retention.packetDays: must not be negative`},
		{`{"spool": {"queueFullWaitMs": 9000}}`, `spool.queueFullWaitMs: 9000; give -1 (never wait) or up to 8000 ms`},
		{`{"spool": {"queueFullWaitMs": -2}}`, `spool.queueFullWaitMs: -2`},
		{`{"retention": {"observerDays": -2}}`, `retention.observerDays: -2`},
		{`{"geo_filter": {"polygn": [[1,2],[3,4],[5,6]]}}`, `geo_filter: unknown key "polygn"; did you mean "polygon"?`},
		{`{"geo_filter": {"polygon": [[1,2],[3,4]]}}`, `geo_filter.polygon: 2 points`},
		{`{"geo_filter": {"polygon": [[1,2],[3,4],[200,6]]}}`, `geo_filter.polygon[2]`},
		{`{"geo_filter": {"latMin": 1, "latMax": 2}}`, `a box needs all of`},
		{`{"geo_filter": {"latMin": 3, "latMax": 2, "lonMin": 1, "lonMax": 2}}`, `want -90 ≤ latMin ≤ latMax ≤ 90`},
		{`{"foreignAdverts": {"mdoe": "drop"}}`, `foreignAdverts: unknown key "mdoe"`},
		{`{"foreignAdverts": {"mode": "dorp"}}`, `foreignAdverts.mode`},
		{`{"metrics": {"sampleInterval": 60}}`, `metrics: unknown key "sampleInterval"; did you mean "sampleIntervalSec"?`},
		{`{"mqtt": {"brokr": "mqtt://h"}}`, `mqtt: unknown key "brokr"; did you mean "broker"?`},
		{`{"hashChannels": ["#"]}`, `hashChannels[0]: empty channel name`},
		{`{"mqttSources": [{"broker": "mqtt://h", "connectTimeoutSec": -1}]}`, `mqttSources[0].connectTimeoutSec: must not be negative`},
	}
	for _, c := range cases {
		_, err := LoadConfig(writeConfig(t, c.body))
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.body, err, c.want)
		}
	}
	// CoreScope's own keys in those sections, and its comments, are fine.
	if _, err := LoadConfig(writeConfig(t, `{"retention": {"nodeDays": 7, "clientRxDays": 30, "_comment": "x"},
		"db": {"vacuumOnStartup": false, "load": {"chunkSize": 1}}, "geo_filter": {"polygon": [[37.8,-122.5],[37.8,-121.8],[37.2,-121.8]], "bufferKm": 20, "_comment": "y"},
		"foreignAdverts": {"mode": "flag", "_comment": "z"}, "mqttSources": [{"broker": "mqtt://h", "_comment": "c"}]}`)); err != nil {
		t.Fatalf("CoreScope's example keys refused: %v", err)
	}
}

// Every key of CoreScope's config.example.json (at the commit
// coreScopeKeys names) is known, so the shared file gives no warning.
func TestLoadConfig_CoreScopeExampleKeys_NoWarning(t *testing.T) {
	clearEnv(t)
	example := []string{"analytics", "apiKey", "areas", "batteryThresholds", "branding", "cacheTTL", "channelKeys",
		"clientRxCoverage", "compression", "corsAllowedOrigins", "customizer", "db", "defaultRegion", "foreignAdverts",
		"geo_filter", "hashChannels", "hashRegions", "healthThresholds", "hiddenNamePrefixes", "home", "https",
		"ingestBufferSize", "knownChannelsRefreshMs", "knownChannelsUrl", "listLimits", "liveMap", "map", "mapDefaults",
		"markerStroke", "mqtt", "mqttSources", "neighborGraph", "nodeBlacklist", "nodeColors", "observerIATAWhitelist",
		"observersCache", "packetStore", "port", "regions", "resolvedPath", "retention", "runtime", "theme", "timestamps"}
	known := KnownTopLevelKeys()
	for _, k := range example {
		if !containsFold(known, k) {
			t.Errorf("CoreScope's %q is not a known key", k)
		}
	}
}

func TestChangedKeys_NamesOnly(t *testing.T) {
	a := &Config{LogLevel: "info", ChannelKeys: map[string]string{"Public": "8b3387e9c5cdea6ac9e5edbaa115cd72"}, Spool: SpoolConfig{GroupWindowMs: 1000}}
	b := &Config{LogLevel: "debug", ChannelKeys: map[string]string{"Public": "00000000000000000000000000000000"}, Spool: SpoolConfig{GroupWindowMs: 500, MaxBytes: 1}, Writer: WriterConfig{BatchMaxMs: 3}}
	got := strings.Join(ChangedKeys(a, b), " ")
	if got != "channelKeys logLevel spool.groupWindowMs spool.maxBytes writer.batchMaxMs" {
		t.Fatalf("ChangedKeys = %q", got)
	}
	if len(ChangedKeys(a, a)) != 0 {
		t.Fatal("a config differs from itself")
	}
}
