package writer

import (
	"context"
	"path/filepath"

	"github.com/meshingest/meshingest/shared"
	"github.com/rs/zerolog"
)

// The jobs CoreScope's ingestor runs besides inserting, whose output
// CoreScope's server reads (docs/reference/mqtt-formats.md §8), share the
// writer's batches and its lock discipline:
//
//   - resolved_path and neighbor_edges ride on every batch (pathState, a
//     BatchHook): computed in memory as observations are inserted, written
//     in the batch's own transaction, undone with it on a rollback;
//   - the others are Tasks, run between batches in small steps, each in its
//     own short transaction: the node index follow-up (pathIndexTask), the
//     multibyte capability snapshot (multibyteTask), geo-prune requests
//     (pruneTask) and the backfills of databases older than their columns
//     (backfillTask).
//
// `meshingest redecode` (redecode.go) is the one job that is not part of
// the writer: it is run by hand after channel keys were added.
//
// They are on unless the configuration says writer.jobs = false.
type jobs struct {
	paths     *pathState
	taskList  []Task
	dataDir   string // the database's folder, where the server leaves its files
	log       zerolog.Logger
	backfills func(name string, n int64)
}

// newJobs prepares the jobs for a writer; nil when the configuration turns
// them off. The writer's stats receive the rows each backfill updated.
func newJobs(cfg *shared.Config, log zerolog.Logger, stats *Stats) *jobs {
	if !cfg.Writer.JobsEnabled() {
		return nil
	}
	countBackfill := stats.AddBackfill
	j := &jobs{
		paths:     newPathState(log.With().Str("job", "paths").Logger(), cfg.NeighborEdgesDays()),
		dataDir:   filepath.Dir(cfg.DBPath),
		log:       log,
		backfills: countBackfill,
	}
	j.taskList = []Task{
		pathIndexTask{p: j.paths},
		newPruneTask(j.dataDir, j.paths, log.With().Str("job", "prune").Logger()),
		newMultibyteTask(j.dataDir, log.With().Str("job", "multibyte").Logger()),
		newBackfillTask(j.paths, log.With().Str("job", "backfill").Logger(), countBackfill),
	}
	return j
}

func (j *jobs) hook() BatchHook { return j.paths }
func (j *jobs) tasks() []Task   { return j.taskList }

// chainHooks runs first and then second (either may be nil).
func chainHooks(first, second BatchHook) BatchHook {
	switch {
	case first == nil:
		return second
	case second == nil:
		return first
	}
	return hookChain{first, second}
}

type hookChain []BatchHook

func (c hookChain) BeforeObservation(ctx context.Context, tx Tx, obs *Observation, oc *ObservationContext) error {
	for _, h := range c {
		if err := h.BeforeObservation(ctx, tx, obs, oc); err != nil {
			return err
		}
	}
	return nil
}

func (c hookChain) Flush(ctx context.Context, tx Tx) error {
	for _, h := range c {
		if err := h.Flush(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

func (c hookChain) Committed() {
	for _, h := range c {
		h.Committed()
	}
}

func (c hookChain) RolledBack() {
	for _, h := range c {
		h.RolledBack()
	}
}
