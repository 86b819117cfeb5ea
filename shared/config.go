package shared

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"
)

// Config is CoreScope's config.json as operators already have it, plus
// meshingest's own keys in the same camelCase style. Both processes read the
// same file: the receiver uses the sources and the spool settings, the writer
// the database, decoding and retention settings. Keys CoreScope's server uses
// and meshingest does not are ignored, so one file serves all three.
type Config struct {
	// DBPath is the SQLite database CoreScope's server reads. Env DB_PATH
	// overrides it. Default data/meshcore.db.
	DBPath string `json:"dbPath"`

	// MQTT is CoreScope's legacy single-broker form; it becomes one source
	// named "default" when MQTTSources is empty.
	MQTT *LegacyMQTT `json:"mqtt,omitempty"`
	// MQTTSources are the brokers the receiver subscribes to. Env
	// MQTT_BROKER (with MQTT_TOPIC) replaces them with one source.
	MQTTSources []Source `json:"mqttSources,omitempty"`

	LogLevel string `json:"logLevel,omitempty"`

	// Channel keys for GRP_TXT / GRP_DATA decryption. Explicit keys win over
	// derived hashtag keys, which win over the rainbow file.
	ChannelKeys     map[string]string `json:"channelKeys,omitempty"`
	HashChannels    []string          `json:"hashChannels,omitempty"`
	ChannelKeysPath string            `json:"channelKeysPath,omitempty"`
	// HashRegions are the transport-code regions (e.g. "#ottawa") whose
	// names are stored in transmissions.scope_name when a code matches.
	HashRegions []string `json:"hashRegions,omitempty"`

	// ValidateSignatures drops adverts whose Ed25519 signature fails
	// (default true).
	ValidateSignatures *bool             `json:"validateSignatures,omitempty"`
	GeoFilter          *GeoFilter        `json:"geo_filter,omitempty"`
	ForeignAdverts     *ForeignAdverts   `json:"foreignAdverts,omitempty"`
	Retention          *Retention        `json:"retention,omitempty"`
	Metrics            *MetricsSampling  `json:"metrics,omitempty"`
	ClientRxCoverage   *ClientRxCoverage `json:"clientRxCoverage,omitempty"`
	DB                 *DBMaintenance    `json:"db,omitempty"`

	ObserverBlacklist       []string `json:"observerBlacklist,omitempty"`
	ObserverIATAWhitelist   []string `json:"observerIATAWhitelist,omitempty"`
	NeighborEdgesMaxAgeDays int      `json:"neighborEdgesMaxAgeDays,omitempty"`

	// --- meshingest's own keys ---

	// SpoolDir is the folder of spool segment files shared by the receiver
	// and the writer. Env MESHINGEST_SPOOL_DIR overrides it. Default: a
	// "spool" folder beside the database.
	SpoolDir string         `json:"spoolDir,omitempty"`
	Spool    SpoolConfig    `json:"spool,omitempty"`
	Receiver ReceiverConfig `json:"receiver,omitempty"`
	Writer   WriterConfig   `json:"writer,omitempty"`
	// Broker is the embedded MQTT broker `meshingest run` starts when no
	// source is configured, or on a configured address for observers.
	Broker EmbeddedBroker `json:"broker,omitempty"`

	// Warnings are what LoadConfig found questionable but not wrong (an
	// unknown top-level key): each process logs them once at start.
	Warnings []string `json:"-"`
}

// LegacyMQTT is CoreScope's old `mqtt` object.
type LegacyMQTT struct {
	Broker string `json:"broker"`
	Topic  string `json:"topic"`
}

// Source is one MQTT broker the receiver subscribes to.
type Source struct {
	Name     string `json:"name"`
	Broker   string `json:"broker"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// RejectUnauthorized false turns TLS certificate verification off. The
	// default (absent) verifies.
	RejectUnauthorized *bool    `json:"rejectUnauthorized,omitempty"`
	Topics             []string `json:"topics,omitempty"`
	// IATAFilter limits packet messages to these regions (topic segment 1).
	IATAFilter []string `json:"iataFilter,omitempty"`
	// Region is the IATA used for observers whose topic has none.
	Region            string `json:"region,omitempty"`
	ConnectTimeoutSec int    `json:"connectTimeoutSec,omitempty"`
	// ClientID is the MQTT client id. With QoS 1 it must be stable so the
	// broker keeps the session while the receiver is down; the default is
	// derived from the source name and the host name.
	ClientID string `json:"clientId,omitempty"`
	// QoS is the subscription QoS: 0 (default, what observers publish) or 1
	// (the broker holds messages until the receiver has them on disk).
	QoS int `json:"qos,omitempty"`
}

// VerifyTLS reports whether the broker's certificate must verify.
func (s Source) VerifyTLS() bool {
	return s.RejectUnauthorized == nil || *s.RejectUnauthorized
}

// GeoFilter is CoreScope's geo_filter: a polygon (with an optional buffer)
// or a bounding box.
type GeoFilter struct {
	Polygon  [][2]float64 `json:"polygon,omitempty"`
	BufferKm float64      `json:"bufferKm,omitempty"`
	LatMin   *float64     `json:"latMin,omitempty"`
	LatMax   *float64     `json:"latMax,omitempty"`
	LonMin   *float64     `json:"lonMin,omitempty"`
	LonMax   *float64     `json:"lonMax,omitempty"`
}

// ForeignAdverts says what happens to an advert outside the geo filter:
// "flag" (default) stores it with nodes.foreign_advert = 1, "drop" drops it.
type ForeignAdverts struct {
	Mode string `json:"mode,omitempty"`
}

// Retention is CoreScope's retention object. Zero means the default.
type Retention struct {
	NodeDays     int `json:"nodeDays"`
	ObserverDays int `json:"observerDays"`
	MetricsDays  int `json:"metricsDays"`
	PacketDays   int `json:"packetDays"`
	ClientRxDays int `json:"clientRxDays"`
}

// MetricsSampling is CoreScope's `metrics` object (observer_metrics rows).
type MetricsSampling struct {
	SampleIntervalSec int `json:"sampleIntervalSec"`
}

// ClientRxCoverage is CoreScope's opt-in mobile coverage feature.
type ClientRxCoverage struct {
	Enabled bool `json:"enabled"`
}

// DBMaintenance is CoreScope's `db` object.
type DBMaintenance struct {
	IncrementalVacuumPages int `json:"incrementalVacuumPages,omitempty"`
}

// SpoolConfig tunes the spool. Zero values mean the spool package's defaults,
// which were chosen by benchmark (see the spool package documentation).
type SpoolConfig struct {
	// Profile selects the spool's timing defaults: "low-latency" (the
	// default: a record is committed as soon as it arrives, groups at most
	// every minGroupIntervalMs under load, each group sealed at once) or
	// "low-wear" (for SD cards: 1 s groups and segments, the fewest syncs
	// and bytes). docs/configuration.md has the figures of each.
	Profile string `json:"profile,omitempty"`
	// MinGroupIntervalMs is the least time between two groups' starts
	// (low-latency 150, low-wear groupWindowMs).
	MinGroupIntervalMs int `json:"minGroupIntervalMs,omitempty"`
	// GroupWindowMs is how long the appender gathers records after the
	// first one before one commit and fsync (low-latency 0, low-wear
	// 1000). With minGroupIntervalMs it bounds what a crash can lose of
	// QoS 0 traffic.
	GroupWindowMs int `json:"groupWindowMs,omitempty"`
	// GroupMaxRecords closes a group early under load.
	GroupMaxRecords int `json:"groupMaxRecords,omitempty"`
	// SegmentMaxBytes and SegmentMaxAgeMs seal the active segment.
	SegmentMaxBytes int64 `json:"segmentMaxBytes,omitempty"`
	SegmentMaxAgeMs int   `json:"segmentMaxAgeMs,omitempty"`
	// MaxBytes caps the spool folder; MinFreeBytes is the free-disk floor
	// (default: the smaller of 512 MiB and 5 % of the disk). Either one
	// reached makes appends report "full".
	MaxBytes     int64 `json:"maxBytes,omitempty"`
	MinFreeBytes int64 `json:"minFreeBytes,omitempty"`
	// MaxPayloadBytes refuses larger MQTT payloads (default 64 KiB).
	MaxPayloadBytes int `json:"maxPayloadBytes,omitempty"`
	// QueueMaxBytes bounds the memory holding records not yet on disk;
	// past it QoS 0 messages are dropped and counted.
	QueueMaxBytes int64 `json:"queueMaxBytes,omitempty"`
	// QueueFullWaitMs is how long an append waits for room in a full
	// queue (the receiver stops reading from the broker meanwhile) before
	// a QoS 0 message is dropped as queue_full (default 5000; -1: never
	// wait). Keep it under the MQTT ping timeout, 10 s.
	QueueFullWaitMs int `json:"queueFullWaitMs,omitempty"`
}

// ReceiverConfig holds the receiver's own settings.
type ReceiverConfig struct {
	// StatsFile defaults to $RUNTIME_DIRECTORY/receiver-stats.json under
	// systemd (RuntimeDirectory=, a tmpfs: the drop counters must stay
	// fresh when the spool's disk is full), else to
	// <spoolDir>/receiver-stats.json. The writer reads it from the same
	// default, so both units need the same RuntimeDirectory=.
	StatsFile string `json:"statsFile,omitempty"`
	// MetricsListen is an optional address (e.g. "127.0.0.1:9465") for
	// Prometheus metrics.
	MetricsListen string `json:"metricsListen,omitempty"`
}

// WriterConfig holds the writer's own settings.
type WriterConfig struct {
	// StatsFile is the CoreScope stats contract file. Env
	// CORESCOPE_INGESTOR_STATS overrides it; the default is CoreScope's,
	// /tmp/corescope-ingestor-stats.json.
	StatsFile     string `json:"statsFile,omitempty"`
	MetricsListen string `json:"metricsListen,omitempty"`
	// BatchMaxRecords and BatchMaxMs bound one SQLite transaction; the time
	// bound keeps CoreScope's server from waiting long on the write lock.
	BatchMaxRecords int `json:"batchMaxRecords,omitempty"`
	BatchMaxMs      int `json:"batchMaxMs,omitempty"`
	// RetryMaxMs caps the back-off while the database refuses writes.
	RetryMaxMs int `json:"retryMaxMs,omitempty"`
	// NotReadyAfterSec is how long records may wait while the database
	// refuses writes before the writer reports itself not ready
	// (/-/ready, `meshingest status`). Zero means the writer's default.
	NotReadyAfterSec int `json:"notReadyAfterSec,omitempty"`
	// CacheKiB is SQLite's page cache for the writer's connection. More
	// cache keeps more index pages of a very large database in memory,
	// but it is resident memory (about 1.8 KiB per KiB of cache with the
	// pure-Go SQLite). Zero means the writer's default.
	CacheKiB int `json:"cacheKiB,omitempty"`
	// PageSize is the SQLite page size of a database the writer creates
	// (512 to 65536, a power of two; default 4096, SQLite's): smaller
	// pages write fewer bytes per commit (1024 for SD cards). An existing
	// database keeps its own.
	PageSize int `json:"pageSize,omitempty"`
	// WALAutoCheckpointPages is SQLite's wal_autocheckpoint: how many WAL
	// pages make a commit fold the WAL into the database file. Fewer
	// pages keep the WAL small but write hot index pages more often.
	// Zero means the writer's default (16000 pages, 62.5 MiB); the power
	// cut test sets it low so that cuts land in checkpoints.
	WALAutoCheckpointPages int `json:"walAutoCheckpointPages,omitempty"`
	// Jobs runs, beside the inserts, the jobs CoreScope's server depends
	// on: resolved_path, neighbor_edges, multibyte capability, geo-prune
	// requests and the backfills of old databases (writer/jobs.go).
	// Default true. false is for measuring the writer without them or
	// ruling them out while diagnosing: the server shows no resolved
	// paths and no neighbour graph without them.
	Jobs *bool `json:"jobs,omitempty"`
	// DedupWindowMs is how far apart, by receive time, receiver
	// instances' copies of one publication may be and still count once;
	// zero means the writer's default.
	DedupWindowMs int `json:"dedupWindowMs,omitempty"`
	// DedupMemoryMinutes is how far back a late copy from a recovering
	// receiver is still recognised; zero means the writer's default.
	DedupMemoryMinutes int `json:"dedupMemoryMinutes,omitempty"`
}

// JobsEnabled reports whether the writer runs CoreScope's jobs (default
// true).
func (w WriterConfig) JobsEnabled() bool { return w.Jobs == nil || *w.Jobs }

// EmbeddedBroker configures the MQTT broker built into `meshingest run`.
type EmbeddedBroker struct {
	// Listen is the address observers publish to, e.g. "0.0.0.0:1883".
	// Empty means 127.0.0.1 on a free port, used only by `run` itself.
	Listen   string `json:"listen,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// Defaults CoreScope uses.
const (
	DefaultDBPath    = "data/meshcore.db"
	DefaultTopic     = "meshcore/#"
	DefaultStatsPath = "/tmp/corescope-ingestor-stats.json"
)

// ErrConfig marks a configuration the processes refuse to start with.
var ErrConfig = errors.New("invalid configuration")

// ConfigError names the file and the field that is wrong.
type ConfigError struct {
	Path  string // the config file, "" for environment
	Field string // JSON path of the field, e.g. mqttSources[1].broker
	Msg   string
}

func (e *ConfigError) Error() string {
	where := e.Path
	if where == "" {
		where = "environment"
	}
	if e.Field == "" {
		return fmt.Sprintf("config %s: %s", where, e.Msg)
	}
	return fmt.Sprintf("config %s: %s: %s", where, e.Field, e.Msg)
}

func (e *ConfigError) Unwrap() error { return ErrConfig }

// LoadConfig reads path (CoreScope's config.json format), applies the
// environment overrides and defaults, and validates it. An empty path means
// no file: environment and defaults only. Nothing connects or opens files
// other than path before the configuration is known to be good.
func LoadConfig(path string) (*Config, error) {
	cfg := &Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, &ConfigError{Path: path, Msg: fmt.Sprintf("cannot read: %v", err)}
		}
		if err := decodeConfig(path, data, cfg); err != nil {
			return nil, err
		}
	}
	cfg.applyEnv(os.Getenv)
	cfg.applyDefaults()
	if err := cfg.Validate(path); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeConfig parses the file and checks its keys (checkKeys): unknown
// top-level keys are allowed, with a warning (the file is shared with
// CoreScope's server, whose keys meshingest knows), but one close to a
// known key, and any unknown key inside a source or a section meshingest
// acts on, is refused: a typo there would silently lose data or start an
// empty database.
func decodeConfig(path string, data []byte, cfg *Config) error {
	if err := json.Unmarshal(data, cfg); err != nil {
		return &ConfigError{Path: path, Msg: describeJSONError(data, err)}
	}
	warnings, err := checkKeys(path, data)
	if err != nil {
		return err
	}
	cfg.Warnings = warnings
	return nil
}

// describeJSONError turns a syntax error offset into a line number.
func describeJSONError(data []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
		return fmt.Sprintf("not valid JSON at line %d: %v", line, se)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s: wrong type: %s where %s was expected", te.Field, te.Value, te.Type)
	}
	return err.Error()
}

func (c *Config) applyEnv(getenv func(string) string) {
	if v := getenv("DB_PATH"); v != "" {
		c.DBPath = v
	}
	if v := getenv("MQTT_BROKER"); v != "" {
		topic := getenv("MQTT_TOPIC")
		if topic == "" {
			topic = DefaultTopic
		}
		c.MQTTSources = []Source{{Name: "env", Broker: v, Topics: []string{topic}}}
		c.MQTT = nil
	}
	if v := getenv("MESHINGEST_SPOOL_DIR"); v != "" {
		c.SpoolDir = v
	}
	if v := getenv("CORESCOPE_INGESTOR_STATS"); v != "" {
		c.Writer.StatsFile = v
	}
}

func (c *Config) applyDefaults() {
	if c.DBPath == "" {
		c.DBPath = DefaultDBPath
	}
	if len(c.MQTTSources) == 0 && c.MQTT != nil && c.MQTT.Broker != "" {
		topic := c.MQTT.Topic
		if topic == "" {
			topic = DefaultTopic
		}
		c.MQTTSources = []Source{{Name: "default", Broker: c.MQTT.Broker, Topics: []string{topic}}}
	}
	for i := range c.MQTTSources {
		s := &c.MQTTSources[i]
		if s.Name == "" {
			s.Name = fmt.Sprintf("source%d", i+1)
		}
		if len(s.Topics) == 0 {
			s.Topics = []string{DefaultTopic}
		}
	}
	if c.SpoolDir == "" {
		c.SpoolDir = filepath.Join(filepath.Dir(c.DBPath), "spool")
	}
	if c.Receiver.StatsFile == "" {
		dir := c.SpoolDir
		if rt, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); rt != "" {
			dir = rt
		}
		c.Receiver.StatsFile = filepath.Join(dir, "receiver-stats.json")
	}
	if c.Writer.StatsFile == "" {
		c.Writer.StatsFile = DefaultStatsPath
	}
}

// Validate checks what can be checked without connecting to anything.
func (c *Config) Validate(path string) error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Path: path, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	names := map[string]int{}
	for i, s := range c.MQTTSources {
		field := fmt.Sprintf("mqttSources[%d]", i)
		if prev, dup := names[s.Name]; dup {
			return bad(field+".name", "%q is also the name of mqttSources[%d]; names must be unique", s.Name, prev)
		}
		names[s.Name] = i
		if s.Broker == "" {
			return bad(field+".broker", "missing; give a URL such as mqtt://host:1883")
		}
		if err := checkBrokerURL(s.Broker); err != nil {
			return bad(field+".broker", "%v", err)
		}
		if s.QoS != 0 && s.QoS != 1 {
			return bad(field+".qos", "%d is not supported; use 0 or 1", s.QoS)
		}
		for j, t := range s.Topics {
			if t == "" || strings.ContainsAny(t, "\x00") {
				return bad(fmt.Sprintf("%s.topics[%d]", field, j), "empty or invalid topic filter")
			}
		}
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		return bad("logLevel", "%v", err)
	}
	if w := c.Writer.DedupWindowMs; w < 0 || w > 60000 {
		return bad("writer.dedupWindowMs", "%d is outside 0 to 60000: copies more than a minute apart are not one publication", w)
	}
	if c.Writer.DedupMemoryMinutes < 0 {
		return bad("writer.dedupMemoryMinutes", "must not be negative")
	}
	for name, key := range c.ChannelKeys {
		if !validChannelKeyHex(key) {
			return bad("channelKeys."+name, "must be 32 or 64 hex digits (a 16- or 32-byte secret)")
		}
	}
	for i, name := range c.HashChannels {
		if strings.TrimSpace(strings.TrimPrefix(name, "#")) == "" {
			return bad(fmt.Sprintf("hashChannels[%d]", i), "empty channel name")
		}
	}
	for i, name := range c.HashRegions {
		if strings.TrimSpace(strings.TrimPrefix(name, "#")) == "" {
			return bad(fmt.Sprintf("hashRegions[%d]", i), "empty region name")
		}
	}
	if err := c.validateGeoFilter(bad); err != nil {
		return err
	}
	if r := c.Retention; r != nil && r.ObserverDays < -1 {
		return bad("retention.observerDays", "%d: use a number of days, or -1 to keep observers for ever", r.ObserverDays)
	}
	if c.ForeignAdverts != nil {
		switch strings.ToLower(strings.TrimSpace(c.ForeignAdverts.Mode)) {
		case "", "flag", "drop":
		default:
			return bad("foreignAdverts.mode", "%q is not one of flag, drop", c.ForeignAdverts.Mode)
		}
	}
	if ps := c.Writer.PageSize; ps != 0 && (ps < 512 || ps > 65536 || ps&(ps-1) != 0) {
		return bad("writer.pageSize", "%d: use a power of two from 512 to 65536", ps)
	}
	switch c.Spool.Profile {
	case "", "low-latency", "low-wear":
	default:
		return bad("spool.profile", "%q is not one of low-latency, low-wear", c.Spool.Profile)
	}
	nonNegative := []struct {
		field string
		v     int64
	}{
		{"spool.groupWindowMs", int64(c.Spool.GroupWindowMs)},
		{"spool.minGroupIntervalMs", int64(c.Spool.MinGroupIntervalMs)},
		{"spool.groupMaxRecords", int64(c.Spool.GroupMaxRecords)},
		{"spool.segmentMaxBytes", c.Spool.SegmentMaxBytes},
		{"spool.segmentMaxAgeMs", int64(c.Spool.SegmentMaxAgeMs)},
		{"spool.maxBytes", c.Spool.MaxBytes},
		{"spool.minFreeBytes", c.Spool.MinFreeBytes},
		{"spool.maxPayloadBytes", int64(c.Spool.MaxPayloadBytes)},
		{"spool.queueMaxBytes", c.Spool.QueueMaxBytes},
		{"writer.batchMaxRecords", int64(c.Writer.BatchMaxRecords)},
		{"writer.batchMaxMs", int64(c.Writer.BatchMaxMs)},
		{"writer.retryMaxMs", int64(c.Writer.RetryMaxMs)},
		{"writer.cacheKiB", int64(c.Writer.CacheKiB)},
		{"writer.pageSize", int64(c.Writer.PageSize)},
		{"writer.walAutoCheckpointPages", int64(c.Writer.WALAutoCheckpointPages)},
		{"writer.notReadyAfterSec", int64(c.Writer.NotReadyAfterSec)},
		{"neighborEdgesMaxAgeDays", int64(c.NeighborEdgesMaxAgeDays)},
	}
	for i, src := range c.MQTTSources {
		nonNegative = append(nonNegative, struct {
			field string
			v     int64
		}{fmt.Sprintf("mqttSources[%d].connectTimeoutSec", i), int64(src.ConnectTimeoutSec)})
	}
	if r := c.Retention; r != nil {
		nonNegative = append(nonNegative, []struct {
			field string
			v     int64
		}{{"retention.nodeDays", int64(r.NodeDays)}, {"retention.metricsDays", int64(r.MetricsDays)},
			{"retention.packetDays", int64(r.PacketDays)}, {"retention.clientRxDays", int64(r.ClientRxDays)}}...)
	}
	if c.Metrics != nil {
		nonNegative = append(nonNegative, struct {
			field string
			v     int64
		}{"metrics.sampleIntervalSec", int64(c.Metrics.SampleIntervalSec)})
	}
	if c.DB != nil {
		nonNegative = append(nonNegative, struct {
			field string
			v     int64
		}{"db.incrementalVacuumPages", int64(c.DB.IncrementalVacuumPages)})
	}
	for _, n := range nonNegative {
		if n.v < 0 {
			return bad(n.field, "must not be negative")
		}
	}
	// A receiver blocked in a wait for longer than the MQTT ping timeout
	// (10 s) loses its connection, and with it the burst it waited for.
	if w := c.Spool.QueueFullWaitMs; w < -1 || w > 8000 {
		return bad("spool.queueFullWaitMs", "%d; give -1 (never wait) or up to 8000 ms (the MQTT ping timeout is 10 s)", w)
	}
	return nil
}

// validateGeoFilter checks geo_filter's polygon (three points or more,
// each a [lat, lon] on the globe) and box (all four bounds, min below max).
func (c *Config) validateGeoFilter(bad func(field, format string, args ...any) error) error {
	g := c.GeoFilter
	if g == nil {
		return nil
	}
	if len(g.Polygon) > 0 && len(g.Polygon) < 3 {
		return bad("geo_filter.polygon", "%d points; a polygon needs at least 3 [lat, lon] pairs", len(g.Polygon))
	}
	for i, p := range g.Polygon {
		if math.Abs(p[0]) > 90 || math.Abs(p[1]) > 180 {
			return bad(fmt.Sprintf("geo_filter.polygon[%d]", i), "[%g, %g] is not a [lat, lon] pair (lat within ±90, lon within ±180)", p[0], p[1])
		}
	}
	if g.BufferKm < 0 {
		return bad("geo_filter.bufferKm", "must not be negative")
	}
	bounds := []*float64{g.LatMin, g.LatMax, g.LonMin, g.LonMax}
	given := 0
	for _, b := range bounds {
		if b != nil {
			given++
		}
	}
	switch {
	case given == 0:
	case given != 4:
		return bad("geo_filter", "a box needs all of latMin, latMax, lonMin, lonMax")
	case *g.LatMin > *g.LatMax || math.Abs(*g.LatMin) > 90 || math.Abs(*g.LatMax) > 90:
		return bad("geo_filter", "latMin %g, latMax %g: want -90 ≤ latMin ≤ latMax ≤ 90", *g.LatMin, *g.LatMax)
	case *g.LonMin > *g.LonMax || math.Abs(*g.LonMin) > 180 || math.Abs(*g.LonMax) > 180:
		return bad("geo_filter", "lonMin %g, lonMax %g: want -180 ≤ lonMin ≤ lonMax ≤ 180", *g.LonMin, *g.LonMax)
	}
	return nil
}

func validChannelKeyHex(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) != 32 && len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// brokerSchemes are the URL schemes CoreScope accepts.
var brokerSchemes = map[string]bool{"mqtt": true, "mqtts": true, "tcp": true, "ssl": true, "tls": true, "ws": true, "wss": true}

func checkBrokerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", MaskPasswords(err.Error()))
	}
	if !brokerSchemes[strings.ToLower(u.Scheme)] {
		return fmt.Errorf("scheme %q is not one of mqtt, mqtts, tcp, ssl, ws, wss", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("no host in %s", MaskBrokerURL(raw))
	}
	return nil
}

// ShouldValidateSignatures is true unless validateSignatures is false.
func (c *Config) ShouldValidateSignatures() bool {
	return c.ValidateSignatures == nil || *c.ValidateSignatures
}

// MetricsSampleInterval is the observer_metrics rounding interval (300 s).
func (c *Config) MetricsSampleInterval() time.Duration {
	if c.Metrics != nil && c.Metrics.SampleIntervalSec > 0 {
		return time.Duration(c.Metrics.SampleIntervalSec) * time.Second
	}
	return 300 * time.Second
}

// NodeDays is retention.nodeDays (default 7).
func (c *Config) NodeDays() int {
	if c.Retention != nil && c.Retention.NodeDays > 0 {
		return c.Retention.NodeDays
	}
	return 7
}

// ObserverDays is retention.observerDays (default 14; -1 never).
func (c *Config) ObserverDays() int {
	if c.Retention != nil && c.Retention.ObserverDays != 0 {
		return c.Retention.ObserverDays
	}
	return 14
}

// MetricsDays is retention.metricsDays (default 30).
func (c *Config) MetricsDays() int {
	if c.Retention != nil && c.Retention.MetricsDays > 0 {
		return c.Retention.MetricsDays
	}
	return 30
}

// PacketDays is retention.packetDays (0: keep packets forever).
func (c *Config) PacketDays() int {
	if c.Retention != nil && c.Retention.PacketDays > 0 {
		return c.Retention.PacketDays
	}
	return 0
}

// ClientRxDays is retention.clientRxDays (0: keep client receptions).
func (c *Config) ClientRxDays() int {
	if c.Retention != nil && c.Retention.ClientRxDays > 0 {
		return c.Retention.ClientRxDays
	}
	return 0
}

// VacuumPages is db.incrementalVacuumPages: the free pages given back to
// the file system after each retention pass (default 1024, CoreScope's).
func (c *Config) VacuumPages() int {
	if c.DB != nil && c.DB.IncrementalVacuumPages > 0 {
		return c.DB.IncrementalVacuumPages
	}
	return 1024
}

// NeighborEdgesDays is neighborEdgesMaxAgeDays (default 5).
func (c *Config) NeighborEdgesDays() int {
	if c.NeighborEdgesMaxAgeDays > 0 {
		return c.NeighborEdgesMaxAgeDays
	}
	return 5
}

// DropForeignAdverts reports foreignAdverts.mode == "drop".
func (c *Config) DropForeignAdverts() bool {
	return c.ForeignAdverts != nil && strings.EqualFold(strings.TrimSpace(c.ForeignAdverts.Mode), "drop")
}

// ChangedKeys lists the keys whose values differ between two
// configurations, by name only (never a value: some are secrets): the
// top-level keys, and inside meshingest's sections (spool, receiver,
// writer, broker) the section's keys, e.g. "spool.groupWindowMs". A reload
// logs them, and which of them need a restart.
func ChangedKeys(a, b *Config) []string {
	ma, mb := asMap(a), asMap(b)
	var changed []string
	for _, key := range unionKeys(ma, mb) {
		va, vb := ma[key], mb[key]
		if reflect.DeepEqual(va, vb) {
			continue
		}
		sa, okA := va.(map[string]any)
		sb, okB := vb.(map[string]any)
		if slices.Contains([]string{"spool", "receiver", "writer", "broker"}, key) && (okA || va == nil) && (okB || vb == nil) {
			for _, sub := range unionKeys(sa, sb) {
				if !reflect.DeepEqual(sa[sub], sb[sub]) {
					changed = append(changed, key+"."+sub)
				}
			}
			continue
		}
		changed = append(changed, key)
	}
	return changed
}

func asMap(c *Config) map[string]any {
	m := map[string]any{}
	if c == nil {
		return m
	}
	data, _ := json.Marshal(c)
	json.Unmarshal(data, &m)
	return m
}

func unionKeys(a, b map[string]any) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, dup := a[k]; !dup {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
