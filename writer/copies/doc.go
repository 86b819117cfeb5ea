// Package copies is the writer's memory of receivers' copies of one MQTT
// publication: Memory holds the committed rounds, View is a batch's view
// of them (View.Admit decides each record), Encode and Decode their stored
// form, and Guess foresees on the pipeline's goroutine which records Admit
// will drop. The writer (writer/copies.go) loads and saves the memory in
// the batch's transaction (meshingest_copies, meshingest_state).
//
// Two receivers with full subscriptions (receive --instance) each spool
// every publication: the writer must apply each MQTT publication once, and
// still count twice what an observer deliberately published twice (the
// corpus has such pairs, byte for byte equal).
//
// A publication is known by its identity: a digest of its topic and
// payload. Copies of one identity received within the window of each
// other (writer.dedupWindowMs, by their receive times) form a round. In a round, the k-th copy from a
// spool is applied only if no spool has supplied a k-th copy yet: the
// round's count is the maximum over the receivers, not the sum. A
// receiver that heard both of an observer's copies supplies the second
// one; a receiver that was down for one of them adds nothing.
//
// Rounds are looked up by the record's own receive time, never by the
// time the writer reads it, so a copy that reaches the writer late (a
// receiver whose disk lagged, or that froze with a group in memory) is
// matched to its round as long as the round is remembered: the memory
// (writer.dedupMemoryMinutes) of receive time behind the newest record
// applied. A copy with no round
// within the window is late in another way: a receiver that froze (a
// paused VM, SIGSTOP) reads what the broker buffered for it when it
// resumes and stamps it with that time. Such a copy joins the newest
// remembered round of its identity that its spool has not supplied a
// copy for, so it applies nothing again; but never a round older than the
// receiver's current subscription (a restarted receiver's Seqs jump), since
// a new QoS 0 subscription receives nothing published before it. Later than
// the memory a copy is applied (the limit the README states). The price:
// the same bytes published again more than a window later, and heard only
// by a receiver whose connection (not process) dropped during the first
// publication, count once, not twice.
//
// The memory is stored with the rows, like the QoS 1 delivery memory: each
// batch writes one row to meshingest_copies with the rounds it changed, so
// a writer that crashed between two copies of a publication does not apply
// the second. Rows whose rounds are all past the memory are deleted.
package copies
