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
// A folder has an identity (identity.go), written into every segment's
// trailer, and a Position names its spool: Seqs restart at 1 in a new
// folder, so a consumer keeps one position per identity. The reader checks
// rather than assumes: a segment of another spool, or out of place (a
// renamed or swapped file), is set aside whole to quarantine/ and counted;
// a segment's bbolt structure is walked with bounds checks before bbolt
// maps it (boltcheck.go), so no file can crash the process. A folder
// deleted and made anew under a running reader is another spool: the
// reader says ErrSpoolReplaced rather than set its segments aside
// (replaced.go), and an appender whose folder was deleted under it makes
// it again as a new spool with what it still holds (remade.go).
//
// A segment left unsealed by a dead appender is rebuilt by the next one
// from the records' own checksums (salvage.go), so a torn last transaction
// or a damaged record costs only itself; damaged records and files go to
// quarantine/ with a .reason beside them. A sealed segment whose CRC fails
// is rebuilt the same way by the writer's Reader.
//
// Layout, formats and the API contract: docs/internals.md.
//
// # Syncs
//
// A group costs one fdatasync: bbolt runs with NoSync and the appender
// syncs once after each commit (segment.go says why that is safe). With
// the default low-latency profile every group is written whole as a
// sealed segment (one fdatasync and one folder fsync), a group starting at
// once after an idle spell and at most every MinGroupInterval (150 ms)
// under load: about 13 syncs/s at the expected 250 records/s, and a record
// is readable by the writer as soon as it is durable. With the low-wear
// profile GroupWindow equals SegmentMaxAge (1 s), so at low rates a group
// is written whole as a sealed segment: 2 syncs/s at 250 records/s
// (TestAppender_Fsyncs_SteadyLowRate covers both; the
// count in AppenderStats.Fsyncs was checked against
// `strace -f -c -e trace=fsync,fdatasync`: equal, plus the one fdatasync
// bbolt makes on the in-memory template, which costs no disk). Records with
// QoS >= 1 close their group after AckWindow: about one fdatasync per 20 ms
// while QoS 1 traffic flows. Seqs are reserved 2^24 at a time in the
// "sequence" file (2 syncs per block).
//
// # Defaults and the measurements behind them
//
// Measured on the project VM (2 vCPU shared with other builds, ext4 on
// virtio, disk 70-550 MB/s depending on the neighbours), 400-byte payloads:
//
//	go test ./spool -run '^$' -bench Append400 -benchtime 1000000x
//	    193,000-248,000 records/s durable (4 appending goroutines), 66-85
//	    fsyncs/s, 47-61 groups/s, fsync p50 3-4 ms, commit p99 33-54 ms,
//	    598 bytes written to disk per record. Under a load average of 12
//	    from other builds the same run gave 60,000-120,000 records/s: it is
//	    bound by disk bandwidth (60 MB/s at 100,000 records/s).
//	GroupMaxRecords 1024 / 4096 / 16384 under that load: 50k / 62-71k /
//	    55-67k records/s, commit p99 83-256 / 199-405 / 657-2042 ms: 4096
//	    (with GroupMaxBytes 4 MiB) is the best throughput without long
//	    commits.
//	go test ./spool -run '^$' -bench 'Reader_Drain$' -benchtime 3x
//	    226,000-398,000 records/s read, CRC-checked and deleted.
//	go test ./spool -run '^$' -bench Drain2GB -benchtime 1x
//	    peak RSS of a fresh process draining 2.2 GB (4.05M records):
//	    SegmentMaxBytes 8 MiB: 39.9 MiB, 16 MiB: 54.7 MiB, 32 MiB: 69.2 MiB
//	    (a reader maps one segment at a time and touches all of it), at
//	    545,000-665,000 records/s. Hence 8 MiB: well under 64 MiB, and at
//	    100,000 records/s a seal every ~0.15 s costs 2 syncs.
//	SegmentMaxAge 1 s (low-wear): the writer sees a record at most ~1 s
//	    after it was received (worst 1.05 s measured at 250 records/s).
//	MinGroupInterval 150 ms (low-latency): 13.5 syncs/s at 250 records/s,
//	    worst append→sealed 170 ms (TestAppender_Fsyncs_SteadyLowRate); the
//	    writer's commits follow the groups, so both processes stay under 25
//	    syncs/s. End-to-end figures: docs/harness-report.md, steady.
//	QueueMaxBytes 32 MiB: about 60,000 typical records, a minute of a
//	    1,000 msg/s stall before the receiver must drop.
//	QueueFullWait 5 s: a full queue makes appends wait (the MQTT
//	    connection pushes back) at most 5 s in any 10 s, under the 10 s
//	    ping timeout. A 1 M-message QoS 0 burst with and without it:
//	    receiver.BenchmarkBurst_QoS0, figures in docs/benchmarks.md.
package spool
