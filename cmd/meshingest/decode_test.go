package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const transportVector = "14FA1A0000034E927D596EA23622BCB4D5945E49348165AF7DABA3F5DCEED85F430E0856DB5B591E86AB3363BC00E1BA30776698F72FC57C7168E66A4875CDB710F3C175FC2B3FE75A036EF14FA59A709062D3A9FF7014F2E7A8512C"

func runDecodeTest(t *testing.T, stdin string, args ...string) (code int, lines []map[string]any, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = decodeCommand(args, strings.NewReader(stdin), &out, &errOut)
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("output line is not JSON: %v\n%s", err, l)
		}
		lines = append(lines, m)
	}
	return code, lines, errOut.String()
}

func TestDecode_Args_ExitStatusAndSchema(t *testing.T) {
	code, lines, stderr := runDecodeTest(t, "", "0D04B891647EBB40BA70", "15ZZ")
	if code != 1 || len(lines) != 2 {
		t.Fatalf("exit %d, %d lines", code, len(lines))
	}
	for _, k := range []string{"raw", "valid", "content_hash", "route_type", "route_type_name", "payload_type",
		"payload_type_name", "payload_version", "transport_codes", "path_len_byte", "path_hash_size", "path_hops",
		"path", "payload_len", "payload", "decoded_json"} {
		if _, ok := lines[0][k]; !ok {
			t.Errorf("valid frame output lacks %q", k)
		}
	}
	if lines[0]["content_hash"] != "bbf95563c6eec9fe" || lines[1]["error_code"] != "bad_hex" || lines[1]["decoded_json"] != nil {
		t.Errorf("got %v / %v", lines[0], lines[1])
	}
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "frame 2") || !strings.Contains(stderr, "bad_hex") {
		t.Errorf("stderr %q", stderr)
	}
	if code, _, _ := runDecodeTest(t, "", "0D04B891647EBB40BA70"); code != 0 {
		t.Errorf("all-valid exit %d", code)
	}
}

func TestDecode_StdinWithConfig_UsesRainbowAndRegions(t *testing.T) {
	dir := t.TempDir()
	rainbow, err := os.ReadFile("../../decoder/testdata/channel-rainbow.json")
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, rainbow, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"channelKeysPath":"`+keys+`","hashRegions":["ottawa"]}`), 0o600)
	code, lines, stderr := runDecodeTest(t, "\n"+transportVector+"\n\n0100\n", "--stdin", "--config", cfg)
	if code != 0 || len(lines) != 2 || stderr != "" {
		t.Fatalf("exit %d, %d lines, stderr %q", code, len(lines), stderr)
	}
	stored := lines[0]["decoded_json"].(map[string]any)
	if stored["channel"] != "#testing" || stored["sender"] != "MrAlders0n" {
		t.Errorf("rainbow key not used: %v", stored)
	}
	tc := lines[0]["transport_codes"].([]any)
	if tc[0] != float64(6906) || tc[1] != float64(0) {
		t.Errorf("transport codes %v", tc)
	}
	// Without the keys file the message stays encrypted.
	code, lines, _ = runDecodeTest(t, "", transportVector)
	if code != 0 || lines[0]["decoded_json"].(map[string]any)["decryptionStatus"] != "no_key" {
		t.Errorf("without config: %v", lines[0]["decoded_json"])
	}
}

func TestDecode_RainbowBesideConfig(t *testing.T) {
	dir := t.TempDir()
	rainbow, _ := os.ReadFile("../../decoder/testdata/channel-rainbow.json")
	os.WriteFile(filepath.Join(dir, "channel-rainbow.json"), rainbow, 0o600)
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{}`), 0o600)
	_, lines, _ := runDecodeTest(t, "", "--config", cfg, transportVector)
	if lines[0]["decoded_json"].(map[string]any)["channel"] != "#testing" {
		t.Errorf("default channel-rainbow.json not read: %v", lines[0]["decoded_json"])
	}
}

func TestDecode_BadInput_OneLineErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"channelKeys":{"#x":"zz"}}`), 0o600)
	missing := filepath.Join(dir, "config2.json")
	os.WriteFile(missing, []byte(`{"channelKeysPath":"`+filepath.Join(dir, "nope.json")+`"}`), 0o600)
	for name, args := range map[string][]string{
		"bad key":          {"--config", cfg, "0100"},
		"missing keys":     {"--config", missing, "0100"},
		"missing config":   {"--config", filepath.Join(dir, "absent.json"), "0100"},
		"no frames":        {},
		"frames and stdin": {"--stdin", "0100"},
	} {
		code, lines, stderr := runDecodeTest(t, "", args...)
		first := strings.SplitN(stderr, "\n", 2)[0]
		if code != 2 || len(lines) != 0 || !strings.HasPrefix(first, "meshingest decode: ") || strings.Contains(stderr, "goroutine") {
			t.Errorf("%s: exit %d, stderr %q", name, code, stderr)
		}
	}
	// A frame too long to be real is refused without being read.
	code, lines, _ := runDecodeTest(t, strings.Repeat("AB", 50000)+"\n", "--stdin")
	if code != 1 || lines[0]["error_code"] != "too_long" {
		t.Errorf("100 KB of hex: exit %d %v", code, lines)
	}
}
