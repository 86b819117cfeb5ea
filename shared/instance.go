package shared

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// Receiver instances (`meshingest receive --instance NAME`) run side by
// side on one configuration, each with a full subscription of its own, so
// that one of them can be restarted, upgraded or lost without a gap at QoS
// 0. Each spools into its own folder below spoolDir and keeps its own
// stats file; the writer drains every spool it finds there (writer
// MergedSource) and applies each MQTT publication once.

// ErrInstanceName marks an instance name that cannot name a folder, a
// client id and a systemd instance alike.
var ErrInstanceName = errors.New("invalid receiver instance name")

var instanceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// CheckInstanceName accepts 1 to 32 letters, digits, '-' and '_' (not
// first): a name that is the same as a folder, in an MQTT client id and
// as systemd's %i.
func CheckInstanceName(name string) error {
	if !instanceName.MatchString(name) {
		return fmt.Errorf("%w: %q: use 1 to 32 letters, digits, - and _, starting with a letter or digit", ErrInstanceName, name)
	}
	return nil
}

// InstanceSpoolDir is the spool folder of receiver instance name:
// <spoolDir>/<name>.
func InstanceSpoolDir(spoolDir, name string) string { return filepath.Join(spoolDir, name) }

// InstanceStatsFile is the stats file of receiver instance name: the
// receiver's with "-<name>" before its extension (receiver-stats.json
// becomes receiver-stats-a.json), so that instances sharing a
// RuntimeDirectory= do not overwrite each other's.
func InstanceStatsFile(statsFile, name string) string {
	ext := filepath.Ext(statsFile)
	return strings.TrimSuffix(statsFile, ext) + "-" + name + ext
}
