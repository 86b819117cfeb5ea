package writer

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
	"github.com/meshingest/meshingest/writer/copies"
	"github.com/meshingest/meshingest/writer/forms"
	"github.com/meshingest/meshingest/writer/geofilter"
	"github.com/meshingest/meshingest/writer/internal/recent"
	"github.com/rs/zerolog"
)

// Why a message produced no rows (the stats file's `drops` and the
// meshingest_writer_drops_total metric). Only DropInvalidSignature and
// DropUnreadable also write a dropped_packets row: a bad signature is
// CoreScope's one reason, and a payload that cannot even be read is worth
// showing to the operator; a frame the radio firmware itself would refuse
// is not a MeshCore packet and gets no row (as in CoreScope a06ac8a).
const (
	DropInvalidSignature = "invalid signature" // CoreScope's reason string, kept verbatim
	DropUnreadable       = "unreadable_payload"
	DropInvalidFrame     = "invalid_frame" // + ":" + the decoder's code, e.g. invalid_frame:unsupported_version
	DropIgnoredTopic     = "ignored_topic"
	DropBlacklisted      = "observer_blacklisted"
	DropNotWhitelisted   = "iata_not_whitelisted"
	DropIATAFiltered     = "iata_filtered"
	DropNoRaw            = "no_raw"
	DropNoText           = "companion_no_text"
	DropNoObserver       = "no_observer_id"
	DropDirectionTx      = "direction_tx"
	DropForeignAdvert    = "foreign_advert"
	DropClientCoverage   = "client_coverage_not_supported"
	// DropRedelivered is a QoS 1 message the broker delivered again (MQTT
	// DUP) whose first delivery is already stored: applying it again would
	// count it twice.
	DropRedelivered = "redelivered_duplicate"
	// DropRetainedReplay is a retained message the broker replayed at a
	// (re)subscribe whose first delivery is already applied (retained.go).
	DropRetainedReplay = "retained_replay"
	// The decoder's reasons for the dialects (decoder.DropReason):
	DropGatewayNotKey = decoder.ReasonGatewayNotKey // binary/<GATEWAY> whose gateway is no public key
	DropNoNeighbors   = decoder.ReasonNoNeighbors   // a neighbors message without a neighbors array
	// DropOwnTransmission: the observer's own zero-hop advert on `…/raw`
	// or binary, a transmit log (decoder.IsOwnTransmission).
	DropOwnTransmission = decoder.ReasonOwnTransmission
	// DropDuplicateForm: the second form (`…/packets` and `…/raw`) of one
	// reception (forms.go).
	DropDuplicateForm = decoder.ReasonDuplicateForm
	// invalid_advert_* (advertProblem) are CoreScope's ValidateAdvert.
)

// DropReasons lists every reason the writer counts a drop for (the stats
// file's drops, the reason label of meshingest_writer_drops_total), so that
// counters start at zero: its own, the decoder's (decoder.DropReasons,
// invalid_frame once per decoder code) and advertProblem's invalid_advert_*.
func DropReasons() []string {
	r := []string{DropInvalidSignature, DropUnreadable, DropIgnoredTopic, DropBlacklisted, DropNotWhitelisted, DropIATAFiltered,
		DropNoRaw, DropNoText, DropNoObserver, DropDirectionTx, DropForeignAdvert, DropClientCoverage, DropRedelivered,
		DropRetainedReplay, DropOtherReceiver}
	r = append(r, decoder.DropReasons()...)
	r = append(r, advertProblems...)
	slices.Sort(r)
	return slices.Compact(r)
}

// ingestConfig is what the configuration says about turning messages into
// rows, prepared once.
type ingestConfig struct {
	decode          decoder.Options // full decode of a new transmission
	reread          decoder.Options // a stored advert's fields again: no signature check
	blacklist       map[string]bool // lower-cased observer ids
	whitelist       map[string]bool // upper-cased IATA codes; nil admits all
	sources         map[string]sourceRules
	geo             *geofilter.Filter
	dropForeign     bool
	metricsInterval time.Duration
	clientCoverage  bool
}

type sourceRules struct {
	iataFilter map[string]bool // upper-cased; nil admits all
	region     string
}

// DecodeOptions are the options the writer decodes a new transmission
// with: cfg's channel keys (it reads the channelKeysPath file, the one file
// the decoder needs), transport regions and signature check. `meshingest
// redecode` decodes stored rows again with them.
func DecodeOptions(cfg *shared.Config) (decoder.Options, error) {
	var rainbow []byte
	if cfg.ChannelKeysPath != "" {
		b, err := os.ReadFile(cfg.ChannelKeysPath)
		if err != nil {
			return decoder.Options{}, fmt.Errorf("read channelKeysPath %s: %w; fix the path or remove the key", cfg.ChannelKeysPath, err)
		}
		rainbow = b
	}
	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{ChannelKeys: cfg.ChannelKeys, HashChannels: cfg.HashChannels, Rainbow: rainbow})
	if err != nil {
		return decoder.Options{}, fmt.Errorf("channel keys: %w", err)
	}
	return decoder.Options{Keys: ring, Regions: decoder.NewRegionSet(cfg.HashRegions), VerifySignatures: cfg.ShouldValidateSignatures()}, nil
}

// newIngestConfig builds the decoding options and filters from CoreScope's
// configuration.
func newIngestConfig(cfg *shared.Config) (ingestConfig, error) {
	decode, err := DecodeOptions(cfg)
	if err != nil {
		return ingestConfig{}, err
	}
	ic := ingestConfig{
		decode:          decode,
		reread:          decoder.Options{Regions: decode.Regions},
		blacklist:       map[string]bool{},
		sources:         map[string]sourceRules{},
		geo:             geofilter.New(cfg.GeoFilter),
		dropForeign:     cfg.DropForeignAdverts(),
		metricsInterval: cfg.MetricsSampleInterval(),
		clientCoverage:  cfg.ClientRxCoverage != nil && cfg.ClientRxCoverage.Enabled,
	}
	for _, id := range cfg.ObserverBlacklist {
		ic.blacklist[strings.ToLower(strings.TrimSpace(id))] = true
	}
	if len(cfg.ObserverIATAWhitelist) > 0 {
		ic.whitelist = upperSet(cfg.ObserverIATAWhitelist)
	}
	for _, s := range cfg.MQTTSources {
		r := sourceRules{region: s.Region}
		if len(s.IATAFilter) > 0 {
			r.iataFilter = upperSet(s.IATAFilter)
		}
		ic.sources[s.Name] = r
	}
	return ic, nil
}

func upperSet(list []string) map[string]bool {
	m := map[string]bool{}
	for _, v := range list {
		m[strings.ToUpper(strings.TrimSpace(v))] = true
	}
	return m
}

// ingester maps spool records to the rows of a batch, in two steps:
// prepare (pure: topic, payload, frame, hash, and a speculative full
// decode) runs on the pipeline's reader goroutine, apply (everything that
// needs the database) on the drain goroutine.
type ingester struct {
	cfg      ingestConfig
	hook     BatchHook
	log      zerolog.Logger
	throttle *shared.Throttle

	// decoded remembers the content hashes prepare has fully decoded
	// recently. Only the reader goroutine touches it.
	decoded *recent.Cache[ContentKey, struct{}]
}

// prepared is a record taken apart as far as possible without the
// database.
type prepared struct {
	rec Record
	pos Position
	// since is when its receiver's current subscription began, as far as
	// the writer knows (spoolSlot.since; zero: unknown). Set by the drain
	// loop.
	since time.Time
	// streamTime is the newest receive time applied before this record
	// (Writer.applyRecords): the copies' memory reaches back from it.
	// It depends on the drain order only, not on where batches end.
	streamTime time.Time
	t          time.Time // receive time, UTC
	topic      decoder.Topic
	// observer is the observers.id the message is from (the topic's
	// observer segment, else origin_id, else the binary gateway); "" for
	// companion messages.
	observer string
	drop     string // the message produces no rows: why
	cause    error
	region   string // IATA for the observer row

	pkt   decoder.PacketMessage
	frame decoder.Frame
	key   ContentKey
	hash  string
	path  string
	// full is the payload decoded with keys and signature check, done
	// ahead for a hash not seen recently (nil otherwise: apply decodes
	// if the hash turns out to be new after all), with its stored forms.
	full *decodedPacket

	status    *decoder.StatusMessage
	comp      *decoder.CompanionMessage
	neighbors bool // a neighbors report, stored verbatim (rec.Payload)

	// ident is the publication identity (copies.Identity) when the writer
	// drains several spools (hasIdent); unprepared, when the pipeline
	// guessed the record another receiver's copy and left it at that
	// (guessedCopy): only rec, pos, t and ident are set.
	ident      uint64
	hasIdent   bool
	unprepared bool
	// noDecodeAhead: prepared on the drain goroutine, which must not
	// touch the reader goroutine's decoded cache.
	noDecodeAhead bool
}

// guessedCopy is a record the pipeline takes for another receiver's copy
// (copies.Guess): not taken apart, since copies.View.Admit will most
// likely drop it, and handed over in a fraction of a prepared record's
// size.
type guessedCopy struct {
	rec   Record
	pos   Position
	ident uint64
}

// prepareGuessing is prepare for a writer draining several spools (g set):
// a record g takes for another receiver's copy is returned as c instead.
func (in *ingester) prepareGuessing(rec Record, pos Position, g *copies.Guess) (p *prepared, c *guessedCopy) {
	if g == nil {
		return in.prepare(rec, pos), nil
	}
	key, copy := g.Note(&rec, pos.Spool)
	if copy {
		return nil, &guessedCopy{rec: rec, pos: pos, ident: key}
	}
	p = in.prepare(rec, pos)
	p.ident, p.hasIdent = key, true
	return p, nil
}

// unprepared fills p, overwriting it, with c as the drain loop sees a
// guessed copy.
func (c *guessedCopy) unprepared(p *prepared) {
	*p = prepared{rec: c.rec, pos: c.pos, t: c.rec.ReceivedAt.UTC(), ident: c.ident, hasIdent: true, unprepared: true}
}

// prepareNow prepares, on the drain goroutine, a record the pipeline left
// unprepared that copies.View.Admit applies after all: a new prepared record, since
// the batch may keep pointers into it.
func (in *ingester) prepareNow(p *prepared) *prepared {
	q := in.prepareWith(p.rec, p.pos, true)
	q.since, q.streamTime, q.ident, q.hasIdent = p.since, p.streamTime, p.ident, p.hasIdent
	return q
}

// prepare does the per-message work that needs no database.
func (in *ingester) prepare(rec Record, pos Position) *prepared {
	return in.prepareWith(rec, pos, false)
}

func (in *ingester) prepareWith(rec Record, pos Position, noDecodeAhead bool) *prepared {
	p := &prepared{rec: rec, pos: pos, t: rec.ReceivedAt.UTC(), noDecodeAhead: noDecodeAhead}
	p.topic = decoder.ParseTopic(rec.Topic)
	topic := &p.topic
	switch topic.Kind {
	case decoder.KindIgnored:
		p.drop = DropIgnoredTopic
	case decoder.KindChannelMessage, decoder.KindDirectMessage:
		c, err := decoder.ParseCompanionMessage(*topic, rec.Payload)
		if err != nil {
			p.dropFor(err)
			return p
		}
		p.comp = &c
		p.hash = c.ContentHash(p.t)
		hex.Decode(p.key[:], []byte(p.hash))
	case decoder.KindClientPacket:
		if in.cfg.clientCoverage {
			// CoreScope's opt-in mobile coverage rows are not written by
			// meshingest yet.
			p.drop = DropClientCoverage
			return p
		}
		// With coverage off CoreScope ingests these as ordinary packets
		// from region "client"; the observer filters see the key.
		topic.Region = "client"
		in.prepareObservation(p)
	default:
		in.prepareObserverMessage(p)
	}
	return p
}

// dropFor makes p a drop for a decoder error; an unreadable payload keeps
// the error for its dropped_packets row.
func (p *prepared) dropFor(err error) {
	p.drop, p.cause = decoder.DropReason(err), err
	if p.drop == "" {
		p.drop = DropUnreadable
	}
}

// region is the IATA code a message's filters see: the topic's region
// segment, else (binary and other topics without one) the source's
// configured region.
func (in *ingester) region(p *prepared) string {
	return strings.ToUpper(strings.TrimSpace(firstNonEmpty(p.topic.Region, in.cfg.sources[p.rec.Source].region)))
}

// admit applies the observer filters (observerBlacklist on the observer
// id; observerIATAWhitelist on the region) and reports whether the message
// passes; when not, p is a drop.
func (in *ingester) admit(p *prepared, region string) bool {
	if p.observer != "" && in.cfg.blacklist[strings.ToLower(p.observer)] {
		p.drop = DropBlacklisted
		return false
	}
	if in.cfg.whitelist != nil && !in.cfg.whitelist[region] {
		p.drop = DropNotWhitelisted
		return false
	}
	return true
}

// prepareObserverMessage handles the topics of an observer: packets, raw,
// binary, status and neighbors. The observer is known from the topic when
// it has an observer segment (then the filters run before the payload is
// read), else from the payload's origin_id.
func (in *ingester) prepareObserverMessage(p *prepared) {
	topic := &p.topic
	region := in.region(p)
	early := topic.ObserverID != ""
	if early {
		id, err := decoder.ResolveObserver(*topic, sql.NullString{})
		if err != nil {
			p.dropFor(err)
			return
		}
		if p.observer = id; !in.admit(p, region) {
			return
		}
	}
	var originID sql.NullString
	switch topic.Kind {
	case decoder.KindStatus:
		s, err := decoder.ParseStatusMessage(p.rec.Payload)
		if err != nil {
			p.dropFor(err)
			return
		}
		p.status, originID = &s, s.OriginID
	case decoder.KindNeighbors:
		n, err := decoder.ParseNeighborsMessage(p.rec.Payload)
		if err != nil {
			p.dropFor(err)
			return
		}
		p.neighbors, originID = true, n.OriginID
	default:
		// A source's iataFilter applies to receptions only: status and
		// neighbors are observer metadata.
		if rules, ok := in.cfg.sources[p.rec.Source]; ok && rules.iataFilter != nil && !rules.iataFilter[region] {
			p.drop = DropIATAFiltered
			return
		}
		in.prepareObservation(p)
		return
	}
	p.region = region
	if !early {
		id, err := decoder.ResolveObserver(*topic, originID)
		if err != nil {
			p.dropFor(err)
			return
		}
		if p.observer = id; !in.admit(p, region) {
			return
		}
	}
}

// prepareObservation takes a reception apart: payload (any form), the
// observer, the frame and its content hash, and for a hash not seen
// recently the full decode.
func (in *ingester) prepareObservation(p *prepared) {
	var err error
	p.pkt, err = decoder.ParseObservation(p.topic, p.rec.Payload)
	if err != nil {
		p.dropFor(err)
		return
	}
	switch {
	case p.topic.Kind == decoder.KindClientPacket:
		// The observer filters apply to observers, and the whitelist
		// never to the client region (as in CoreScope): the blacklist
		// only.
		p.observer = p.topic.ObserverID
		if in.cfg.blacklist[strings.ToLower(p.observer)] {
			p.drop = DropBlacklisted
			return
		}
	case p.observer == "":
		if p.observer, err = p.pkt.Observer(p.topic); err != nil {
			p.dropFor(err)
			return
		}
		if !in.admit(p, in.region(p)) {
			return
		}
	}
	if p.pkt.Direction.Valid && strings.EqualFold(p.pkt.Direction.String, "tx") {
		// meshcoretomqtt attaches the last *received* raw to a tx line
		// (the firmware logs no raw for transmissions): storing it would
		// invent an observation.
		p.drop = DropDirectionTx
		return
	}
	p.frame, err = decoder.DecodeFrame(p.pkt.Raw)
	if err != nil {
		p.dropFor(err)
		return
	}
	if p.pkt.Form != decoder.FormPacket && decoder.IsOwnTransmission(&p.frame, p.observer) {
		// agessaman firmware logs its own adverts on `…/raw`, which has
		// no direction field: a radio does not hear itself.
		p.drop = DropOwnTransmission
		return
	}
	p.key = ContentKey(p.frame.Hash)
	p.hash = p.frame.Hash.String()
	p.path = p.frame.PathJSON()
	p.region = strings.ToUpper(strings.TrimSpace(firstNonEmpty(p.pkt.Region.String, p.topic.Region, in.cfg.sources[p.rec.Source].region)))
	// The first observation of a transmission is decoded in full here, on
	// the reader's core; its duplicates (27 on average) are not.
	if p.noDecodeAhead {
		return // apply decodes a new transmission
	}
	if _, seen := in.decoded.Get(p.key); !seen {
		in.decoded.Put(p.key, struct{}{})
		p.full = in.decode(&p.frame, true)
	}
}

// decodedPacket is a decode and, for a new transmission, the forms it is
// stored in.
type decodedPacket struct {
	pkt     *decoder.Packet
	node    decoder.Node
	isNode  bool
	decoded []byte
	channel sql.NullString
	from    sql.NullString
}

// decode is the one place a frame is decoded. The frame of a new
// transmission is decoded in full (channel keys, signature check) with its
// stored forms; a stored one only for its advert's node fields again,
// without the keys or the signature check the stored transmission passed.
func (in *ingester) decode(f *decoder.Frame, newTransmission bool) *decodedPacket {
	opts := in.cfg.reread
	if newTransmission {
		opts = in.cfg.decode
	}
	pkt := decoder.DecodePacket(*f, opts)
	d := &decodedPacket{pkt: pkt}
	d.node, d.isNode = pkt.Node()
	if newTransmission {
		d.decoded, d.channel, d.from = pkt.DecodedJSON(), pkt.ChannelHash(), pkt.FromPubkey()
	}
	return d
}

// apply writes the rows of one prepared message into the batch. Its error
// is always the database's: a message that cannot be stored is counted as
// a drop, never returned, so one bad message can never block the spool.
func (in *ingester) apply(b *batch, p *prepared) error {
	b.counts.messages++
	if err := in.applyRecord(b, p); err != nil {
		return err
	}
	b.delivered(&p.rec, p.pos.Spool)
	return nil
}

func (in *ingester) applyRecord(b *batch, p *prepared) error {
	if p.rec.Duplicate && b.isRedelivery(&p.rec, p.pos.Spool) {
		return in.drop(b, DropRedelivered, p, nil)
	}
	// After the redelivery rule: a QoS 1 redelivery is the same copy
	// again, not another receiver's.
	if b.copies != nil {
		key := p.ident
		if !p.hasIdent {
			key = copies.Identity(&p.rec)
		}
		if apply, late := b.copies.Admit(&p.rec, key, p.pos.Spool, p.since, p.streamTime); !apply {
			if late {
				b.lateCopies[p.pos.Spool]++
			}
			b.otherCopies[p.pos.Spool]++
			return in.drop(b, DropOtherReceiver, p, nil)
		}
		if p.unprepared {
			p = in.prepareNow(p)
		}
	}
	if p.rec.Retained && retainedKind(p.topic.Kind) {
		if replay, err := b.retainedReplay(&p.rec); err != nil {
			return err
		} else if replay {
			return in.drop(b, DropRetainedReplay, p, nil)
		}
	}
	if p.drop != "" {
		return in.drop(b, p.drop, p, p.cause)
	}
	switch {
	case p.status != nil:
		return in.applyStatus(b, p)
	case p.neighbors:
		return in.applyNeighbors(b, p)
	case p.comp != nil:
		return in.applyCompanion(b, p)
	case p.hash != "":
		return in.applyPacket(b, p)
	}
	return in.drop(b, DropIgnoredTopic, p, nil)
}

func (in *ingester) applyStatus(b *batch, p *prepared) error {
	s, t, id := p.status, p.t, p.observer
	name := nonEmpty(s.Origin)
	iata := nonEmptyString(p.region)
	meta := ObserverMeta{
		Model: s.Model, Firmware: s.Firmware, ClientVersion: s.ClientVersion, Radio: s.Radio,
		BatteryMv: s.BatteryMV, UptimeSecs: s.UptimeSecs, NoiseFloor: s.NoiseFloor,
		TxAirSecs: s.TxAirSecs, RxAirSecs: s.RxAirSecs, RecvErrors: s.RecvErrors,
		PacketsSent: s.PacketsSent, PacketsRecv: s.PacketsRecv,
	}
	if s.Repeat.Valid {
		meta.CanRelay = sql.NullInt64{Valid: true}
		if s.Repeat.Bool {
			meta.CanRelay.Int64 = 1
		}
	}
	if p.rec.Retained {
		// A broker replays the last retained status at every subscribe,
		// possibly months old: it updates what the observer is, not
		// when it was last heard, and creates no row.
		rowid, ok, err := b.observer(id, name, iata, t, false)
		if err != nil || !ok {
			return err
		}
		b.observerRetained(rowid, name, iata, &meta)
		return nil
	}
	rowid, _, err := b.observer(id, name, iata, t, true)
	if err != nil {
		return err
	}
	b.observerLive(rowid, name, iata, t, false, &meta)
	if s.HasMetadata {
		return b.insertMetrics(id, &meta, t, in.cfg.metricsInterval)
	}
	return nil
}

func (in *ingester) applyPacket(b *batch, p *prepared) error {
	e, found, err := b.transmission(p.key, p.hash)
	if err != nil {
		return err
	}
	if found && p.rec.Retained {
		if stored, err := b.observationStored(e.id, p.observer, p.path); err != nil {
			return err
		} else if stored {
			return in.drop(b, DropRetainedReplay, p, nil)
		}
	}
	// The second form of a reception counts nothing; its first form
	// stored the transmission.
	form := forms.Key{Observer: p.observer, Fingerprint: p.frame.Fingerprint()}
	raw := p.pkt.Form != decoder.FormPacket
	if found && b.forms().Match(form, raw, p.t.UnixMilli()) {
		return in.secondForm(b, p, e)
	}
	var advert *NodeAdvert
	var d *decodedPacket
	if found {
		b.counts.txDupes++
		if p.frame.Type == decoder.TypeAdvert {
			advert = in.storedAdvert(b, p, e.advert)
		}
	} else {
		d = in.decodeNew(b, p)
		if d.isNode {
			if !d.node.SignatureValid {
				return in.badSignature(b, p, &d.node)
			}
			if reason := advertProblem(&d.node); reason != "" {
				return in.drop(b, reason, p, nil)
			}
			advert = in.advertOf(&d.node, d.pkt.Scope)
		}
	}
	if advert != nil && advert.Foreign && in.cfg.dropForeign {
		return in.drop(b, DropForeignAdvert, p, nil)
	}
	if !found {
		f := &p.frame
		e, err = b.insertTransmission(&Transmission{
			Key: p.key, Hash: p.hash, RawHex: p.pkt.Raw,
			RouteType: int(f.Route), PayloadType: int(f.Type), PayloadVersion: int(f.Version),
			DecodedJSON: d.decoded, ChannelHash: d.channel, FromPubkey: d.from, ScopeName: d.pkt.Scope,
		}, p.t)
		if err != nil {
			return err
		}
		if advert != nil {
			b.rememberAdvert(p.key, advert)
		}
	}
	if err := in.observe(b, p, e, advert, !found); err != nil {
		return err
	}
	b.forms().Add(form, raw, p.t.UnixMilli())
	return nil
}

// secondForm is the second message of a reception published in two forms
// (forms.go): counted as duplicate_form only. When it is the `/packets`
// one, the row its first form wrote gets its SNR, RSSI, score and
// direction.
func (in *ingester) secondForm(b *batch, p *prepared, e txEntry) error {
	if p.pkt.Form == decoder.FormPacket {
		rowid, ok, err := b.observer(p.observer, sql.NullString{}, sql.NullString{}, p.t, false)
		if err != nil {
			return err
		}
		if ok {
			m := &p.pkt
			if err := b.fillObservation(&Observation{
				TransmissionID: e.id, ObserverIdx: sql.NullInt64{Int64: rowid, Valid: true}, Direction: m.Direction,
				SNR: m.SNR, RSSI: m.RSSI, Score: m.Score, PathJSON: p.path, Timestamp: p.t.Unix(), RawHex: nonEmptyString(m.Raw),
			}); err != nil {
				return err
			}
		}
	}
	return in.drop(b, DropDuplicateForm, p, nil)
}

// decodeNew is the full decode of a new transmission: the one prepare made
// ahead, else a bad-signature verdict remembered (no second Ed25519
// check), else a decode now (prepare had seen the hash in a record that
// did not store it: a dropped message, a rolled-back batch).
func (in *ingester) decodeNew(b *batch, p *prepared) *decodedPacket {
	if p.full != nil {
		return p.full
	}
	if bad, ok := b.s.badAdverts.Get(p.key); ok {
		return &decodedPacket{node: bad, isNode: true, pkt: &decoder.Packet{}}
	}
	return in.decode(&p.frame, true)
}

// storedAdvert is the node a stored advert announces: the fields the
// cache kept, else (known from the table only, after a restart) the fields
// read again from the frame and kept for the next duplicate, since they
// are a property of the bytes. nil when it is no valid advert.
func (in *ingester) storedAdvert(b *batch, p *prepared, cached *NodeAdvert) *NodeAdvert {
	if cached != nil && cached.Role.Valid {
		return cached
	}
	d := in.decode(&p.frame, false)
	if !d.isNode || advertProblem(&d.node) != "" {
		return nil
	}
	advert := in.advertOf(&d.node, d.pkt.Scope)
	b.s.transmissions.Update(p.key, func(e *txEntry) { e.advert = advert })
	return advert
}

// advertOf is the node row a valid advert gives, marked foreign when it is
// outside geo_filter.
func (in *ingester) advertOf(n *decoder.Node, scope sql.NullString) *NodeAdvert {
	a := nodeAdvertFrom(n, scope)
	a.Foreign = !in.cfg.geo.Passes(a.Lat, a.Lon)
	return a
}

// badSignature drops an advert whose signature fails with CoreScope's
// dropped_packets row, and remembers the verdict: it is a property of the
// bytes.
func (in *ingester) badSignature(b *batch, p *prepared, n *decoder.Node) error {
	b.s.badAdverts.Put(p.key, *n)
	b.counts.sigDrops++
	b.counts.drops[DropInvalidSignature]++
	m := &p.pkt
	return b.insertDropped(&DroppedPacket{
		Hash: nonEmptyString(p.hash), RawHex: nonEmptyString(m.Raw), Reason: DropInvalidSignature,
		ObserverID: nonEmptyString(p.observer), ObserverName: nonEmpty(m.Origin),
		NodePubkey: nonEmptyString(n.PublicKey), NodeName: nonEmptyString(n.Name), DroppedAt: p.t,
	})
}

// observe writes a packet's observation of the stored transmission e. The
// observer row exists before its observation, so observer_idx is never
// NULL (CoreScope upserts it afterwards).
func (in *ingester) observe(b *batch, p *prepared, e txEntry, advert *NodeAdvert, newTransmission bool) error {
	t, m, id := p.t, &p.pkt, p.observer
	var observerIdx sql.NullInt64
	name, iata := nonEmpty(m.Origin), nonEmptyString(p.region)
	if id != "" {
		rowid, _, err := b.observer(id, name, iata, t, true)
		if err != nil {
			return err
		}
		observerIdx = sql.NullInt64{Int64: rowid, Valid: true}
		if skew, ok := m.Timestamp.NaiveSkew(t); ok {
			if err := b.observerClockSkew(rowid, int64(skew/time.Second), t); err != nil {
				return err
			}
		}
	}
	obs := Observation{
		TransmissionID: e.id, ObserverIdx: observerIdx, Direction: m.Direction,
		SNR: m.SNR, RSSI: m.RSSI, Score: m.Score,
		PathJSON: p.path, Timestamp: t.Unix(), RawHex: nonEmptyString(m.Raw),
	}
	if in.hook != nil {
		oc := ObservationContext{ReceivedAt: t, ObserverID: id, Frame: &p.frame, NewTransmission: newTransmission}
		if advert != nil {
			oc.FromPubkey = advert.PublicKey
		}
		if err := in.beforeObservation(b, &obs, &oc); err != nil {
			return err
		}
	}
	if err := b.insertObservation(&obs); err != nil {
		return err
	}
	b.seeTransmission(p.key, e, t)
	if advert != nil {
		b.nodeAdvert(advert, t, newTransmission)
	}
	if observerIdx.Valid {
		b.observerLive(observerIdx.Int64, name, iata, t, true, nil)
	}
	return nil
}

func (in *ingester) beforeObservation(b *batch, obs *Observation, oc *ObservationContext) error {
	if err := in.hook.BeforeObservation(b.ctx, b.s.conn, obs, oc); err != nil {
		return fmt.Errorf("observation hook: %w", err)
	}
	return nil
}

// applyCompanion stores a companion-bridge channel or direct message as
// CoreScope does: a transmission with no raw frame and an observation with
// the observer "companion" (normally no such row, so observer_idx NULL).
func (in *ingester) applyCompanion(b *batch, p *prepared) error {
	c, t := p.comp, p.t
	e, found, err := b.transmission(p.key, p.hash)
	if err != nil {
		return err
	}
	if !found {
		e, err = b.insertTransmission(&Transmission{
			Key: p.key, Hash: p.hash, RawHex: "", RouteType: 1, PayloadType: int(c.PayloadType()),
			DecodedJSON: c.DecodedJSON(), ChannelHash: c.ChannelHash(),
		}, t)
		if err != nil {
			return err
		}
	} else {
		b.counts.txDupes++
	}
	var observerIdx sql.NullInt64
	if rowid, ok, err := b.observer("companion", sql.NullString{}, sql.NullString{}, t, false); err != nil {
		return err
	} else if ok {
		observerIdx = sql.NullInt64{Int64: rowid, Valid: true}
	}
	obs := Observation{
		TransmissionID: e.id, ObserverIdx: observerIdx, Direction: c.Direction,
		SNR: c.SNR, RSSI: c.RSSI, Score: c.Score, PathJSON: "[]", Timestamp: t.Unix(),
	}
	if in.hook != nil {
		oc := ObservationContext{ReceivedAt: t, ObserverID: "companion", NewTransmission: !found}
		if err := in.beforeObservation(b, &obs, &oc); err != nil {
			return err
		}
	}
	if err := b.insertObservation(&obs); err != nil {
		return err
	}
	b.seeTransmission(p.key, e, t)
	return nil
}

// drop counts a message that produces no rows (and, for an unreadable
// payload, writes a dropped_packets row). It logs at most once a minute per
// reason.
func (in *ingester) drop(b *batch, reason string, p *prepared, cause error) error {
	rec := &p.rec
	b.counts.drops[reason]++
	// Quiet reasons first: another receiver's copy is dropped for every
	// publication, and the throttle takes the clock and a lock.
	if !quietDrops[reason] {
		if ok, suppressed := in.throttle.Allow(reason, time.Now()); ok {
			ev := in.log.Info().Str("reason", reason).Str("topic", rec.Topic).Str("source", rec.Source).Int("suppressed", suppressed)
			if cause != nil {
				ev = ev.Err(cause)
			}
			ev.Msg("message not stored")
		}
	}
	if reason != DropUnreadable {
		return nil
	}
	return b.insertDropped(&DroppedPacket{
		Reason:     DropUnreadable + ": " + causeText(cause),
		ObserverID: nonEmptyString(p.observer),
		DroppedAt:  rec.ReceivedAt,
	})
}

// quietDrops are the reasons that are normal operation, not worth a log
// line: topics meshingest does not read, the second form of a reception, a
// broker's replay of a retained message, another receiver's copy.
var quietDrops = map[string]bool{DropIgnoredTopic: true, DropDuplicateForm: true, DropRetainedReplay: true, DropOtherReceiver: true}

func causeText(err error) string {
	var me *decoder.MessageError
	if errors.As(err, &me) && me.Err != nil {
		return me.Err.Error()
	}
	if err == nil {
		return "unknown"
	}
	return err.Error()
}

func nonEmpty(s sql.NullString) sql.NullString {
	if !s.Valid || s.String == "" {
		return sql.NullString{}
	}
	return s
}

func nonEmptyString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}
