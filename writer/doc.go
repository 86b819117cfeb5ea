// Package writer drains the spool into the SQLite database CoreScope's
// server reads (`meshingest write`).
//
// # What it guarantees
//
//   - Exactly once. Each batch of records is one SQLite transaction, and the
//     spool position the batch reaches is written in that same transaction
//     (table meshingest_state). A stop, a crash or a SIGKILL at any moment
//     leaves the database at the end of the last committed batch, and the
//     writer resumes right after it. A spool segment is deleted (Release)
//     only after the rows made from it are committed, with
//     synchronous=FULL, so they survive a power loss too.
//   - Receive times. Every stored time is the receive time the receiver
//     recorded, so a backlog written hours later carries the hours the
//     packets were heard. Retention measures age against the receive time
//     of the newest committed record, not the wall clock, so a writer that
//     was stopped for a week does not retire every node before writing the
//     week of adverts that keep them alive.
//   - CoreScope's rows (docs/reference/mqtt-formats.md §5-§7, a06ac8a): a
//     transmission per content hash, an observation per (transmission,
//     observer, path), observers from packets and status messages (the
//     observer row is created before its first observation, so
//     observer_idx is never NULL; a retained status updates metadata only),
//     nodes from valid adverts, observer_metrics, dropped_packets. Per-message
//     counters and maxima (packet_count, advert_count, last_seen, first_seen)
//     are summed per batch and written once per row, which gives the values
//     one statement per message would, whatever the batch boundaries.
//   - One writer. Run holds an flock beside the database, and
//     OpenSpoolSource the spool folder's consumer lock, for the writer's
//     life (writer/dbfile/lock.go): a second writer is refused (exit
//     status 3 in `meshingest write`). Each batch checks in its transaction that the
//     stored position is still the one it started from.
//   - One position per spool identity (state.go): a new spool folder is
//     read from its first record, a known one resumes where it stopped.
//   - Each message counts once: a broker's replay of a retained message
//     (retained.go) and the second form of a reception published as
//     `…/packets` and `…/raw` (forms.go) change nothing; the memory both
//     need is stored with the rows.
//   - Never stuck, never skipping. While the database refuses writes (busy,
//     locked, read-only, disk full, a table missing), the batch is rolled
//     back, the caches are forgotten and the same records are retried after
//     a capped back-off; one log line starts the episode and one ends it,
//     and the stats file shows it. A message that cannot be stored is
//     counted by reason and the position moves on.
//
// # How a batch runs
//
// A pipeline goroutine (pipeline.go) reads the spool and prepares each
// record: topic, JSON payload, frame and content hash, and for a hash it
// has not seen recently the full decode (channel-key search, advert
// signature), which the 26 other observations of a transmission then
// skip. The drain loop (drain.go) owns the connection and runs each batch
// through the commit protocol: BEGIN IMMEDIATE; per record a cache lookup
// (content hash → transmission, observer id → rowid; a duplicate
// observation costs no SELECT) and the rows, observations 32 at a time
// (ingest.go, batch.go); then the aggregated observer, node and
// transmission updates and the hook's rows; the position and the delivery
// memory; COMMIT; and only then the caches, the hook and the spool's
// Release learn of it. A batch ends at Options.BatchMaxRecords records or
// Options.BatchMaxTime, whichever comes first. Between batches,
// maintenance tasks (retention) run one short step at a time.
//
// Extension points (hooks.go), for the jobs CoreScope's server also
// expects of an ingestor: a BatchHook sees every observation inside the
// batch's transaction; a Task runs between batches. The writer registers
// none but retention itself: CoreScope's jobs (resolved_path,
// neighbor_edges, multibyte capability, prune requests, backfills) are
// package writer/jobs, which the caller passes in Options.Hook and
// Options.Tasks (writer/jobs/README.md).
//
// What the core is built on are packages of their own, which never import
// it: the database file (writer/dbfile: opening it, what is wrong with it,
// the episodes of refused writes, the one-writer lock), the figures
// (writer/stats: counters, stats file, metrics), retention
// (writer/retention), the geo filter (writer/geofilter) and the stored
// memories of unpaired receptions (writer/forms) and of QoS 1 deliveries
// (writer/redelivery). README.md, Layout, lists the files.
//
// # Operating it
//
// MAINTENANCE.md is the procedure for VACUUM, backup, migration and restore.
// README.md has the test and benchmark commands and the measured figures.
package writer
