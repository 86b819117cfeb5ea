package receiver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes the stats file's counters as Prometheus metrics, read
// at scrape time from the same snapshot, so the two never disagree.
type collector struct {
	r *Receiver

	connected, connects, disconnects, attempts, messages, retained, duplicates,
	filtered, appended, appendedBytes, durable, acked, dropped, held,
	redeliveries, last5m, lastReceipt, pending, ready *prometheus.Desc
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
		dropped:       d("dropped_messages_total", "Messages lost for good, by reason.", src, "reason"),
		held:          d("held_messages_total", "QoS 1 messages left unacknowledged with the broker for redelivery, by reason.", src, "reason"),
		redeliveries:  d("redelivery_reconnects_total", "Reconnects made to have held QoS 1 messages redelivered.", src),
		last5m:        d("messages_last5m", "Messages in the last five minutes.", src),
		lastReceipt:   d("last_receipt_timestamp_seconds", "Unix time of the last live (non-retained) message.", src),
		pending:       d("pending_records", "Records handed to the spool and not yet on disk."),
		ready:         d("ready", "1 once every source has tried to connect, while the spool can take a message."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.connects, c.disconnects, c.attempts, c.messages,
		c.retained, c.duplicates, c.filtered, c.appended, c.appendedBytes, c.durable, c.acked, c.dropped,
		c.held, c.redeliveries, c.last5m, c.lastReceipt, c.pending, c.ready} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.r.Snapshot(time.Now())
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for i, st := range snap.SourceStatuses {
		sc := snap.Sources[i]
		n := st.Name
		up := int64(0)
		if st.Connected {
			up = 1
		}
		gauge(c.connected, up, n)
		counter(c.connects, st.ConnectCount, n)
		counter(c.disconnects, st.DisconnectCount, n)
		counter(c.attempts, sc.ConnectAttempts, n)
		counter(c.messages, st.PacketsTotal, n)
		counter(c.retained, sc.Retained, n)
		counter(c.duplicates, sc.Duplicates, n)
		counter(c.filtered, sc.Filtered, n)
		counter(c.appended, sc.Appended, n)
		counter(c.appendedBytes, sc.AppendedBytes, n)
		counter(c.durable, sc.Durable, n)
		counter(c.acked, sc.Acked, n)
		counter(c.redeliveries, sc.RedeliveryReconnects, n)
		gauge(c.last5m, st.PacketsLast5m, n)
		gauge(c.lastReceipt, st.LastPacketUnix, n)
		for reason, v := range sc.Dropped {
			counter(c.dropped, v, n, reason)
		}
		for reason, v := range sc.Held {
			counter(c.held, v, n, reason)
		}
	}
	gauge(c.pending, snap.Pending)
	ready := int64(0)
	if snap.Ready {
		ready = 1
	}
	gauge(c.ready, ready)
}
