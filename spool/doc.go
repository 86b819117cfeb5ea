// Package spool is meshingest's durable on-disk queue between the receiver
// and the writer: a folder of bbolt segment files.
//
// The receiver appends through one Appender (appender.lock enforces one per
// folder). Records are gathered into groups, each written in one bbolt
// transaction followed by one fdatasync, and each record's done callback
// reports when it is durable, so the receiver can acknowledge a QoS 1
// message only then. Segments are sealed by size or age (commit, trailer
// with a CRC of the file, fdatasync, rename to NNNN.seg, folder fsync);
// sealed segments are immutable and read, in order, by any number of
// Readers: the writer drains them and deletes whole segments it has
// consumed (Release), the CLI inspects them. The active segment is never
// read; `spool status` learns about it from appender-status.json.
//
// A segment left unsealed by a dead appender is rebuilt by the next one
// from the records' own checksums (salvage.go), so a torn last transaction
// or a damaged record costs only itself; damaged records and files go to
// quarantine/ with a .reason beside them. A sealed segment whose CRC fails
// is rebuilt the same way by the writer's Reader.
//
// Layout, formats and the API contract: docs/internals.md.
package spool
