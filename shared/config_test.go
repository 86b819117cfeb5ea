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
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://h", "qso": 1}]}`, `mqttSources[0]: unknown field "qso"`},
		{`{"mqttSources": [{"name": "a", "broker": "http://h"}]}`, `mqttSources[0].broker: scheme "http"`},
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://u:pw@"}]}`, `mqttSources[0].broker: no host in mqtt://u:****@`},
		{`{"mqttSources": [{"name": "a"}]}`, `mqttSources[0].broker: missing`},
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://h", "qos": 2}]}`, `mqttSources[0].qos`},
		{`{"mqttSources": [{"name": "a", "broker": "mqtt://h"}, {"name": "a", "broker": "mqtt://g"}]}`, `mqttSources[1].name`},
		{`{"spool": {"groupWindow": 5}}`, `spool: unknown field "groupWindow"`},
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
