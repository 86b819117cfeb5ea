// Package decoder turns what MeshCore observers publish over MQTT into the
// values the writer stores: pure functions, no I/O, no package state.
//
// The wire rules are the radio firmware's (docs/reference/meshcore-packets.md);
// the stored forms are the ones CoreScope's server and frontend read
// (docs/reference/mqtt-formats.md §6, §9-10). Where the two disagree, the
// values are the firmware's and the key names and types CoreScope's.
//
// # Per message (every observation)
//
//	t := decoder.ParseTopic(topic)                // Kind, Region, ObserverID: substrings, no allocation
//	m, err := decoder.ParseObservation(t, payload) // KindPacket, KindClientPacket, KindRawPacket, KindBinaryPacket
//	id, err := m.Observer(t)                       // observers.id (ResolveObserver)
//	s, err := decoder.ParseStatusMessage(payload)  // KindStatus
//	n, err := decoder.ParseNeighborsMessage(payload) // KindNeighbors
//	c, err := decoder.ParseCompanionMessage(t, payload) // KindChannelMessage, KindDirectMessage
//	f, err := decoder.DecodeFrame(m.Raw)           // header, transport codes, path, payload, f.Hash
//	reason := decoder.DropReason(err)              // the stats/metrics name of any of these errors
//
// ParseTopic: `meshcore/status` and `meshcore/events/connection` (BR) and
// every topic not listed below are KindIgnored; `<prefix>/<IATA>/<ID>/packets`
// is KindPacket, `…/status` KindStatus, `…/raw` KindRawPacket, `…/neighbors`
// KindNeighbors (ObserverID is segment 2 verbatim, Region segment 1 as
// given); `meshcore/message/channel/<n>` and `meshcore/message/direct/<pk>`
// are the companion kinds; `meshcore/client/<pk>/packets` is KindClientPacket
// (CoreScope, with clientRxCoverage off, would ingest it as an ordinary packet
// with region "client"); PC's classic `<prefix>/packets` and `<prefix>/raw`
// have no region and no observer; a three-segment custom template
// `<prefix>/<X>/<kind>` has the observer X when X is a public key, else the
// region X; `binary/<GATEWAY>` is KindBinaryPacket with the gateway in
// ObserverID. CoreScope treats a `raw` on any other topic as a packet; no
// publisher sends one, and this package does not.
//
// # Dialects
//
// mqtt-formats.md §1 lists every publisher and what it sends. Besides
// CoreScope's `…/packets`:
//
//   - `…/raw` (PC, PY, OffbandMesh, agessaman firmware): the frame hex under
//     `data` (else `raw`), no SNR/RSSI/direction; Form FormRaw.
//   - `binary/<GATEWAY>`: the payload is the frame (at most 255 bytes, else
//     a too_long *FrameError); Raw is its upper-case hex; Form FormBinary.
//   - Numbers as strings (`"SNR":"12.5"`, `"len":"39"`, status stats) are
//     read as numbers everywhere.
//   - No packet bytes (an envelope of origin fields only, `data` empty, an
//     empty binary payload): ErrNoRaw, reason no_raw, a drop and not an
//     unreadable payload.
//   - The observer (ResolveObserver): the topic's observer segment verbatim,
//     as CoreScope; without one the payload's origin_id if it is a public key
//     (upper-cased), else ErrNoObserver; for `binary/<GATEWAY>` the gateway
//     if it is a public key, else ErrGatewayNotKey. IsOwnTransmission spots
//     the observer's own zero-hop advert, which a publisher without a
//     direction field (agessaman's `…/raw`) reports as if heard.
//   - `…/neighbors` (agessaman's ESP32 observer firmware, PC; daily, up to
//     10 KB, QoS 1, possibly retained): ParseNeighborsMessage. CoreScope
//     a06ac8a has no place for it; later CoreScope stores the confirmed
//     scopes (Neighbor.ScopesConfirmed) of each neighbour.
//
// # One reception, two forms
//
// OffbandMesh and PC publish every packet twice, on `…/packets` and
// `…/raw`; agessaman firmware does when raw is enabled. Both give the same
// observer (Observer) and the same frame bytes (Frame.Fingerprint), so the
// same content hash and path_json; they differ in PacketMessage.Form, and
// only the FormPacket one carries SNR, RSSI, score and direction. One such
// pair is one observation and one packet_count increment. The rule the
// writer applies (the decoder keeps no state):
//
//   - key: (observer id, Fingerprint); a FormPacket message matches one
//     earlier unmatched FormRaw or FormBinary message of the same key
//     received (spool receive time) at most 10 s before it, and a FormRaw
//     or FormBinary message matches one earlier unmatched FormPacket message
//     likewise. Matching is one to one, oldest first.
//   - a matched message is the second form of a reception: it counts
//     nothing (no observation, packet_count, last_seen or hooks) and is
//     counted as duplicate_form. If it is the FormPacket one, pass it
//     through the observation upsert all the same: the row (same
//     transmission, observer and path_json, so the same dedup key) then
//     gets its SNR, RSSI and score, which the upsert COALESCEs in, and its
//     direction, which the upsert must COALESCE too.
//   - two messages of the same form are never a pair: an observer can hear
//     one frame twice (the firmware sends extra ACK copies, for one), and a
//     second broker can deliver it again; both count, as in CoreScope.
//   - a genuine double hearing published in both forms is four messages and
//     two pairs, so it still counts twice. A form the publisher dropped
//     (OffbandMesh skips `/raw` to a broker that is down but buffers
//     `/packets`, which then arrives minutes late) finds no partner within
//     10 s and counts on its own.
//   - the unmatched entries are writer memory: at a restart the pairs in
//     flight (at most 10 s of dual-form traffic) may count twice; to avoid
//     it, keep them with the batch's spool position.
//
// # Drop reasons
//
// DropReason names every error above (no_raw, no_observer_id,
// gateway_not_pubkey, no_neighbor_list, companion_no_text,
// unreadable_payload, invalid_frame:<code>); ReasonOwnTransmission and
// ReasonDuplicateForm are the writer's decisions; DropReasons lists them
// all so counters can start at zero.
//
// The Parse*Message functions read payloads with a bounded scanner, not
// encoding/json: a payload over MaxMessageBytes (64 KiB) is refused before
// it is read, nesting deeper than MaxJSONDepth is refused where it starts,
// and the whole payload is validated. Errors are *MessageError wrapping
// ErrMessageTooLarge, ErrNotJSON, ErrNotObject, ErrTooDeep, ErrNoRaw,
// ErrNoText or ErrNoNeighbors. Optional values are sql.Null* (bindable as
// they are): numbers may be JSON numbers or strings, also with a unit
// ("-110dBm", "7.5dB"); "Unknown",
// "", null, NaN and infinities are NULL; SNR/RSSI take the upper-case key
// when present even if it does not parse (CoreScope's rule); then `score`
// over `Score` and `direction` over `Direction`. Status stats are read from
// `stats` first, then the top level, counts rounded; `repeat` accepts a bool,
// on/off/true/false/1/0/yes/no or a number; HasMetadata says whether an
// observer_metrics row is due. The envelope `timestamp` is an EnvelopeTime
// (Time, Naive, OK); EnvelopeTime.NaiveSkew says when to record clock skew
// (naive and more than 15 minutes off the receive time).
//
// DecodeFrame applies the firmware's receive checks in its order and fails
// with a *FrameError whose Code is bad_hex, too_short, too_long,
// unsupported_version, path_hash_size_reserved, path_too_long,
// truncated_path or payload_too_long (errors.Is works against ErrBadHex …).
// Input longer than MaxFrameHexChars is refused unread. A valid frame has
// its content hash (f.Hash.String() is the 16 lowercase hex digits of
// transmissions.hash; TRACE hashes path_len too). Per observation the
// writer also needs f.PathJSON() (path_json: compact JSON of uppercase hop
// hex; for TRACE the payload route hashes, 1 << (flags & 3) bytes each) and
// f.Hops() (the same hops as strings, to resolve to node keys). No crypto
// runs here, so a duplicate observation costs only this.
//
// # Per transmission (once per new content hash)
//
//	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{ChannelKeys: cfg.ChannelKeys,
//		HashChannels: cfg.HashChannels, Rainbow: rainbowFileBytes}) // once
//	opts := decoder.Options{Keys: ring, Regions: decoder.NewRegionSet(cfg.HashRegions),
//		VerifySignatures: cfg.ShouldValidateSignatures()}          // once
//	p := decoder.DecodePacket(f, opts)
//	p.DecodedJSON()  // decoded_json bytes
//	p.ChannelHash()  // channel_hash: name, enc_XX, or NULL (GRP_TXT only)
//	p.FromPubkey()   // from_pubkey: advert key, lowercase, else NULL
//	p.Scope          // scope_name: NULL, "" or the matched hashRegions name
//	p.Node()         // ADVERT: the nodes row (pubkey, name, role, lat/lon, signature validity)
//
// DecodePacket runs the expensive parts: the channel-key search for GRP_TXT
// and GRP_DATA and the Ed25519 check of an ADVERT. Observers send about 27
// observations per transmission, so the writer runs it only for a hash it
// has not stored; VerifyAdvertSignature and KeyRing.DecryptGroup expose the
// two steps on their own.
//
// Key ring: explicit `channelKeys` (16- or 32-byte secrets, hex) beat
// `hashChannels` (SHA-256("#name")[0:16], '#' added when missing,
// case-sensitive), which beat the rainbow file (CoreScope's
// channel-rainbow.json: one JSON object, name → hex key; its bytes are passed
// in, the decoder reads no file), which beats the built-in Public key that
// CoreScope also always has. A channel named "public" in any case is stored
// as "Public". Keys are indexed by channel-hash byte: a packet is tried only
// against keys with its hash byte, MAC first, in that priority order, then
// by name; the first key whose MAC matches and whose text is valid UTF-8
// wins (a 2-byte MAC matches a wrong key 1 time in 65536).
//
// # decoded_json
//
// CoreScope a06ac8a's key names, key order, types and omitempty rules, and
// encoding/json's HTML escaping, so the server's LIKE searches and the
// frontend see what they expect. The values follow the firmware:
//
//   - ADVERT signatureValid is the firmware verdict (appdata clamped to 32
//     bytes); name is the appdata after the optional fields, within those 32
//     bytes, up to a NUL; there is no battery_mv/temperature_c (CoreScope's
//     sensor "telemetry trailer" does not exist in the firmware); an advert
//     without appdata has no flags (its nodes.role is still "companion").
//   - GRP_TXT: "no_key" when no key has the packet's channel hash,
//     "decryption_failed" when some do but none verifies. A decrypted
//     message whose txt_type is not 0 (the firmware drops those) is stored
//     decrypted with an extra "txtType" key; text is the whole plaintext
//     text, sender the part before the first ": ".
//   - 32-byte channel secrets decrypt.
//   - ANON_REQ keeps CoreScope's name ephemeralPubKey for what is the
//     sender's long-term key.
//   - TRACE snrValues are the header path bytes as int8/4 dB.
//   - CONTROL ctrlSNR keeps CoreScope's raw int8 in quarter-dB (-36 means
//     -9 dB): CoreScope's frontend divides it by 4 for display, so storing
//     dB would show a quarter of the real value.
//   - A payload shorter than the firmware's minimum for its type (REQ,
//     RESPONSE, TXT_MSG, PATH 5; ACK 4; GRP 4; ANON_REQ 36; ADVERT 100;
//     TRACE 9; MULTIPART 1, 5 with an inner ACK; CONTROL DISCOVER 6) is
//     {"type":…,"raw":…,"error":"too short"} (ADVERT "too short for
//     advert"); MULTIPART and CONTROL keep their header fields beside the
//     error.
//   - A frame the firmware drops (payload version ≠ 0 included) has no
//     decoded_json at all: the writer stores no transmission for it.
//
// # Performance
//
// `go test -run '^$' -bench . -benchmem -benchtime 2s ./decoder/` on the
// development machine (AMD EPYC, one goroutine per benchmark; README.md in
// this folder has the whole table):
//
//   - per observation (topic, payload, frame, hash, path_json): 4.0 µs and
//     8 allocations for a typical message, about 250,000 messages/s; 5.6 µs
//     averaged over the 500 real packet messages;
//   - per new transmission, GRP_TXT with a 340-key ring: 5.1 µs, 7 allocations;
//   - one channel-key search among 340 keys: 0.5 µs (hit), 1.1 µs (miss);
//     trying all 300 MACs as CoreScope does would cost 132 µs;
//   - one advert signature check: 116 µs.
package decoder
