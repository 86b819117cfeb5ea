package receiver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes the stats file's counters as Prometheus metrics, read
// at scrape time from the same snapshot, so the two never disagree.
// Durations are in seconds and sizes in bytes (Prometheus' base units);
// the spool's latencies are gauges of the p50 and p99 over its last 1,024
// syncs, as the appender keeps them (a quantile label is a summary's, and
// the appender keeps no sum).
type collector struct {
	r *Receiver

	connected, connects, disconnects, attempts, messages, retained, duplicates,
	filtered, appended, appendedBytes, durable, acked, dropped, held,
	redeliveries, last5m, lastReceipt, pending, ready, healthy *prometheus.Desc

	depthRecords, depthBytes, depthSegments, oldestAge, spoolBytes, maxBytes, diskFree, minFree,
	fsyncs, fsyncP50, fsyncP99, commitP50, commitP99, groups, failedGroups, sealed,
	queuedRecords, queuedBytes, queueFullWaits, quarantined *prometheus.Desc
}

func newCollector(r *Receiver) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("meshingest_receiver_"+name, help, labels, nil)
	}
	src := "source"
	return &collector{
		r:             r,
		connected:     d("source_connected", "1 while the source is connected to its broker.", src),
		connects:      d("source_connects_total", "Successful connections (and subscriptions) to the broker.", src),
		disconnects:   d("source_disconnects_total", "Connections that ended.", src),
		attempts:      d("source_connect_attempts_total", "Connection attempts, failed ones included.", src),
		messages:      d("messages_total", "Messages delivered by the broker, all of them.", src),
		retained:      d("retained_messages_total", "Messages with the retained flag (replayed on subscribe).", src),
		duplicates:    d("duplicate_messages_total", "Messages with the DUP flag (redelivered by the broker).", src),
		filtered:      d("filtered_messages_total", "Packet messages outside the source's iataFilter.", src),
		appended:      d("appended_messages_total", "Messages the spool accepted.", src),
		appendedBytes: d("appended_bytes_total", "Payload bytes the spool accepted.", src),
		durable:       d("durable_messages_total", "Messages the spool reported fsynced.", src),
		acked:         d("acked_messages_total", "QoS 1 acknowledgements sent after fsync.", src),
		dropped:       d("dropped_messages_total", "Messages lost for good, by reason (every reason from zero).", src, "reason"),
		held:          d("held_messages_total", "QoS 1 messages left unacknowledged with the broker for redelivery, by reason (every reason from zero).", src, "reason"),
		redeliveries:  d("redelivery_reconnects_total", "Reconnects made to have held QoS 1 messages redelivered.", src),
		last5m:        d("messages_last5m", "Messages in the last five minutes.", src),
		lastReceipt:   d("last_receipt_timestamp_seconds", "Unix time of the last live (non-retained) message.", src),
		pending:       d("pending_records", "Records handed to the spool and not yet on disk."),
		ready:         d("ready", "1 while /-/ready answers 200: every source has tried to connect, the spool takes messages and its writes succeed."),
		healthy:       d("healthy", "1 while /-/healthy answers 200: the receiver's loop runs and the spool settles what it is given."),

		depthRecords:   d("spool_depth_records", "Records on disk the writer has not drained yet (by its advisory position), the active segment included."),
		depthBytes:     d("spool_depth_bytes", "Bytes of the segments holding those records."),
		depthSegments:  d("spool_depth_segments", "Segments holding those records."),
		oldestAge:      d("spool_oldest_record_age_seconds", "Age of the oldest record the writer has not drained (0 when none), to within a segment's span."),
		spoolBytes:     d("spool_bytes", "Bytes the spool's cap counts: segments and quarantine."),
		maxBytes:       d("spool_max_bytes", "The spool's byte cap in force (spool.maxBytes; -1 none)."),
		diskFree:       d("spool_disk_free_bytes", "Free bytes on the spool's file system (-1 unknown)."),
		minFree:        d("spool_min_free_bytes", "The free-disk floor in force (spool.minFreeBytes, scaled to the disk; -1 none)."),
		fsyncs:         d("spool_fsyncs_total", "fsync and fdatasync calls the appender made (segments, the sequence file, the folder)."),
		fsyncP50:       d("spool_fsync_p50_seconds", "Median fsync latency over the last 1,024 syncs."),
		fsyncP99:       d("spool_fsync_p99_seconds", "99th percentile fsync latency over the last 1,024 syncs."),
		commitP50:      d("spool_commit_p50_seconds", "Median time from a group's first write to durable, over the last 1,024 groups."),
		commitP99:      d("spool_commit_p99_seconds", "99th percentile time from a group's first write to durable, over the last 1,024 groups."),
		groups:         d("spool_groups_total", "Groups (one commit and fsync each) made durable."),
		failedGroups:   d("spool_failed_groups_total", "Groups that did not reach disk."),
		sealed:         d("spool_segments_sealed_total", "Segments sealed."),
		queuedRecords:  d("spool_queued_records", "Records in memory, not yet on disk."),
		queuedBytes:    d("spool_queued_bytes", "Bytes of records in memory, not yet on disk."),
		queueFullWaits: d("spool_queue_full_waits_total", "Times appends found the in-memory queue full and waited for the disk (spool.queueFullWaitMs) instead of dropping."),
		quarantined:    d("spool_quarantined_records", "Damaged records moved to quarantine when the appender recovered segments at start."),
	}
}

func (c *collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.connected, c.connects, c.disconnects, c.attempts, c.messages,
		c.retained, c.duplicates, c.filtered, c.appended, c.appendedBytes, c.durable, c.acked, c.dropped,
		c.held, c.redeliveries, c.last5m, c.lastReceipt, c.pending, c.ready, c.healthy,
		c.depthRecords, c.depthBytes, c.depthSegments, c.oldestAge, c.spoolBytes, c.maxBytes, c.diskFree, c.minFree,
		c.fsyncs, c.fsyncP50, c.fsyncP99, c.commitP50, c.commitP99, c.groups, c.failedGroups, c.sealed,
		c.queuedRecords, c.queuedBytes, c.queueFullWaits, c.quarantined}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	snap := c.r.Snapshot(now)
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for i, st := range snap.SourceStatuses {
		sc := snap.Sources[i]
		n := st.Name
		gauge(c.connected, bit(st.Connected), n)
		counter(c.connects, float64(st.ConnectCount), n)
		counter(c.disconnects, float64(st.DisconnectCount), n)
		counter(c.attempts, float64(sc.ConnectAttempts), n)
		counter(c.messages, float64(st.PacketsTotal), n)
		counter(c.retained, float64(sc.Retained), n)
		counter(c.duplicates, float64(sc.Duplicates), n)
		counter(c.filtered, float64(sc.Filtered), n)
		counter(c.appended, float64(sc.Appended), n)
		counter(c.appendedBytes, float64(sc.AppendedBytes), n)
		counter(c.durable, float64(sc.Durable), n)
		counter(c.acked, float64(sc.Acked), n)
		counter(c.redeliveries, float64(sc.RedeliveryReconnects), n)
		gauge(c.last5m, float64(st.PacketsLast5m), n)
		gauge(c.lastReceipt, float64(st.LastPacketUnix), n)
		for reason, v := range sc.Dropped {
			counter(c.dropped, float64(v), n, reason)
		}
		for reason, v := range sc.Held {
			counter(c.held, float64(v), n, reason)
		}
	}
	gauge(c.pending, float64(snap.Pending))
	gauge(c.ready, bit(snap.Ready))
	gauge(c.healthy, bit(snap.Healthy))

	sp := snap.Spool
	gauge(c.depthRecords, float64(sp.DepthRecords))
	gauge(c.depthBytes, float64(sp.DepthBytes))
	gauge(c.depthSegments, float64(sp.DepthSegments))
	gauge(c.oldestAge, oldestAge(sp.DepthOldest, sp.DepthRecords, now))
	gauge(c.spoolBytes, float64(sp.SpoolBytes))
	gauge(c.maxBytes, float64(max(sp.MaxBytes, -1)))
	gauge(c.diskFree, float64(sp.DiskFree))
	gauge(c.minFree, float64(sp.MinFreeBytes))
	counter(c.fsyncs, float64(sp.Fsyncs))
	counter(c.queueFullWaits, float64(sp.QueueFullWaits))
	gauge(c.fsyncP50, sp.FsyncP50.Seconds())
	gauge(c.fsyncP99, sp.FsyncP99.Seconds())
	gauge(c.commitP50, sp.CommitP50.Seconds())
	gauge(c.commitP99, sp.CommitP99.Seconds())
	counter(c.groups, float64(sp.Groups))
	counter(c.failedGroups, float64(sp.FailedGroups))
	counter(c.sealed, float64(sp.SegmentsSealed))
	gauge(c.queuedRecords, float64(sp.QueuedRecords))
	gauge(c.queuedBytes, float64(sp.QueuedBytes))
	gauge(c.quarantined, float64(sp.QuarantinedRecords))
}

// oldestAge is the age of the oldest undrained record, 0 when there is
// none.
func oldestAge(oldest time.Time, records uint64, now time.Time) float64 {
	if records == 0 || oldest.IsZero() {
		return 0
	}
	return max(now.Sub(oldest).Seconds(), 0)
}
