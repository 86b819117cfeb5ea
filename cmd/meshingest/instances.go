package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/meshingest/meshingest/spool"
)

// Receiver instances (`receive --instance NAME`) spool into
// <spoolDir>/NAME. The status commands list the spools the way the writer
// finds them (writer.MergedSource): spoolDir itself when it has an identity
// or no instance folder has one, then every subfolder with an identity, by
// name. A subfolder without one is no spool, and the writer does not drain
// it: the commands name it, since it is most often a mistake (an instance
// folder copied or restored without its identity file, a backup).

// spoolFolder is one spool of a spoolDir.
type spoolFolder struct {
	// Name is the receiver instance's name; "" for spoolDir's own spool
	// (a receiver run without --instance).
	Name string `json:"name"`
	Dir  string `json:"dir"`
}

// label is how a command names the spool's receiver.
func (s spoolFolder) label() string {
	if s.Name == "" {
		return "(spoolDir)"
	}
	return s.Name
}

// spoolLayout is a spoolDir as the writer sees it.
type spoolLayout struct {
	Spools []spoolFolder `json:"spools"`
	// NotSpools are subfolders with no identity file: not drained.
	NotSpools []string `json:"not_spools,omitempty"`
}

// instances says whether the spoolDir holds receiver instances' spools
// (otherwise it is one receiver's spool, and the commands show it as
// they always have).
func (l spoolLayout) instances() bool {
	for _, s := range l.Spools {
		if s.Name != "" {
			return true
		}
	}
	return false
}

// readSpoolLayout lists the spools of spoolDir. A spoolDir that does not
// exist yet is one (empty) spool of its own, as the writer treats it.
func readSpoolLayout(spoolDir string) (spoolLayout, error) {
	var l spoolLayout
	entries, err := os.ReadDir(spoolDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return l, &spool.Error{Op: "list receiver instances", Path: spoolDir, Err: err, Hint: "check spoolDir (--dir, --config) and its permissions"}
	}
	own := spool.HasIdentity(spoolDir)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(spoolDir, e.Name())
		switch {
		case spool.HasIdentity(dir):
			l.Spools = append(l.Spools, spoolFolder{Name: e.Name(), Dir: dir})
		case own && e.Name() == "quarantine":
			// spoolDir's own spool's damaged segments.
		default:
			l.NotSpools = append(l.NotSpools, dir)
		}
	}
	sort.Slice(l.Spools, func(i, j int) bool { return l.Spools[i].Name < l.Spools[j].Name })
	if own || len(l.Spools) == 0 {
		l.Spools = append([]spoolFolder{{Dir: spoolDir}}, l.Spools...)
	}
	return l, nil
}

// spoolFigures is one entry of the writer's stats file's meshingest.spools
// (the writer's SpoolFigures), as the status commands read it.
type spoolFigures struct {
	Identity            string  `json:"identity"`
	Dir                 string  `json:"dir,omitempty"`
	DepthRecords        int64   `json:"depth_records"` // -1 unknown
	LagSeconds          float64 `json:"lag_seconds"`
	RecordsApplied      int64   `json:"records_applied"`
	OtherReceiverCopies int64   `json:"other_receiver_copies"`
	LateCopies          int64   `json:"late_copies"`
}

// writerSpools is the writer's figures per spool, from its stats file.
type writerSpools struct {
	Path string
	At   time.Time
	// ByIdentity are meshingest.spools by spool identity.
	ByIdentity map[string]spoolFigures
}

// readWriterSpools reads the freshest of the writer's stats files that
// parses; ok false when there is none.
func readWriterSpools(paths []string) (writerSpools, bool) {
	var best writerSpools
	found := false
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var f struct {
			SampledAt  string `json:"sampledAt"`
			Meshingest struct {
				Spools []spoolFigures `json:"spools"`
			} `json:"meshingest"`
		}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f.SampledAt)
		if err != nil || (found && !at.After(best.At)) {
			continue
		}
		best, found = writerSpools{Path: p, At: at, ByIdentity: map[string]spoolFigures{}}, true
		for _, s := range f.Meshingest.Spools {
			best.ByIdentity[s.Identity] = s
		}
	}
	return best, found
}

// figuresLine is a spool's writer figures in one line.
func figuresLine(f spoolFigures) string {
	depth := "unknown"
	if f.DepthRecords >= 0 {
		depth = fmt.Sprint(f.DepthRecords)
	}
	return fmt.Sprintf("%s unwritten, lag %.1fs, %d records applied, %d recognised as another receiver's copies (%d late)",
		depth, f.LagSeconds, f.RecordsApplied, f.OtherReceiverCopies, f.LateCopies)
}
