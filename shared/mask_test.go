package shared

import "testing"

func TestMaskBrokerURL_EveryScheme(t *testing.T) {
	cases := map[string]string{
		"mqtt://user:secret@host:1883":         "mqtt://user:****@host:1883",
		"mqtts://u:p%40ss@broker.example:8883": "mqtts://u:****@broker.example:8883",
		"tcp://a:b@h":                          "tcp://a:****@h",
		"ssl://a:b@h:8883":                     "ssl://a:****@h:8883",
		"ws://a:b@h/mqtt":                      "ws://a:****@h/mqtt",
		"wss://a:b@h:443/mqtt":                 "wss://a:****@h:443/mqtt",
		"mqtt://host:1883":                     "mqtt://host:1883",
		"mqtt://onlyuser@host":                 "mqtt://onlyuser@host",
	}
	for in, want := range cases {
		if got := MaskBrokerURL(in); got != want {
			t.Errorf("MaskBrokerURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMaskPasswords_InsideText(t *testing.T) {
	in := `dial "mqtts://bob:hunter2@mqtt.example:8883" failed; retry wss://x:y@h`
	want := `dial "mqtts://bob:****@mqtt.example:8883" failed; retry wss://x:****@h`
	if got := MaskPasswords(in); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
