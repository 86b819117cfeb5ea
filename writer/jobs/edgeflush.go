package jobs

import (
	"context"

	"github.com/meshingest/meshingest/writer"
)

// Flush writes the batch's neighbor_edges, one statement per pair, in the
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
func (p *pathState) Flush(ctx context.Context, tx writer.Tx) error {
	if p.edges.len() > 0 {
		if err := p.edges.flush(ctx, p.stmts, p.graph); err != nil {
			return err
		}
	}
	if p.batchObs > 0 {
		if err := p.rd.derived(ctx, tx); err != nil {
			return err
		}
	}
	return p.rd.save(ctx, tx)
}

// edgesCommitted forgets the batch's edges: they are in the table.
func (p *pathState) edgesCommitted() { p.edges.reset() }
