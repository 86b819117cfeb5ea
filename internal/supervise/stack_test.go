package supervise

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/shared"
)

func writeConfig(t *testing.T, doc map[string]any) string {
	t.Helper()
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newStack(t *testing.T, cfgPath string) *Stack {
	t.Helper()
	st, err := NewStack(StackOptions{ConfigPath: cfgPath, Executable: "/bin/true", Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatalf("NewStack: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

func TestNewStack_NoBrokerConfigured_EmbeddedBrokerBecomesTheSource(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "data", "meshcore.db")
	cfgPath := writeConfig(t, map[string]any{
		"dbPath":       dbPath,
		"channelKeys":  map[string]string{"Public": "8b3387e9c5cdea6ac9e5edbaa115cd72"},
		"port":         3000, // a CoreScope server key meshingest ignores
		"hashChannels": []string{"#test"},
	})
	st := newStack(t, cfgPath)
	if st.Broker == nil {
		t.Fatal("no embedded broker started although no broker is configured")
	}
	if want := filepath.Join(filepath.Dir(dbPath), RunConfigName); st.ChildConfig != want {
		t.Fatalf("ChildConfig = %q, want %q", st.ChildConfig, want)
	}
	fi, err := os.Stat(st.ChildConfig)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("run config: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	// The children load it with the real loader.
	cfg, err := shared.LoadConfig(st.ChildConfig)
	if err != nil {
		t.Fatalf("children cannot load the run config: %v", err)
	}
	if len(cfg.MQTTSources) != 1 || cfg.MQTTSources[0].Name != EmbeddedSourceName || cfg.MQTTSources[0].Broker != st.Broker.URL() || cfg.MQTTSources[0].QoS != 1 {
		t.Fatalf("sources = %+v, want the embedded broker %s at QoS 1", cfg.MQTTSources, st.Broker.URL())
	}
	if cfg.DBPath != dbPath || cfg.ChannelKeys["Public"] == "" || len(cfg.HashChannels) != 1 {
		t.Fatalf("other keys not carried over: %+v", cfg)
	}
	var doc map[string]any
	data, _ := os.ReadFile(st.ChildConfig)
	json.Unmarshal(data, &doc)
	if doc["port"] != float64(3000) {
		t.Errorf("CoreScope's own key lost: %v", doc["port"])
	}
	// A real client connects to the address the receiver is given.
	c := paho.NewClient(paho.NewClientOptions().AddBroker(cfg.MQTTSources[0].Broker).SetClientID("probe").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("cannot connect to the embedded broker at %s: %v", cfg.MQTTSources[0].Broker, tok.Error())
	}
	c.Disconnect(100)
	if args := st.Supervisor().procs[0].Args; len(args) != 3 || args[0] != "receive" || args[2] != st.ChildConfig {
		t.Errorf("receiver args = %q", args)
	}
	if args := st.Supervisor().procs[1].Args; len(args) != 3 || args[0] != "write" || args[2] != st.ChildConfig {
		t.Errorf("writer args = %q", args)
	}
}

func TestNewStack_BrokerListen_AddsAnAuthenticatedSourceBesideConfiguredOnes(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "meshcore.db")
	cfgPath := writeConfig(t, map[string]any{
		"dbPath":      dbPath,
		"mqttSources": []map[string]any{{"name": "upstream", "broker": "mqtt://mqtt.example.org:1883"}},
		"broker":      map[string]any{"listen": "127.0.0.1:0", "username": "observer", "password": "pw"},
	})
	st := newStack(t, cfgPath)
	if st.Broker == nil || !st.Broker.RequiresAuth() {
		t.Fatal("broker.listen with credentials did not start an authenticated embedded broker")
	}
	cfg, err := shared.LoadConfig(st.ChildConfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.MQTTSources) != 2 || cfg.MQTTSources[0].Name != "upstream" {
		t.Fatalf("sources = %+v, want upstream then embedded", cfg.MQTTSources)
	}
	e := cfg.MQTTSources[1]
	if e.Name != EmbeddedSourceName || e.Username != "observer" || e.Password != "pw" || e.Broker != st.Broker.URL() {
		t.Fatalf("embedded source = %+v", e)
	}
}

func TestNewStack_BrokerConfigured_NoEmbeddedBroker(t *testing.T) {
	cfgPath := writeConfig(t, map[string]any{
		"dbPath": filepath.Join(t.TempDir(), "meshcore.db"),
		"mqtt":   map[string]any{"broker": "mqtt://127.0.0.1:1883", "topic": "meshcore/#"},
	})
	st := newStack(t, cfgPath)
	if st.Broker != nil || st.ChildConfig != cfgPath {
		t.Fatalf("Broker = %v, ChildConfig = %q; want none and the operator's own file", st.Broker, st.ChildConfig)
	}

	// MQTT_BROKER in the environment is a configured broker too.
	t.Setenv("MQTT_BROKER", "mqtt://127.0.0.1:1883")
	st = newStack(t, writeConfig(t, map[string]any{"dbPath": filepath.Join(t.TempDir(), "meshcore.db")}))
	if st.Broker != nil {
		t.Fatal("embedded broker started although MQTT_BROKER names one")
	}
}

func TestNewStack_ChildrenDoNotInheritTheSupervisorsNotifySocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("WATCHDOG_USEC", "30000000")
	st := newStack(t, writeConfig(t, map[string]any{"dbPath": filepath.Join(t.TempDir(), "meshcore.db")}))
	for _, p := range st.Supervisor().procs {
		for _, kv := range p.Env {
			if name, _, _ := strings.Cut(kv, "="); name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" || name == "MQTT_BROKER" {
				t.Errorf("%s inherits %s", p.Name, kv)
			}
		}
	}
}

func TestNewStack_BadConfig_NamesTheField(t *testing.T) {
	cfgPath := writeConfig(t, map[string]any{"broker": map[string]any{"listen": "127.0.0.1:0", "username": "u"}})
	if _, err := NewStack(StackOptions{ConfigPath: cfgPath, Executable: "/bin/true", Log: zerolog.Nop()}); err == nil {
		t.Fatal("a username without a password was accepted")
	}
	cfgPath = writeConfig(t, map[string]any{"broker": map[string]any{"listn": "127.0.0.1:0"}})
	if _, err := NewStack(StackOptions{ConfigPath: cfgPath, Executable: "/bin/true", Log: zerolog.Nop()}); err == nil {
		t.Fatal("a misspelt broker key was accepted")
	}
}

func TestStack_Reload_RewritesTheRunConfigWithTheOperatorsEdits(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "meshcore.db")
	cfgPath := writeConfig(t, map[string]any{"dbPath": dbPath})
	st := newStack(t, cfgPath)
	url := st.Broker.URL()
	edited, _ := json.Marshal(map[string]any{
		"dbPath":      dbPath,
		"mqttSources": []map[string]any{{"name": "upstream", "broker": "mqtt://mqtt.example.org:1883"}},
	})
	if err := os.WriteFile(cfgPath, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	cfg, err := shared.LoadConfig(st.ChildConfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.MQTTSources) != 2 || cfg.MQTTSources[0].Name != "upstream" || cfg.MQTTSources[1].Broker != url {
		t.Fatalf("sources after reload = %+v, want upstream and the running embedded broker %s", cfg.MQTTSources, url)
	}

	os.WriteFile(cfgPath, []byte("{not json"), 0o600)
	if err := st.Reload(); err == nil {
		t.Fatal("Reload accepted a broken configuration")
	}
	if cfg, err := shared.LoadConfig(st.ChildConfig); err != nil || len(cfg.MQTTSources) != 2 {
		t.Fatalf("a failed reload changed the children's configuration: %+v, %v", cfg, err)
	}
}
