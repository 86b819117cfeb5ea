package writer

import (
	"database/sql"
	"time"

	"github.com/meshingest/meshingest/writer/schema"
)

// The rows one MQTT message becomes (docs/reference/mqtt-formats.md §7).
// The mapping from a decoded message to these types is in ingest.go; the
// SQL that writes them is in store.go and batch.go.

// ContentKey is a transmission's content hash as bytes, the cache key.
type ContentKey [8]byte

// Transmission is a new transmissions row: the first time a content hash
// is seen.
type Transmission struct {
	Key            ContentKey
	Hash           string // 16 lower-case hex digits, what the hash column holds
	RawHex         string // the first observation's raw, exactly as received
	RouteType      int
	PayloadType    int
	PayloadVersion int
	DecodedJSON    []byte
	ChannelHash    sql.NullString // channel name, enc_XX, chN, or NULL
	FromPubkey     sql.NullString // ADVERT public key
	ScopeName      sql.NullString // NULL, '' or the matched region
}

// Observation is one observations row. ResolvedPath is left NULL by the
// writer itself; a BatchHook may fill it.
type Observation struct {
	TransmissionID int64
	ObserverIdx    sql.NullInt64 // observers.rowid
	Direction      sql.NullString
	SNR, RSSI      sql.NullFloat64
	// Score is bound as a number as CoreScope binds it: the INTEGER
	// column's affinity stores a whole value as an integer.
	Score        sql.NullFloat64
	PathJSON     string // compact JSON of upper-case hop hex, "[]" without hops
	Timestamp    int64  // unix seconds of the receive time
	RawHex       sql.NullString
	ResolvedPath sql.NullString
}

// ObserverMeta is the hardware metadata of a status message. A NULL field
// leaves the stored value as it is (CoreScope's COALESCE semantics).
type ObserverMeta struct {
	Model, Firmware, ClientVersion, Radio sql.NullString
	BatteryMv, UptimeSecs                 sql.NullInt64
	NoiseFloor                            sql.NullFloat64
	CanRelay                              sql.NullInt64 // 0 or 1, from the status `repeat` field
	// Counters that go only to observer_metrics.
	TxAirSecs, RxAirSecs, RecvErrors, PacketsSent, PacketsRecv sql.NullInt64
}

// Any reports whether the status carried any metadata at all; only then
// does CoreScope write an observer_metrics row.
func (m *ObserverMeta) Any() bool {
	return m.Model.Valid || m.Firmware.Valid || m.ClientVersion.Valid || m.Radio.Valid ||
		m.BatteryMv.Valid || m.UptimeSecs.Valid || m.NoiseFloor.Valid || m.CanRelay.Valid ||
		m.TxAirSecs.Valid || m.RxAirSecs.Valid || m.RecvErrors.Valid || m.PacketsSent.Valid || m.PacketsRecv.Valid
}

// NodeAdvert is what one valid ADVERT says about its node.
type NodeAdvert struct {
	PublicKey    string // 64 lower-case hex digits
	Name         sql.NullString
	Role         sql.NullString
	Lat, Lon     sql.NullFloat64
	BatteryMv    sql.NullInt64
	TemperatureC sql.NullFloat64
	Foreign      bool           // outside geo_filter, stored with foreign_advert = 1
	DefaultScope sql.NullString // the transport region the advert matched
}

// DroppedPacket is a dropped_packets row.
type DroppedPacket struct {
	Hash, RawHex sql.NullString
	Reason       string
	ObserverID   sql.NullString
	ObserverName sql.NullString
	NodePubkey   sql.NullString
	NodeName     sql.NullString
	DroppedAt    time.Time
}

// Time formats CoreScope stores (schema.SecondsLayout, schema.DateTimeLayout).
const (
	rfc3339Seconds = schema.SecondsLayout
	sqliteDateTime = schema.DateTimeLayout
)

// FormatSeconds is a unix time as CoreScope stores first_seen, last_seen
// and the other RFC 3339 columns: UTC, whole seconds.
func FormatSeconds(unix int64) string { return time.Unix(unix, 0).UTC().Format(rfc3339Seconds) }

// ParseSeconds reads a stored RFC 3339 time as unix seconds; CoreScope has
// written it with and without fractional seconds over the years.
func ParseSeconds(s string) (int64, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, false
	}
	return t.Unix(), true
}

// roundToInterval is CoreScope's observer_metrics rounding: to the nearest
// multiple of the sample interval.
func roundToInterval(unix int64, interval time.Duration) int64 {
	sec := int64(interval / time.Second)
	if sec <= 0 {
		sec = 300
	}
	return (unix + sec/2) / sec * sec
}
