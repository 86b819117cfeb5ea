// Package loadgen generates realistic MeshCore observer traffic as MQTT
// messages, for the load and fault harness (package harness).
//
// A Generator simulates one mesh: a population of nodes (Ed25519
// identities with names, roles and positions), the repeaters among them
// whose key prefixes make up paths, a set of channels (Public, hashtag
// channels, a 32-byte secret, and channels whose keys the analyzer does not
// have), and N observers, each with its region, its publisher software and
// the way that software formats SNR, RSSI and timestamps
// (docs/reference/mqtt-formats.md §2, §3). Each transmission is one
// firmware-exact frame (docs/reference/meshcore-packets.md): signed adverts
// (Ed25519 over pubkey ‖ timestamp ‖ appdata[:32]), channel messages
// encrypted under AES-128-ECB with the 2-byte HMAC-SHA256 MAC, every payload
// type, 1-, 2- and 3-byte path hashes, transport codes, TRACE with its SNR
// path. About Options.Fanout observers hear each transmission, each over its
// own path, and publish it on meshcore/<IATA>/<ID>/packets; observers also
// publish status messages.
//
// Everything that reaches the database is a function of Options.Seed: two
// generators with the same options produce the same frames, topics and
// observation keys, so a disturbed run can be compared with an undisturbed
// one row for row. Only the envelope `timestamp`, `time` and `date` of a
// message come from Options.Clock (the publisher's clock; no writer stores
// them).
//
// Accounting tells what a correct writer must end with for the messages
// handed out so far: transmissions, observations, observers and their
// packet_count, nodes and their advert_count, dropped messages by reason,
// channel_hash and payload-type distributions. Every Message also carries
// its expected outcome and its observation key (content hash, observer,
// path_json), so a harness can find exactly which messages are missing or
// doubled in a database.
//
// The generator does no I/O and is not safe for concurrent use.
package loadgen
