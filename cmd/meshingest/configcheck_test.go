package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/spool"
)

func clearConfigEnv(t *testing.T) {
	for _, v := range []string{"DB_PATH", "MQTT_BROKER", "MQTT_TOPIC", "MESHINGEST_SPOOL_DIR", "CORESCOPE_INGESTOR_STATS", "RUNTIME_DIRECTORY"} {
		t.Setenv(v, "")
	}
}

func checkConfig(t *testing.T, body string) (exit int, stdout, stderr string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	exit = configCommand([]string{"check", "--config", path}, &out, &errOut)
	return exit, out.String(), errOut.String()
}

// config check prints the configuration the processes run with: every
// default filled in, every secret masked, and warns about a database it
// would create.
func TestConfigCheck_Valid_PrintsEffectiveMasked(t *testing.T) {
	clearConfigEnv(t)
	dir := t.TempDir()
	exit, out, errOut := checkConfig(t, `{"dbPath": "`+dir+`/data/meshcore.db",
		"mqttSources": [{"name": "a", "broker": "mqtt://u:urlpw@h:1883", "password": "fieldpw"}],
		"channelKeys": {"Secret": "0123456789abcdef0123456789abcdef"}, "broker": {"password": "brokerpw"},
		"somethingElse": 1}`)
	if exit != 0 {
		t.Fatalf("exit %d: %s", exit, errOut)
	}
	for _, secret := range []string{"urlpw", "fieldpw", "brokerpw", "0123456789abcdef"} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("output shows the secret %q", secret)
		}
	}
	var eff shared.Config
	if err := json.Unmarshal([]byte(out), &eff); err != nil {
		t.Fatalf("stdout is not the configuration as JSON: %v\n%s", err, out)
	}
	if eff.Spool.Profile != "low-latency" || eff.Spool.MinGroupIntervalMs != 150 || eff.Spool.SegmentMaxBytes != spool.DefaultSegmentMaxBytes || eff.Writer.BatchMaxRecords != 16000 ||
		eff.Writer.Jobs == nil || !*eff.Writer.Jobs || eff.SpoolDir != dir+"/data/spool" || eff.MQTTSources[0].Topics[0] != "meshcore/#" {
		t.Errorf("defaults not filled in: %s", out)
	}
	if !strings.Contains(errOut, `unknown top-level key "somethingElse"`) {
		t.Errorf("no warning for the unknown key: %s", errOut)
	}
	if !strings.Contains(errOut, "dbPath "+dir+"/data/meshcore.db does not exist: the writer will create a new, empty database there") {
		t.Errorf("no warning naming the database it would create: %s", errOut)
	}
}

func TestConfigCheck_Errors_ExitOne(t *testing.T) {
	clearConfigEnv(t)
	for body, want := range map[string]string{
		`{"dbPth": "/srv/x.db"}`:                        `dbPth: unknown key; did you mean "dbPath"?`,
		`{"logLevel": "verbose"}`:                       `logLevel: "verbose" is not a log level`,
		`{"retention": {"nodeDay": 1}}`:                 `retention: unknown key "nodeDay"`,
		`{"channelKeysPath": "/nonexistent/keys.json"}`: `channelKeysPath: cannot read /nonexistent/keys.json`,
	} {
		exit, out, errOut := checkConfig(t, body)
		if exit != 1 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d stdout %q stderr %q; want 1, nothing, %q", body, exit, out, errOut, want)
		}
	}
}

func TestConfigCheck_Usage(t *testing.T) {
	var out, errOut bytes.Buffer
	if exit := configCommand([]string{"check", "-h"}, &out, &errOut); exit != 0 || !strings.Contains(out.String(), "usage: meshingest config check") || errOut.Len() != 0 {
		t.Errorf("check -h: exit %d stdout %q stderr %q", exit, out.String(), errOut.String())
	}
	out.Reset()
	if exit := configCommand(nil, &out, &errOut); exit != 2 || !strings.Contains(errOut.String(), "usage:") {
		t.Errorf("no subcommand: exit %d stderr %q", exit, errOut.String())
	}
	if exit := configCommand([]string{"check", "stray.json"}, &out, &errOut); exit != 2 {
		t.Errorf("a positional path must be refused, exit %d", exit)
	}
}
