package writer

import (
	"context"
	"database/sql"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/writer/retention"
)

// Tx is the writer's connection while a batch's transaction is open. A
// hook's statements through it are part of that transaction: they commit
// with the batch's rows and its spool position, or not at all.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// ObservationContext is what the writer knows about an observation beyond
// its row.
type ObservationContext struct {
	ReceivedAt      time.Time
	ObserverID      string         // observers.id: the topic's observer segment, else origin_id or the binary gateway; "companion" for companion rows
	Frame           *decoder.Frame // nil for companion-bridge rows, which have no frame
	FromPubkey      string         // the advert's node key (lower-case hex), "" for other packets
	NewTransmission bool           // this observation created the transmission
}

// BatchHook lets per-observation jobs share the writer's batches: they see
// every observation before it is written and can add rows of their own in
// the same transaction (CoreScope's resolved_path and neighbor_edges,
// package writer/jobs, are such jobs). All methods run on the drain
// goroutine.
type BatchHook interface {
	// BeforeObservation runs for every observation about to be written; it
	// may fill obs.ResolvedPath. The row itself is queued and written,
	// in order, with the next chunk of observations or at the end of the
	// batch, so it is not yet in the table. An error fails the batch (it
	// is rolled back and retried).
	BeforeObservation(ctx context.Context, tx Tx, obs *Observation, oc *ObservationContext) error
	// Flush runs once at the end of the batch, before the spool position
	// is saved and the transaction commits: the place to write rows the
	// hook aggregated over the batch.
	Flush(ctx context.Context, tx Tx) error
	// Committed runs after the batch committed: in-memory state the hook
	// built for the batch is now durable.
	Committed()
	// RolledBack runs after the batch was rolled back: the hook must
	// forget what it learned from it, since it will see the same
	// observations again.
	RolledBack()
}

// A Task is maintenance done between ingest batches (retention is the
// writer's own; writer/jobs has CoreScope's), in steps short enough that
// the write lock is never held for long.
type Task interface {
	// Name identifies the task in logs and in writer_perf.
	Name() string
	// Interval is how long to wait after a pass finished before the next
	// one starts.
	Interval() time.Duration
	// Step does one small unit of work and reports whether the pass has
	// more to do. It runs inside a transaction the writer opened for it
	// (and commits, or rolls back on an error). now is the writer's
	// clock: the receive time of the newest committed record.
	Step(ctx context.Context, tx Tx, now time.Time) (more bool, err error)
}

// A StepWatcher is a Task that keeps in memory what its steps wrote: the
// writer tells it after each step whether the step's transaction
// committed, so that it can forget what a rolled-back step taught it.
type StepWatcher interface {
	StepEnded(committed bool)
}

// retentionTask is retention.Pass, which is always there, as a Task.
type retentionTask struct{ *retention.Pass }

func (r retentionTask) Step(ctx context.Context, tx Tx, now time.Time) (more bool, err error) {
	return r.Pass.Step(ctx, tx, now)
}
