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

// newIngestConfig builds the decoding options and filters from CoreScope's
// configuration. It reads the channelKeysPath file, the one file the
// decoder needs.
func newIngestConfig(cfg *shared.Config) (ingestConfig, error) {
	var rainbow []byte
	if cfg.ChannelKeysPath != "" {
		b, err := os.ReadFile(cfg.ChannelKeysPath)
		if err != nil {
			return ingestConfig{}, fmt.Errorf("read channelKeysPath %s: %w; fix the path or remove the key", cfg.ChannelKeysPath, err)
		}
		rainbow = b
	}
	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{ChannelKeys: cfg.ChannelKeys, HashChannels: cfg.HashChannels, Rainbow: rainbow})
	if err != nil {
		return ingestConfig{}, fmt.Errorf("channel keys: %w", err)
	}
	regions := decoder.NewRegionSet(cfg.HashRegions)
	ic := ingestConfig{
		decode:          decoder.Options{Keys: ring, Regions: regions, VerifySignatures: cfg.ShouldValidateSignatures()},
		reread:          decoder.Options{Regions: regions},
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

// ingester maps one spool record to the rows of a batch.
type ingester struct {
	cfg      ingestConfig
	hook     BatchHook
	log      zerolog.Logger
	throttle *shared.Throttle
}

// apply writes the rows one record produces into the batch. Its error is
// always the database's: a message that cannot be stored is counted as a
// drop, never returned, so one bad message can never block the spool.
func (in *ingester) apply(b *batch, rec *Record) error {
	b.counts.messages++
	t := rec.ReceivedAt.UTC()
	topic := decoder.ParseTopic(rec.Topic)
	if topic.Kind == decoder.KindIgnored {
		return in.drop(b, DropIgnoredTopic, rec, nil)
	}
	if topic.ObserverID != "" && in.cfg.blacklist[strings.ToLower(topic.ObserverID)] {
		return in.drop(b, DropBlacklisted, rec, nil)
	}
	region := strings.ToUpper(strings.TrimSpace(topic.Region))
	if in.cfg.whitelist != nil && (topic.Kind == decoder.KindPacket || topic.Kind == decoder.KindStatus) && !in.cfg.whitelist[region] {
		return in.drop(b, DropNotWhitelisted, rec, nil)
	}
	switch topic.Kind {
	case decoder.KindStatus:
		return in.applyStatus(b, rec, topic, t)
	case decoder.KindPacket:
		if rules, ok := in.cfg.sources[rec.Source]; ok && rules.iataFilter != nil && !rules.iataFilter[region] {
			return in.drop(b, DropIATAFiltered, rec, nil)
		}
		return in.applyPacket(b, rec, topic, t)
	case decoder.KindClientPacket:
		if in.cfg.clientCoverage {
			// CoreScope's opt-in mobile coverage rows are not written
			// by meshingest yet.
			return in.drop(b, DropClientCoverage, rec, nil)
		}
		// With coverage off CoreScope ingests these as ordinary
		// packets from region "client".
		topic.Region = "client"
		return in.applyPacket(b, rec, topic, t)
	case decoder.KindChannelMessage, decoder.KindDirectMessage:
		return in.applyCompanion(b, rec, topic, t)
	}
	return in.drop(b, DropIgnoredTopic, rec, nil)
}

func (in *ingester) applyStatus(b *batch, rec *Record, topic decoder.Topic, t time.Time) error {
	if topic.ObserverID == "" {
		return in.drop(b, DropNoObserver, rec, nil)
	}
	s, err := decoder.ParseStatusMessage(rec.Payload)
	if err != nil {
		return in.drop(b, DropUnreadable, rec, err)
	}
	name := nonEmpty(s.Origin)
	iata := nonEmptyString(strings.ToUpper(strings.TrimSpace(topic.Region)))
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
	if rec.Retained {
		// A broker replays the last retained status at every subscribe,
		// possibly months old: it updates what the observer is, not
		// when it was last heard, and creates no row.
		rowid, ok, err := b.observer(topic.ObserverID, name, iata, t, false)
		if err != nil || !ok {
			return err
		}
		b.observerRetained(rowid, name, iata, &meta)
		return nil
	}
	rowid, _, err := b.observer(topic.ObserverID, name, iata, t, true)
	if err != nil {
		return err
	}
	b.observerLive(rowid, name, iata, t, false, &meta)
	if s.HasMetadata {
		return b.insertMetrics(topic.ObserverID, &meta, t, in.cfg.metricsInterval)
	}
	return nil
}

func (in *ingester) applyPacket(b *batch, rec *Record, topic decoder.Topic, t time.Time) error {
	m, err := decoder.ParsePacketMessage(rec.Payload)
	if errors.Is(err, decoder.ErrNoRaw) {
		return in.drop(b, DropNoRaw, rec, nil)
	}
	if err != nil {
		return in.drop(b, DropUnreadable, rec, err)
	}
	if m.Direction.Valid && strings.EqualFold(m.Direction.String, "tx") {
		// meshcoretomqtt attaches the last *received* raw to a tx line
		// (the firmware logs no raw for transmissions): storing it would
		// invent an observation.
		return in.drop(b, DropDirectionTx, rec, nil)
	}
	f, err := decoder.DecodeFrame(m.Raw)
	if err != nil {
		var fe *decoder.FrameError
		reason := DropInvalidFrame
		if errors.As(err, &fe) {
			reason += ":" + string(fe.Code)
		}
		return in.drop(b, reason, rec, err)
	}
	key := ContentKey(f.Hash)
	hash := f.Hash.String()
	e, found, err := b.transmission(key, hash)
	if err != nil {
		return err
	}
	var advert *NodeAdvert
	if !found {
		p := decoder.DecodePacket(f, in.cfg.decode)
		if n, ok := p.Node(); ok {
			if !n.SignatureValid {
				b.counts.sigDrops++
				b.counts.drops[DropInvalidSignature]++
				return b.insertDropped(&DroppedPacket{
					Hash: nonEmptyString(hash), RawHex: nonEmptyString(m.Raw), Reason: DropInvalidSignature,
					ObserverID: nonEmptyString(topic.ObserverID), ObserverName: nonEmpty(m.Origin),
					NodePubkey: nonEmptyString(n.PublicKey), NodeName: nonEmptyString(n.Name), DroppedAt: t,
				})
			}
			if reason := advertProblem(&n); reason != "" {
				return in.drop(b, reason, rec, nil)
			}
			advert = nodeAdvertFrom(&n, p.Scope)
			advert.Foreign = !in.cfg.geo.passes(advert.Lat, advert.Lon)
			if advert.Foreign && in.cfg.dropForeign {
				return in.drop(b, DropForeignAdvert, rec, nil)
			}
		}
		e, err = b.insertTransmission(&Transmission{
			Key: key, Hash: hash, RawHex: m.Raw,
			RouteType: int(f.Route), PayloadType: int(f.Type), PayloadVersion: int(f.Version),
			DecodedJSON: p.DecodedJSON(), ChannelHash: p.ChannelHash(), FromPubkey: p.FromPubkey(), ScopeName: p.Scope,
		}, t)
		if err != nil {
			return err
		}
		if advert != nil {
			b.rememberAdvert(key, advert)
		}
	} else {
		b.counts.txDupes++
		if f.Type == decoder.TypeAdvert {
			advert = e.advert
			if advert == nil || !advert.Role.Valid {
				// Known from the table only (after a restart): read the
				// node fields again, without the signature check the
				// stored transmission already passed.
				p := decoder.DecodePacket(f, in.cfg.reread)
				if n, ok := p.Node(); ok && advertProblem(&n) == "" {
					advert = nodeAdvertFrom(&n, p.Scope)
					advert.Foreign = !in.cfg.geo.passes(advert.Lat, advert.Lon)
				} else {
					advert = nil
				}
			}
			if advert != nil && advert.Foreign && in.cfg.dropForeign {
				return in.drop(b, DropForeignAdvert, rec, nil)
			}
		}
	}

	// The observer row exists before its observation, so observer_idx is
	// never NULL (CoreScope upserts it afterwards).
	var observerIdx sql.NullInt64
	name := nonEmpty(m.Origin)
	iata := nonEmptyString(strings.ToUpper(strings.TrimSpace(firstNonEmpty(m.Region.String, topic.Region, in.cfg.sources[rec.Source].region))))
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
		PathJSON: f.PathJSON(), Timestamp: t.Unix(), RawHex: nonEmptyString(m.Raw),
	}
	if in.hook != nil {
		oc := ObservationContext{ReceivedAt: t, ObserverID: topic.ObserverID, Frame: &f, NewTransmission: !found}
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
	b.seeTransmission(key, e, t)
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
func (in *ingester) applyCompanion(b *batch, rec *Record, topic decoder.Topic, t time.Time) error {
	c, err := decoder.ParseCompanionMessage(topic, rec.Payload)
	if errors.Is(err, decoder.ErrNoText) {
		return in.drop(b, DropNoText, rec, nil)
	}
	if err != nil {
		return in.drop(b, DropUnreadable, rec, err)
	}
	hash := c.ContentHash(t)
	var key ContentKey
	hex.Decode(key[:], []byte(hash))
	e, found, err := b.transmission(key, hash)
	if err != nil {
		return err
	}
	if !found {
		e, err = b.insertTransmission(&Transmission{
			Key: key, Hash: hash, RawHex: "", RouteType: 1, PayloadType: int(c.PayloadType()),
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
	b.seeTransmission(key, e, t)
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
