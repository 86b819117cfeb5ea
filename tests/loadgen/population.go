package loadgen

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// adv_type values of an advert's flags byte (meshcore-packets.md §5.3).
const (
	advChat     = 1
	advRepeater = 2
	advRoom     = 3
	advSensor   = 4
)

// Node is one MeshCore node of the simulated mesh.
type Node struct {
	Name    string
	AdvType int // 1 chat, 2 repeater, 3 room, 4 sensor
	// LatE6, LonE6 are the advertised position in degrees × 1e6; HasLocation
	// is false for nodes that advertise none.
	HasLocation  bool
	LatE6, LonE6 int32
	PubKey       ed25519.PublicKey
	priv         ed25519.PrivateKey
	// clock is the node's RTC for its next advert. Content must not depend
	// on the wall clock (see the package documentation), so it starts at a
	// seeded value and moves forward by a seeded step per advert.
	clock uint32
}

// PubKeyHex is the node id as nodes.public_key stores it (lowercase).
func (n *Node) PubKeyHex() string { return hex.EncodeToString(n.PubKey) }

// Publisher is the software an observer runs; it decides how numbers and
// timestamps look in its messages (mqtt-formats.md §2).
type Publisher int

const (
	// MeshcoreToMQTT (Cisien/meshcoretomqtt): SNR a truncated integer
	// string, RSSI, score, duration, uppercase hash, UTC timestamps.
	MeshcoreToMQTT Publisher = iota
	// PacketCapture (agessaman/meshcore-packet-capture): SNR a float string
	// or "Unknown", no score or duration, UTC timestamps.
	PacketCapture
	// PyMCRepeater (rightup/pyMC_Repeater): str(float) values, naive local
	// timestamps.
	PyMCRepeater
	// MeshcoreHA (meshcore-dev/meshcore-ha): strings that may be empty,
	// naive local timestamps, default score and duration.
	MeshcoreHA
)

var publisherNames = [...]string{"meshcoretomqtt", "meshcore-packet-capture", "pyMC_repeater", "meshcore-ha"}

func (p Publisher) String() string { return publisherNames[p] }

// Observer is one MQTT-publishing observer.
type Observer struct {
	// ID is topic segment 2: the observer's public key in uppercase hex,
	// or, for one observer, a plain name (real meshes have `kpabap`).
	ID     string
	Name   string // `origin`
	Region string // topic segment 1, the IATA code
	Publisher
	// LocalOffsetHours is the offset of the naive local clock of
	// PyMCRepeater and MeshcoreHA observers; a non-zero offset makes the
	// writer record clock skew on the observer.
	LocalOffsetHours int
	// UnitSuffix, when set, is appended to RSSI ("dBm") and SNR ("dB")
	// strings: CoreScope strips trailing units.
	UnitSuffix    bool
	Radio         string
	Model         string
	Firmware      string
	ClientVersion string
	status        statusCounters
}

type statusCounters struct {
	uptime     int64
	txAir      int64
	rxAir      int64
	recvErrors int64
	battery    int64
	noise      float64
}

// Channel is a group channel: Known channels are in the configuration the
// harness writes, the others are channels the analyzer has no key for.
type Channel struct {
	Name   string // "Public", "#test", "harness-256"; "" for unknown channels
	Secret []byte // 16 or 32 bytes
	Hash   byte   // SHA256(secret)[0]
	Known  bool
	// Hashtag is true when the key is SHA256(Name)[0:16] and the config
	// lists the name under hashChannels rather than channelKeys.
	Hashtag bool
}

func newChannel(name string, secret []byte, known, hashtag bool) *Channel {
	h := sha256.Sum256(secret)
	return &Channel{Name: name, Secret: secret, Hash: h[0], Known: known, Hashtag: hashtag}
}

// hashtagSecret is the firmware's hashtag channel key: SHA256("#name")[0:16].
func hashtagSecret(name string) []byte {
	h := sha256.Sum256([]byte(name))
	return h[:16]
}

// PublicSecret is the firmware's built-in Public channel key.
var PublicSecret = mustHex("8b3387e9c5cdea6ac9e5edbaa115cd72")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// Names are put together from these so they look like a real mesh's and
// exercise UTF-8 (emoji) and HTML characters the writer must escape.
var (
	namePlaces = []string{"Ridge", "Bay", "Hill", "Peak", "Creek", "Mesa", "Harbor", "Oak", "Pine", "Canyon", "Summit", "Valley", "Marina", "Delta", "Bluff", "Grove"}
	nameKinds  = map[int][]string{
		advChat:     {"Mobile", "Handheld", "T-Deck", "Phone", "Pocket"},
		advRepeater: {"Rptr", "Repeater", "RPT", "Relay"},
		advRoom:     {"Room", "BBS", "Hub"},
		advSensor:   {"Sensor", "WX", "Env"},
	}
	nameDecor  = []string{"", "", "", "", " 🐰", " 💥", " 🗝️", " <&>"}
	chatWords  = []string{"hello", "testing", "mesh", "anyone", "copy", "signal", "good", "morning", "repeater", "up", "down", "weather", "hiking", "ping", "check", "net", "tonight", "73", "battery", "antenna", "solar", "coverage", "from", "the", "bay", "ridge", "<3", "&", "qth"}
	models     = []string{"Heltec V3", "RAK4631", "T-Beam", "Station G2", "unknown"}
	firmwares  = []string{"v1.11.0", "v1.12.0", "v1.14.1", "1.16.0-letsmesh"}
	regionsDef = []string{"SJC", "OAK", "SFO", "MRY"}
)

// clampUTF8 cuts s to at most n bytes on a rune boundary, as the firmware
// cuts advert names.
func clampUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// newNode makes a node with a seeded Ed25519 identity.
func newNode(r *rand.Rand, i, advType int) *Node {
	var seed [ed25519.SeedSize]byte
	for j := range seed {
		seed[j] = byte(r.Uint32())
	}
	priv := ed25519.NewKeyFromSeed(seed[:])
	n := &Node{
		AdvType: advType,
		PubKey:  priv.Public().(ed25519.PublicKey),
		priv:    priv,
		clock:   1_774_000_000 + uint32(r.IntN(2_000_000)),
	}
	name := fmt.Sprintf("%s %s %d%s", pick(r, namePlaces), pick(r, nameKinds[advType]), i, pick(r, nameDecor))
	// Bay Area, as the real corpus; sensors and most repeaters advertise a
	// position, a third of the companions do not.
	n.HasLocation = advType != advChat || r.IntN(3) > 0
	maxName := 31
	if n.HasLocation {
		n.LatE6 = int32(37_200_000 + r.IntN(900_000))
		n.LonE6 = int32(-122_600_000 + r.IntN(900_000))
		maxName = 23
	}
	n.Name = clampUTF8(name, maxName)
	return n
}

// newObserver makes observer i: a repeater-like station with its own key.
func newObserver(r *rand.Rand, i int, regions []string) *Observer {
	var seed [ed25519.SeedSize]byte
	for j := range seed {
		seed[j] = byte(r.Uint32())
	}
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	o := &Observer{
		ID:        strings.ToUpper(hex.EncodeToString(pub)),
		Name:      clampUTF8(fmt.Sprintf("%s Observer %d%s", pick(r, namePlaces), i, pick(r, nameDecor)), 40),
		Region:    regions[i%len(regions)],
		Publisher: Publisher(r.IntN(4)),
		Radio:     pick(r, []string{"910.525,62.5,7,5", "910.5250244,62.5,7,5", "869.618,62.5,8,8"}),
		Model:     pick(r, models),
		Firmware:  pick(r, firmwares),
	}
	o.ClientVersion = map[Publisher]string{
		MeshcoreToMQTT: "meshcoretomqtt/1.1.0.0-31aad7d",
		PacketCapture:  "meshcore-packet-capture/1.2-1bd909c",
		PyMCRepeater:   "pyMC_repeater/1.0.6.dev140+gdd7f3b21f",
		MeshcoreHA:     "meshcore-dev/meshcore-ha:2.4.0",
	}[o.Publisher]
	o.UnitSuffix = o.Publisher == PacketCapture && r.IntN(3) == 0
	o.status = statusCounters{uptime: int64(r.IntN(500_000)), battery: int64(3600 + r.IntN(600)), noise: -120 + float64(r.IntN(20))}
	return o
}
