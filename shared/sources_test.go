package shared

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadReceiverSnapshot_FreshAndStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "receiver-stats.json")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	snap := ReceiverSnapshot{
		SampledAt:      now.Add(-2 * time.Second).Format(time.RFC3339Nano),
		SourceStatuses: []SourceStatus{{Name: "local", Broker: "mqtt://u:****@h", Connected: true, PacketsTotal: 7}},
		SourceLiveness: map[string]SourceLiveness{"local": {LastReceiptUnix: now.Unix()}},
	}
	if err := WriteJSONAtomic(path, snap); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReceiverSnapshot(path, 5*time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.SourceStatuses[0].PacketsTotal != 7 || got.SourceLiveness["local"].LastReceiptUnix != now.Unix() {
		t.Fatalf("snapshot %+v", got)
	}
	if _, err := ReadReceiverSnapshot(path, 5*time.Second, now.Add(10*time.Second)); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("stale file: err = %v", err)
	}
}
