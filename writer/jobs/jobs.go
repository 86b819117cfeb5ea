// Package jobs is the work CoreScope's ingestor does besides inserting,
// whose output CoreScope's server reads (docs/reference/mqtt-formats.md
// §8; README.md). The jobs share the writer's batches and its lock
// discipline, through the writer's two extension points:
//
//   - resolved_path and neighbor_edges ride on every batch (pathState, a
//     writer.BatchHook): computed in memory as observations are inserted,
//     written in the batch's own transaction, undone with it on a
//     rollback;
//   - the others are writer.Tasks, run between batches in small steps,
//     each in its own short transaction: the node index follow-up
//     (pathIndexTask), deriving resolved_path and neighbor_edges again
//     for the observations a node learned or lost changes (rederiveTask),
//     the multibyte capability snapshot (multibyteTask),
//     geo-prune requests (pruneTask) and the backfills of databases older
//     than their columns (backfillTask).
//
// The writer registers none of them itself: whoever builds the writer
// passes New's Hook and Tasks in writer.Options (cmd/meshingest does).
//
// Redecode (`meshingest redecode`, redecode.go) is the one job that is not
// part of the writer: it is run by hand after channel keys were added.
package jobs

import (
	"path/filepath"

	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer"
	"github.com/rs/zerolog"
)

// Jobs are CoreScope's jobs prepared for one writer.
type Jobs struct {
	paths *pathState
	tasks []writer.Task
}

// New prepares the jobs for a writer with this configuration; nil when the
// configuration says writer.jobs = false. stats (nil: none) receive the
// rows each backfill updated; pass the writer's (writer.Options.Stats).
func New(cfg *shared.Config, log zerolog.Logger, stats *writer.Stats) *Jobs {
	if !cfg.Writer.JobsEnabled() {
		return nil
	}
	var countBackfill func(name string, n int64)
	if stats != nil {
		countBackfill = stats.AddBackfill
	}
	dataDir := filepath.Dir(cfg.DBPath) // where the server leaves its files
	j := &Jobs{paths: newPathState(log.With().Str("job", "paths").Logger(), cfg.NeighborEdgesDays())}
	j.paths.stats = stats
	j.tasks = []writer.Task{
		pathIndexTask{p: j.paths},
		rederiveTask{p: j.paths},
		newPruneTask(dataDir, j.paths, log.With().Str("job", "prune").Logger()),
		newMultibyteTask(dataDir, log.With().Str("job", "multibyte").Logger()),
		newBackfillTask(j.paths, log.With().Str("job", "backfill").Logger(), countBackfill),
	}
	return j
}

// Hook is the BatchHook that keeps resolved_path and neighbor_edges, for
// writer.Options.Hook; nil when j is.
func (j *Jobs) Hook() writer.BatchHook {
	if j == nil {
		return nil // not a nil *pathState in an interface: the writer tests for nil
	}
	return j.paths
}

// Tasks are the jobs run between batches, for writer.Options.Tasks; nil
// when j is.
func (j *Jobs) Tasks() []writer.Task {
	if j == nil {
		return nil
	}
	return j.tasks
}
