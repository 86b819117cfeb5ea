package writer

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
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
	// invalid_advert_* (advertProblem) are CoreScope's ValidateAdvert.
)

// ingestConfig is what the configuration says about turning messages into
// rows, prepared once.
type ingestConfig struct {
	decode          decoder.Options // full decode of a new transmission
	reread          decoder.Options // a stored advert's fields again: no signature check
	blacklist       map[string]bool // lower-cased observer ids
	whitelist       map[string]bool // upper-cased IATA codes; nil admits all
	sources         map[string]sourceRules
	geo             *geoFilter
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
		geo:             newGeoFilter(cfg.GeoFilter),
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
	rec    Record
	pos    Position
	t      time.Time // receive time, UTC
	topic  decoder.Topic
	drop   string // the message produces no rows: why
	cause  error
	region string // IATA for the observer row

	pkt   decoder.PacketMessage
	frame decoder.Frame
	key   ContentKey
	hash  string
	path  string
	// full is the payload decoded with keys and signature check, done
	// ahead for a hash not seen recently (nil otherwise: apply decodes
	// if the hash turns out to be new after all), with its stored forms.
	full *decodedPacket

	status *decoder.StatusMessage
	comp   *decoder.CompanionMessage
}

// prepare does the per-message work that needs no database.
func (in *ingester) prepare(rec Record, pos Position) *prepared {
	p := &prepared{rec: rec, pos: pos, t: rec.ReceivedAt.UTC()}
	p.topic = decoder.ParseTopic(rec.Topic)
	topic := &p.topic
	if topic.Kind == decoder.KindIgnored {
		p.drop = DropIgnoredTopic
		return p
	}
	if topic.ObserverID != "" && in.cfg.blacklist[strings.ToLower(topic.ObserverID)] {
		p.drop = DropBlacklisted
		return p
	}
	region := strings.ToUpper(strings.TrimSpace(topic.Region))
	if in.cfg.whitelist != nil && (topic.Kind == decoder.KindPacket || topic.Kind == decoder.KindStatus) && !in.cfg.whitelist[region] {
		p.drop = DropNotWhitelisted
		return p
	}
	switch topic.Kind {
	case decoder.KindStatus:
		if topic.ObserverID == "" {
			p.drop = DropNoObserver
			return p
		}
		p.region = region
		s, err := decoder.ParseStatusMessage(rec.Payload)
		if err != nil {
			p.drop, p.cause = DropUnreadable, err
			return p
		}
		p.status = &s
	case decoder.KindPacket, decoder.KindClientPacket:
		if topic.Kind == decoder.KindClientPacket {
			if in.cfg.clientCoverage {
				// CoreScope's opt-in mobile coverage rows are not
				// written by meshingest yet.
				p.drop = DropClientCoverage
				return p
			}
			// With coverage off CoreScope ingests these as ordinary
			// packets from region "client".
			topic.Kind, topic.Region, region = decoder.KindPacket, "client", "CLIENT"
		} else if rules, ok := in.cfg.sources[rec.Source]; ok && rules.iataFilter != nil && !rules.iataFilter[region] {
			p.drop = DropIATAFiltered
			return p
		}
		in.preparePacket(p)
	case decoder.KindChannelMessage, decoder.KindDirectMessage:
		c, err := decoder.ParseCompanionMessage(*topic, rec.Payload)
		switch {
		case errors.Is(err, decoder.ErrNoText):
			p.drop = DropNoText
		case err != nil:
			p.drop, p.cause = DropUnreadable, err
		default:
			p.comp = &c
			p.hash = c.ContentHash(p.t)
			hex.Decode(p.key[:], []byte(p.hash))
		}
	default:
		p.drop = DropIgnoredTopic
	}
	return p
}

func (in *ingester) preparePacket(p *prepared) {
	var err error
	p.pkt, err = decoder.ParsePacketMessage(p.rec.Payload)
	switch {
	case errors.Is(err, decoder.ErrNoRaw):
		p.drop = DropNoRaw
		return
	case err != nil:
		p.drop, p.cause = DropUnreadable, err
		return
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
		var fe *decoder.FrameError
		p.drop, p.cause = DropInvalidFrame, err
		if errors.As(err, &fe) {
			p.drop += ":" + string(fe.Code)
		}
		return
	}
	p.key = ContentKey(p.frame.Hash)
	p.hash = p.frame.Hash.String()
	p.path = p.frame.PathJSON()
	p.region = strings.ToUpper(strings.TrimSpace(firstNonEmpty(p.pkt.Region.String, p.topic.Region, in.cfg.sources[p.rec.Source].region)))
	// The first observation of a transmission is decoded in full here, on
	// the reader's core; its duplicates (27 on average) are not.
	if _, seen := in.decoded.Get(p.key); !seen {
		in.decoded.Put(p.key, struct{}{})
		p.full = in.decodeFull(&p.frame)
	}
}

// decodedPacket is a full decode and the stored forms a new transmission
// needs.
type decodedPacket struct {
	pkt     *decoder.Packet
	node    decoder.Node
	isNode  bool
	decoded []byte
	channel sql.NullString
	from    sql.NullString
}

func (in *ingester) decodeFull(f *decoder.Frame) *decodedPacket {
	pkt := decoder.DecodePacket(*f, in.cfg.decode)
	d := &decodedPacket{pkt: pkt, decoded: pkt.DecodedJSON(), channel: pkt.ChannelHash(), from: pkt.FromPubkey()}
	d.node, d.isNode = pkt.Node()
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
	b.delivered(&p.rec)
	return nil
}

func (in *ingester) applyRecord(b *batch, p *prepared) error {
	if p.rec.Duplicate && b.isRedelivery(&p.rec) {
		return in.drop(b, DropRedelivered, &p.rec, nil)
	}
	if p.drop != "" {
		return in.drop(b, p.drop, &p.rec, p.cause)
	}
	switch p.topic.Kind {
	case decoder.KindStatus:
		return in.applyStatus(b, p)
	case decoder.KindPacket:
		return in.applyPacket(b, p)
	case decoder.KindChannelMessage, decoder.KindDirectMessage:
		return in.applyCompanion(b, p)
	}
	return in.drop(b, DropIgnoredTopic, &p.rec, nil)
}

func (in *ingester) applyStatus(b *batch, p *prepared) error {
	s, t, id := p.status, p.t, p.topic.ObserverID
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
	t, f, m, topic := p.t, &p.frame, &p.pkt, &p.topic
	e, found, err := b.transmission(p.key, p.hash)
	if err != nil {
		return err
	}
	var advert *NodeAdvert
	if !found {
		full := p.full
		if full == nil {
			if bad, ok := b.s.badAdverts.Get(p.key); ok {
				// Known to fail its signature: no second Ed25519 check.
				full = &decodedPacket{node: bad, isNode: true, pkt: &decoder.Packet{}}
			} else {
				full = in.decodeFull(f)
			}
		}
		if full.isNode {
			n := &full.node
			if !n.SignatureValid {
				// The verdict is a property of the bytes: remember it.
				b.s.badAdverts.Put(p.key, *n)
				b.counts.sigDrops++
				b.counts.drops[DropInvalidSignature]++
				return b.insertDropped(&DroppedPacket{
					Hash: nonEmptyString(p.hash), RawHex: nonEmptyString(m.Raw), Reason: DropInvalidSignature,
					ObserverID: nonEmptyString(topic.ObserverID), ObserverName: nonEmpty(m.Origin),
					NodePubkey: nonEmptyString(n.PublicKey), NodeName: nonEmptyString(n.Name), DroppedAt: t,
				})
			}
			if reason := advertProblem(n); reason != "" {
				return in.drop(b, reason, &p.rec, nil)
			}
			advert = nodeAdvertFrom(n, full.pkt.Scope)
			advert.Foreign = !in.cfg.geo.passes(advert.Lat, advert.Lon)
			if advert.Foreign && in.cfg.dropForeign {
				return in.drop(b, DropForeignAdvert, &p.rec, nil)
			}
		}
		e, err = b.insertTransmission(&Transmission{
			Key: p.key, Hash: p.hash, RawHex: m.Raw,
			RouteType: int(f.Route), PayloadType: int(f.Type), PayloadVersion: int(f.Version),
			DecodedJSON: full.decoded, ChannelHash: full.channel, FromPubkey: full.from, ScopeName: full.pkt.Scope,
		}, t)
		if err != nil {
			return err
		}
		if advert != nil {
			b.rememberAdvert(p.key, advert)
		}
	} else {
		b.counts.txDupes++
		if f.Type == decoder.TypeAdvert {
			advert = e.advert
			if advert == nil || !advert.Role.Valid {
				// Known from the table only (after a restart): read the
				// node fields again, without the signature check the
				// stored transmission already passed.
				full := decoder.DecodePacket(*f, in.cfg.reread)
				if n, ok := full.Node(); ok && advertProblem(&n) == "" {
					advert = nodeAdvertFrom(&n, full.Scope)
					advert.Foreign = !in.cfg.geo.passes(advert.Lat, advert.Lon)
					// Node fields are a property of the bytes: keep them
					// for the next duplicate.
					b.s.transmissions.Update(p.key, func(e *txEntry) { e.advert = advert })
				} else {
					advert = nil
				}
			}
			if advert != nil && advert.Foreign && in.cfg.dropForeign {
				return in.drop(b, DropForeignAdvert, &p.rec, nil)
			}
		}
	}

	// The observer row exists before its observation, so observer_idx is
	// never NULL (CoreScope upserts it afterwards).
	var observerIdx sql.NullInt64
	name := nonEmpty(m.Origin)
	iata := nonEmptyString(p.region)
	if topic.ObserverID != "" {
		rowid, _, err := b.observer(topic.ObserverID, name, iata, t, true)
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
		oc := ObservationContext{ReceivedAt: t, ObserverID: topic.ObserverID, Frame: f, NewTransmission: !found}
		if advert != nil {
			oc.FromPubkey = advert.PublicKey
		}
		if err := in.hook.BeforeObservation(b.ctx, b.s.conn, &obs, &oc); err != nil {
			return fmt.Errorf("observation hook: %w", err)
		}
	}
	if err := b.insertObservation(&obs); err != nil {
		return err
	}
	b.seeTransmission(p.key, e, t)
	if advert != nil {
		b.nodeAdvert(advert, t, !found)
	}
	if observerIdx.Valid {
		b.observerLive(observerIdx.Int64, name, iata, t, true, nil)
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
		if err := in.hook.BeforeObservation(b.ctx, b.s.conn, &obs, &oc); err != nil {
			return fmt.Errorf("observation hook: %w", err)
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
func (in *ingester) drop(b *batch, reason string, rec *Record, cause error) error {
	b.counts.drops[reason]++
	if ok, suppressed := in.throttle.Allow(reason, time.Now()); ok && reason != DropIgnoredTopic {
		ev := in.log.Info().Str("reason", reason).Str("topic", rec.Topic).Str("source", rec.Source).Int("suppressed", suppressed)
		if cause != nil {
			ev = ev.Err(cause)
		}
		ev.Msg("message not stored")
	}
	if reason != DropUnreadable {
		return nil
	}
	topic := decoder.ParseTopic(rec.Topic)
	return b.insertDropped(&DroppedPacket{
		Reason:     DropUnreadable + ": " + causeText(cause),
		ObserverID: nonEmptyString(topic.ObserverID),
		DroppedAt:  rec.ReceivedAt,
	})
}

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
