package shared

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// SourceStatus is one MQTT source as CoreScope's /api/mqtt/status shows it
// (stats-contract.md, source_statuses[]). The receiver fills it; the writer
// copies it into the CoreScope stats file. Broker and LastError never carry
// a password (MaskBrokerURL, MaskPasswords).
type SourceStatus struct {
	Name               string `json:"name"`
	Broker             string `json:"broker"`
	Connected          bool   `json:"connected"`
	LastConnectUnix    int64  `json:"lastConnectUnix"`
	LastDisconnectUnix int64  `json:"lastDisconnectUnix"`
	LastPacketUnix     int64  `json:"lastPacketUnix"`
	ConnectCount       int64  `json:"connectCount"`
	DisconnectCount    int64  `json:"disconnectCount"`
	PacketsTotal       int64  `json:"packetsTotal"`
	PacketsLast5m      int64  `json:"packetsLast5m"`
	LastError          string `json:"lastError,omitempty"`
}

// SourceLiveness is CoreScope's source_liveness value: when the source last
// delivered a message to the receiver, and when a message from it was last
// written to the database (0 = never). The receiver knows the first, the
// writer the second.
type SourceLiveness struct {
	LastReceiptUnix int64 `json:"lastReceiptUnix"`
	LastMessageUnix int64 `json:"lastMessageUnix"`
}

// ReceiverSnapshot is the part of the receiver's stats file the writer
// merges into CoreScope's stats file. The receiver's file holds more
// (append rates, drops, fsync latencies); readers ignore what they do not
// know.
type ReceiverSnapshot struct {
	SampledAt      string                    `json:"sampledAt"`
	PID            int                       `json:"pid"`
	SourceStatuses []SourceStatus            `json:"source_statuses"`
	SourceLiveness map[string]SourceLiveness `json:"source_liveness"`
}

// ReadReceiverSnapshot reads the receiver's stats file. It returns an error
// when the file is missing, unreadable, or older than maxAge: CoreScope's
// server must not see a dead receiver's sources as alive.
func ReadReceiverSnapshot(path string, maxAge time.Duration, now time.Time) (*ReceiverSnapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read receiver stats %s: %w", path, err)
	}
	var s ReceiverSnapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read receiver stats %s: %w", path, err)
	}
	at, err := time.Parse(time.RFC3339Nano, s.SampledAt)
	if err != nil {
		return nil, fmt.Errorf("read receiver stats %s: sampledAt %q: %w", path, s.SampledAt, err)
	}
	if age := now.Sub(at); age > maxAge {
		return nil, fmt.Errorf("read receiver stats %s: stale (sampled %s ago); is the receiver running?", path, age.Round(time.Second))
	}
	return &s, nil
}
