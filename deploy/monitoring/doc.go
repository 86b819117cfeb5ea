// Package monitoring holds what an operator loads into Grafana and
// Prometheus to watch meshingest: grafana-dashboard.json (health, lag,
// backlog, rates, drops, spool fsyncs and space, the database's state) and
// alerts.yml (Prometheus alert rules). It has no code: its test runs both
// processes, checks their /metrics with `promtool check metrics`, the rules
// with `promtool check rules`, and that every metric the dashboard and the
// rules name is one the processes export.
package monitoring
