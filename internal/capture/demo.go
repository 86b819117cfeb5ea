package capture

import (
	"bytes"
	_ "embed"
)

// realPackets is real traffic from a live MeshCore mesh in the San Francisco
// Bay Area (CoreScope's public e2e fixture rebuilt as MQTT messages): 31
// observer status messages and 500 packet messages, March 2026. It is the
// demo capture and the input of the end-to-end tests.
//
//go:embed real-packets.jsonl
var realPackets []byte

// Demo returns a reader over the embedded real capture.
func Demo() *Reader { return NewReader(bytes.NewReader(realPackets)) }

// DemoBytes returns the embedded real capture as JSONL.
func DemoBytes() []byte { return realPackets }
