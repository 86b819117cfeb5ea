package writer

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/meshingest/meshingest/spool"
	"github.com/meshingest/meshingest/writer/copies"
	"github.com/meshingest/meshingest/writer/redelivery"
)

// batch is one SQLite transaction's worth of messages. Statements whose
// effect is a running total or a maximum (observer packet counts and
// last_seen, transmission first/last seen, node upserts and advert counts)
// are aggregated in memory and written once per row at the end of the
// batch; they give the same values as CoreScope's one-statement-per-message
// sequence, whatever the batch boundaries. Rows that are not aggregated
// (transmissions, observations, metrics, drops) are written as the messages
// come.
//
// Nothing the batch learns reaches the store's caches before the commit:
// a rolled-back batch leaves no trace.
type batch struct {
	s   *store
	ctx context.Context

	newTx     map[ContentKey]txEntry // transmissions inserted in this batch
	touchedTx map[int64]*txTouch
	newObs    map[string]int64 // observers inserted in this batch: id → rowid
	observers map[int64]*observerDelta
	obsOrder  []int64 // observers in first-touch order, for a deterministic flush
	nodes     map[string]*nodeDelta
	nodeOrder []string

	// Observations are written in chunks of observationChunk, in order;
	// ids and conflict handling are the same as one at a time.
	pendingObs []Observation
	obsArgs    []any
	// deliveries are the QoS 1 deliveries applied in this batch
	// (store.memory after the commit; redelivery.go).
	deliveries redelivery.Deliveries
	// deliveryRow is the meshingest_deliveries row saveDeliveries wrote,
	// deliveryDrop how many of the oldest stored rows it deleted.
	deliveryRow  redelivery.Row
	deliveryDrop int
	// formsTouched: the batch matched or added unpaired receptions
	// (forms.go); retained holds the digests of the retained messages it
	// applied (retained.go), for the store at commit.
	formsTouched bool
	retained     map[retainedKey]int64

	counts batchCounts
	// copies is the rounds of receivers' copies (copies.go), nil when the
	// writer drains a single spool; otherCopies counts, per spool, the
	// copies it recognised as another spool's.
	copies      *copies.View
	otherCopies map[spool.Identity]int
	// lateCopies counts, per spool, the copies matched to a round outside
	// the window (package copies).
	lateCopies map[spool.Identity]int
}

type batchCounts struct {
	messages        int
	txInserted      int
	txDupes         int
	obsWritten      int
	nodeUpserts     int
	observerUpserts int
	sigDrops        int
	metricsRows     int
	neighborReports int
	drops           map[string]int // reason → messages dropped
}

type txTouch struct {
	key                 ContentKey
	minSeen, maxSeen    int64
	storedFirst, stored int64 // what the database holds now (cache or insert)
}

type observerDelta struct {
	rowid        int64
	name, iata   sql.NullString
	lastSeen     sql.NullString // newest live receive time (packets and live statuses)
	lastPacketAt sql.NullString
	lastSeenUnix int64
	lastPktUnix  int64
	packets      int64 // packet_count increment
	meta         ObserverMeta
	reactivate   bool
}

type nodeDelta struct {
	a          NodeAdvert // merged: last non-NULL value of each field
	firstSeen  int64
	lastSeen   int64
	adverts    int64 // advert_count increment: new advert transmissions
	foreign    bool
	scopeFresh bool // default_scope changed in this batch
}

func newBatch(ctx context.Context, s *store) *batch {
	return &batch{
		s:           s,
		ctx:         ctx,
		newTx:       map[ContentKey]txEntry{},
		touchedTx:   map[int64]*txTouch{},
		newObs:      map[string]int64{},
		observers:   map[int64]*observerDelta{},
		nodes:       map[string]*nodeDelta{},
		deliveries:  redelivery.Deliveries{},
		retained:    map[retainedKey]int64{},
		counts:      batchCounts{drops: map[string]int{}},
		otherCopies: map[spool.Identity]int{},
		lateCopies:  map[spool.Identity]int{},
	}
}

// transmission returns the stored transmission with this content hash, if
// any: one inserted earlier in this batch, a cached one, or one found with
// a SELECT.
func (b *batch) transmission(key ContentKey, hash string) (txEntry, bool, error) {
	if e, ok := b.newTx[key]; ok {
		return e, true, nil
	}
	return b.s.lookupTransmission(b.ctx, key, hash)
}

// insertTransmission writes a new transmissions row first seen at t.
func (b *batch) insertTransmission(tx *Transmission, t time.Time) (txEntry, error) {
	sec := t.Unix()
	res, err := b.s.stmt.insertTx.ExecContext(b.ctx,
		tx.RawHex, tx.Hash, FormatSeconds(sec), sec, tx.RouteType, tx.PayloadType, tx.PayloadVersion,
		nullBytes(tx.DecodedJSON), tx.ChannelHash, tx.ScopeName, tx.FromPubkey)
	if err != nil {
		return txEntry{}, fmt.Errorf("insert transmission %s: %w", tx.Hash, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return txEntry{}, fmt.Errorf("insert transmission %s: %w", tx.Hash, err)
	}
	e := txEntry{id: id, firstSeen: sec, lastSeen: sec}
	b.newTx[tx.Key] = e
	b.counts.txInserted++
	return e, nil
}

// seeTransmission records that the transmission was observed at t: its
// first_seen may go down and its last_seen up, once per batch.
func (b *batch) seeTransmission(key ContentKey, e txEntry, t time.Time) {
	sec := t.Unix()
	tt := b.touchedTx[e.id]
	if tt == nil {
		tt = &txTouch{key: key, minSeen: sec, maxSeen: sec, storedFirst: e.firstSeen, stored: e.lastSeen}
		b.touchedTx[e.id] = tt
		return
	}
	tt.minSeen = min(tt.minSeen, sec)
	tt.maxSeen = max(tt.maxSeen, sec)
}

// rememberAdvert attaches an advert's node fields to a transmission
// inserted in this batch, for its duplicates.
func (b *batch) rememberAdvert(key ContentKey, a *NodeAdvert) {
	if e, ok := b.newTx[key]; ok {
		e.advert = a
		b.newTx[key] = e
	}
}

// observer returns the rowid of the observer with this id, creating the
// row if create is set and there is none, so that an observation is never
// stored with a NULL observer_idx. ok is false if the row does not exist
// and was not created.
func (b *batch) observer(id string, name, iata sql.NullString, t time.Time, create bool) (rowid int64, ok bool, err error) {
	if rowid, ok := b.newObs[id]; ok {
		return rowid, true, nil
	}
	rowid, ok, err = b.s.lookupObserver(b.ctx, id)
	if err != nil || ok || !create {
		return rowid, ok, err
	}
	ts := FormatSeconds(t.Unix())
	res, err := b.s.stmt.insertObserver.ExecContext(b.ctx, id, name, iata, ts, ts)
	if err != nil {
		return 0, false, fmt.Errorf("insert observer %q: %w", id, err)
	}
	if rowid, err = res.LastInsertId(); err != nil {
		return 0, false, fmt.Errorf("insert observer %q: %w", id, err)
	}
	b.newObs[id] = rowid
	return rowid, true, nil
}

func (b *batch) observerDelta(rowid int64) *observerDelta {
	d := b.observers[rowid]
	if d == nil {
		d = &observerDelta{rowid: rowid}
		b.observers[rowid] = d
		b.obsOrder = append(b.obsOrder, rowid)
	}
	return d
}

// observerLive counts one live message (a packet, or a status that is not
// a broker's retained replay) from the observer: CoreScope's UpsertObserver.
func (b *batch) observerLive(rowid int64, name, iata sql.NullString, t time.Time, packet bool, meta *ObserverMeta) {
	d := b.observerDelta(rowid)
	mergeString(&d.name, name)
	mergeString(&d.iata, iata)
	sec := t.Unix()
	if !d.lastSeen.Valid || sec > d.lastSeenUnix {
		d.lastSeenUnix = sec
		d.lastSeen = sql.NullString{String: FormatSeconds(sec), Valid: true}
	}
	if packet && (!d.lastPacketAt.Valid || sec > d.lastPktUnix) {
		d.lastPktUnix = sec
		d.lastPacketAt = sql.NullString{String: FormatSeconds(sec), Valid: true}
	}
	d.packets++
	d.reactivate = true
	if meta != nil {
		d.meta.merge(meta)
	}
	b.counts.observerUpserts++
}

// observerRetained applies a retained status: metadata only. A broker
// replays retained messages at every subscribe, so they say nothing about
// whether the observer is alive now.
func (b *batch) observerRetained(rowid int64, name, iata sql.NullString, meta *ObserverMeta) {
	d := b.observerDelta(rowid)
	mergeString(&d.name, name)
	mergeString(&d.iata, iata)
	if meta != nil {
		d.meta.merge(meta)
	}
}

// observerClockSkew records a naive envelope timestamp far from the receive
// time. It is rare and order-dependent, so it is written at once.
func (b *batch) observerClockSkew(rowid int64, skewSeconds int64, t time.Time) error {
	now := FormatSeconds(t.Unix())
	cutoff := FormatSeconds(t.Add(-24 * time.Hour).Unix())
	if _, err := b.s.stmt.observerClock.ExecContext(b.ctx, skewSeconds, now, cutoff, rowid); err != nil {
		return fmt.Errorf("record observer clock skew: %w", err)
	}
	return nil
}

// insertObservation writes one observation (or fills a repeated one); it
// is queued and written with the next chunk, before the batch commits.
func (b *batch) insertObservation(o *Observation) error {
	b.pendingObs = append(b.pendingObs, *o)
	b.counts.obsWritten++
	if len(b.pendingObs) == observationChunk {
		return b.writeObservations()
	}
	return nil
}

// fillObservation queues the reception fields of a second form for the
// row its first form wrote (the upsert fills what the row lacks); it counts
// nothing.
func (b *batch) fillObservation(o *Observation) error {
	b.pendingObs = append(b.pendingObs, *o)
	if len(b.pendingObs) == observationChunk {
		return b.writeObservations()
	}
	return nil
}

// writeObservations writes the queued observations: a full chunk with one
// statement, a partial one row by row.
func (b *batch) writeObservations() error {
	if len(b.pendingObs) == observationChunk {
		if b.obsArgs == nil {
			b.obsArgs = make([]any, 0, 10*observationChunk)
		}
		args := b.obsArgs[:0]
		// Plain values, not sql.Null*: database/sql converts them
		// without a Valuer call and an allocation each.
		for i := range b.pendingObs {
			o := &b.pendingObs[i]
			args = append(args, o.TransmissionID, nullInt(o.ObserverIdx), nullString(o.Direction), nullFloat(o.SNR),
				nullFloat(o.RSSI), nullFloat(o.Score), o.PathJSON, o.Timestamp, nullString(o.RawHex), nullString(o.ResolvedPath))
		}
		if _, err := b.s.stmt.insertObservations.ExecContext(b.ctx, args...); err != nil {
			return fmt.Errorf("insert %d observations: %w", len(b.pendingObs), err)
		}
		b.pendingObs = b.pendingObs[:0]
		return nil
	}
	for i := range b.pendingObs {
		o := &b.pendingObs[i]
		if _, err := b.s.stmt.insertObservation.ExecContext(b.ctx,
			o.TransmissionID, o.ObserverIdx, o.Direction, o.SNR, o.RSSI, o.Score,
			o.PathJSON, o.Timestamp, o.RawHex, o.ResolvedPath); err != nil {
			return fmt.Errorf("insert observation of transmission %d: %w", o.TransmissionID, err)
		}
	}
	b.pendingObs = b.pendingObs[:0]
	return nil
}

// nodeAdvert records a valid advert heard at t; newTransmission says
// whether it is a new advert (which counts in advert_count) or another
// observation of one already stored.
func (b *batch) nodeAdvert(a *NodeAdvert, t time.Time, newTransmission bool) {
	sec := t.Unix()
	d := b.nodes[a.PublicKey]
	if d == nil {
		d = &nodeDelta{a: NodeAdvert{PublicKey: a.PublicKey}, firstSeen: sec, lastSeen: sec}
		b.nodes[a.PublicKey] = d
		b.nodeOrder = append(b.nodeOrder, a.PublicKey)
	}
	mergeString(&d.a.Name, a.Name)
	mergeString(&d.a.Role, a.Role)
	mergeFloat(&d.a.Lat, a.Lat)
	mergeFloat(&d.a.Lon, a.Lon)
	mergeInt(&d.a.BatteryMv, a.BatteryMv)
	mergeFloat(&d.a.TemperatureC, a.TemperatureC)
	if a.DefaultScope.Valid && a.DefaultScope.String != "" {
		d.a.DefaultScope = a.DefaultScope
		d.scopeFresh = true
	}
	d.foreign = d.foreign || a.Foreign
	d.firstSeen = min(d.firstSeen, sec)
	d.lastSeen = max(d.lastSeen, sec)
	if newTransmission {
		d.adverts++
	}
	b.counts.nodeUpserts++
}

// insertMetrics writes an observer_metrics sample (INSERT OR REPLACE on
// observer and rounded time, as CoreScope).
func (b *batch) insertMetrics(observerID string, m *ObserverMeta, t time.Time, interval time.Duration) error {
	ts := FormatSeconds(roundToInterval(t.Unix(), interval))
	_, err := b.s.stmt.insertMetrics.ExecContext(b.ctx, observerID, ts,
		m.NoiseFloor, m.TxAirSecs, m.RxAirSecs, m.RecvErrors, m.BatteryMv, m.PacketsSent, m.PacketsRecv)
	if err != nil {
		return fmt.Errorf("insert observer_metrics for %q: %w", observerID, err)
	}
	b.counts.metricsRows++
	return nil
}

// insertDropped writes a dropped_packets row.
func (b *batch) insertDropped(d *DroppedPacket) error {
	_, err := b.s.stmt.insertDropped.ExecContext(b.ctx, d.Hash, d.RawHex, d.Reason,
		d.ObserverID, d.ObserverName, d.NodePubkey, d.NodeName, d.DroppedAt.UTC().Format(sqliteDateTime))
	if err != nil {
		return fmt.Errorf("insert dropped_packets row: %w", err)
	}
	return nil
}

// flush writes the queued and aggregated rows. It runs once, at the end of
// the batch (drain.go).
func (b *batch) flush() error {
	if err := b.writeObservations(); err != nil {
		return err
	}
	wall := FormatSeconds(wallClock().Unix())
	for id, tt := range b.touchedTx {
		if tt.minSeen < tt.storedFirst {
			if _, err := b.s.stmt.txFirstSeen.ExecContext(b.ctx, FormatSeconds(tt.minSeen), id); err != nil {
				return fmt.Errorf("lower first_seen of transmission %d: %w", id, err)
			}
		}
		if tt.maxSeen > tt.stored {
			if _, err := b.s.stmt.txLastSeen.ExecContext(b.ctx, tt.maxSeen, id); err != nil {
				return fmt.Errorf("raise last_seen of transmission %d: %w", id, err)
			}
		}
	}
	for _, rowid := range b.obsOrder {
		d := b.observers[rowid]
		m := &d.meta
		if _, err := b.s.stmt.updateObserver.ExecContext(b.ctx,
			d.name, d.iata, d.lastSeen, wall, d.lastPacketAt, d.packets,
			m.Model, m.Firmware, m.ClientVersion, m.Radio, m.BatteryMv, m.UptimeSecs, m.NoiseFloor,
			m.CanRelay, d.reactivate, rowid); err != nil {
			return fmt.Errorf("update observer %d: %w", rowid, err)
		}
	}
	for _, key := range b.nodeOrder {
		d := b.nodes[key]
		a := &d.a
		foreign := 0
		if d.foreign {
			foreign = 1
		}
		scope := sql.NullString{}
		if d.scopeFresh {
			scope = a.DefaultScope
		}
		if _, err := b.s.stmt.upsertNode.ExecContext(b.ctx,
			a.PublicKey, a.Name, a.Role, a.Lat, a.Lon, FormatSeconds(d.lastSeen), FormatSeconds(d.firstSeen),
			d.adverts, a.BatteryMv, a.TemperatureC, foreign, scope, wall); err != nil {
			return fmt.Errorf("upsert node %s: %w", a.PublicKey, err)
		}
		if d.scopeFresh {
			if _, err := b.s.stmt.inactiveNodeScope.ExecContext(b.ctx, scope, a.PublicKey); err != nil {
				return fmt.Errorf("mirror default_scope of node %s: %w", a.PublicKey, err)
			}
		}
	}
	return nil
}

// committed moves what the batch learned into the store's caches. Call it
// only after COMMIT succeeded.
func (b *batch) committed() {
	for key, e := range b.newTx {
		b.s.transmissions.Put(key, e)
	}
	for _, tt := range b.touchedTx {
		b.s.transmissions.Update(tt.key, func(e *txEntry) {
			e.firstSeen = min(e.firstSeen, tt.minSeen)
			e.lastSeen = max(e.lastSeen, tt.maxSeen)
		})
	}
	for id, rowid := range b.newObs {
		b.s.observers.Put(id, rowid)
	}
	b.commitDeliveries()
	for k, d := range b.retained {
		b.s.retained[k] = d
	}
}

func (m *ObserverMeta) merge(o *ObserverMeta) {
	mergeString(&m.Model, o.Model)
	mergeString(&m.Firmware, o.Firmware)
	mergeString(&m.ClientVersion, o.ClientVersion)
	mergeString(&m.Radio, o.Radio)
	mergeInt(&m.BatteryMv, o.BatteryMv)
	mergeInt(&m.UptimeSecs, o.UptimeSecs)
	mergeFloat(&m.NoiseFloor, o.NoiseFloor)
	mergeInt(&m.CanRelay, o.CanRelay)
	mergeInt(&m.TxAirSecs, o.TxAirSecs)
	mergeInt(&m.RxAirSecs, o.RxAirSecs)
	mergeInt(&m.RecvErrors, o.RecvErrors)
	mergeInt(&m.PacketsSent, o.PacketsSent)
	mergeInt(&m.PacketsRecv, o.PacketsRecv)
}

// The merge helpers keep the last non-NULL value, which is what a sequence
// of `col = COALESCE(?, col)` statements leaves.
func mergeString(dst *sql.NullString, v sql.NullString) {
	if v.Valid {
		*dst = v
	}
}

func mergeInt(dst *sql.NullInt64, v sql.NullInt64) {
	if v.Valid {
		*dst = v
	}
}

func mergeFloat(dst *sql.NullFloat64, v sql.NullFloat64) {
	if v.Valid {
		*dst = v
	}
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

func nullString(v sql.NullString) any {
	if !v.Valid {
		return nil
	}
	return v.String
}

func nullInt(v sql.NullInt64) any {
	if !v.Valid {
		return nil
	}
	return v.Int64
}

func nullFloat(v sql.NullFloat64) any {
	if !v.Valid {
		return nil
	}
	return v.Float64
}
