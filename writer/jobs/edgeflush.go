package jobs

import (
	"context"

	"github.com/meshingest/meshingest/writer"
)

// Flush writes the batch's neighbor_edges, up to 64 pairs a statement, in the
// batch's transaction: the counts commit with the observations that gave
// them, or not at all.
//
// Measured on the catch-up benchmark this is the jobs' largest cost: an
// observer and the repeater it hears most are a pair in almost every
// batch, so each batch rewrites rows all over the table (about 550 bytes of
// disk writes per observation next to the writer's 1,700, and a few per
// cent of its CPU time). Adding up several batches in memory would save
// most of it but leave the table behind the committed observations after
// every stop; that is not worth it.
//
// The nodes the batch learned are recorded with the others whose
// observations are to be derived again, and the newest observation id the
// jobs derived, in the same transaction.
//
// The ids of the batch's observations were predicted (one each, in order,
// from the next id at the batch's start); they were right when the next id
// is now as many further.
func (p *pathState) Flush(ctx context.Context, tx writer.Tx) error {
	if p.batchObs > 0 {
		next, err := nextObservationID(ctx, tx)
		if err != nil {
			return err
		}
		idsKnown := next == p.batchFirstID+int64(p.batchObs)
		if !idsKnown && !p.idsMispredicted {
			p.idsMispredicted = true
			p.log.Info().Int64("first", p.batchFirstID).Int("observations", p.batchObs).Int64("next", next).
				Msg("observation ids are not one per row offered here; new neighbour edges look their first observation up")
		}
		if p.edges.len() > 0 {
			if err := p.edges.flush(ctx, p.stmts, p.graph, idsKnown); err != nil {
				return err
			}
		}
		p.rd.derived(next)
	}
	return p.rd.save(ctx, tx)
}

// edgesCommitted forgets the batch's edges: they are in the table.
func (p *pathState) edgesCommitted() { p.edges.reset() }
