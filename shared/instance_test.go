package shared

import (
	"strings"
	"testing"
)

func TestInstance_Paths_NameFolderAndStatsFile(t *testing.T) {
	if got := InstanceStatsFile("/run/meshingest/receiver-stats.json", "a"); got != "/run/meshingest/receiver-stats-a.json" {
		t.Errorf("InstanceStatsFile = %q", got)
	}
	if got := InstanceSpoolDir("data/spool", "b"); got != "data/spool/b" {
		t.Errorf("InstanceSpoolDir = %q", got)
	}
	for _, bad := range []string{"", "../x", "a/b", "-a", strings.Repeat("x", 33), "a b"} {
		if CheckInstanceName(bad) == nil {
			t.Errorf("CheckInstanceName(%q) accepted it", bad)
		}
	}
}
