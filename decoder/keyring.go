package decoder

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// PublicChannelKey is the firmware's default Public channel secret
// (FW docs/companion_protocol.md); its channel hash is 0x11.
const PublicChannelKey = "8b3387e9c5cdea6ac9e5edbaa115cd72"

// KeySource says where a channel key came from. Lower values win when two
// sources name the same channel.
type KeySource uint8

const (
	// SourceExplicit: config `channelKeys` (name → hex secret).
	SourceExplicit KeySource = iota
	// SourceHashtag: config `hashChannels`, key SHA-256("#name")[0:16].
	SourceHashtag
	// SourceRainbow: the `channelKeysPath` file.
	SourceRainbow
	// SourceBuiltin: the Public channel, which every companion has and
	// CoreScope always includes.
	SourceBuiltin
)

// KeyRingConfig is where channel keys come from. The decoder does no I/O:
// Rainbow is the content of the channelKeysPath file, read by the caller.
type KeyRingConfig struct {
	// ChannelKeys are explicit keys, channel name → 32 or 64 hex digits (a
	// 16- or 32-byte secret). A name equal to "public" in any case is
	// stored as "Public".
	ChannelKeys map[string]string
	// HashChannels are hashtag channel names; a missing leading '#' is
	// added. The name is case-sensitive: "#Test" is not "#test".
	HashChannels []string
	// Rainbow is CoreScope's channel-rainbow.json format: one JSON object,
	// channel name → hex secret. nil means no file.
	Rainbow []byte
}

// KeyRing holds the channel keys, indexed by channel-hash byte so a GRP
// packet is only tried against the keys the firmware would try
// (Mesh::searchChannelsByHash). Build it once; it is read-only and safe for
// concurrent use.
type KeyRing struct {
	byHash  [256][]*channelKey
	n       int
	skipped []string
}

type channelKey struct {
	name   string
	secret []byte
	hash   byte
	source KeySource
	block  cipher.Block
	ipad   [64]byte // HMAC pads of the secret zero-extended to 32 bytes
	opad   [64]byte
}

// NewKeyRing builds the ring: explicit keys beat hashtag-derived keys,
// which beat the rainbow file, which beats the built-in Public key. A bad
// explicit key or a rainbow file that is not a JSON object of strings is an
// error; a rainbow entry whose value is not a 16- or 32-byte hex secret is
// skipped and listed by SkippedRainbow.
func NewKeyRing(cfg KeyRingConfig) (*KeyRing, error) {
	type entry struct {
		secret []byte
		source KeySource
	}
	byName := map[string]entry{}
	put := func(name string, secret []byte, src KeySource) {
		if old, ok := byName[name]; ok && old.source <= src {
			return
		}
		byName[name] = entry{secret, src}
	}
	r := &KeyRing{}

	pub, _ := hex.DecodeString(PublicChannelKey)
	put("Public", pub, SourceBuiltin)

	if cfg.Rainbow != nil {
		var file map[string]string
		if err := json.Unmarshal(cfg.Rainbow, &file); err != nil {
			return nil, fmt.Errorf("channel keys file (channelKeysPath): not a JSON object of name → hex key: %v", err)
		}
		for name, k := range file {
			secret, err := parseSecret(k)
			if err != nil || name == "" {
				r.skipped = append(r.skipped, name)
				continue
			}
			put(normaliseChannelName(name), secret, SourceRainbow)
		}
		sort.Strings(r.skipped)
	}
	for _, raw := range cfg.HashChannels {
		name := strings.TrimSpace(raw)
		if name == "" {
			continue
		}
		if !strings.HasPrefix(name, "#") {
			name = "#" + name
		}
		k := HashtagKey(name)
		put(name, k[:], SourceHashtag)
	}
	for name, k := range cfg.ChannelKeys {
		secret, err := parseSecret(k)
		if err != nil {
			return nil, fmt.Errorf("channelKeys.%s: %v; give 32 or 64 hex digits", name, err)
		}
		if strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("channelKeys: empty channel name")
		}
		put(normaliseChannelName(name), secret, SourceExplicit)
	}

	for name, e := range byName {
		k := &channelKey{name: name, secret: e.secret, source: e.source}
		sum := sha256.Sum256(e.secret) // over all 32 bytes for a 256-bit secret
		k.hash = sum[0]
		k.block, _ = aes.NewCipher(e.secret[:16]) // 16 bytes: cannot fail
		var hk [32]byte
		copy(hk[:], e.secret)
		for i := range k.ipad {
			var b byte
			if i < len(hk) {
				b = hk[i]
			}
			k.ipad[i] = b ^ 0x36
			k.opad[i] = b ^ 0x5c
		}
		r.byHash[k.hash] = append(r.byHash[k.hash], k)
		r.n++
	}
	for i := range r.byHash {
		c := r.byHash[i]
		sort.Slice(c, func(a, b int) bool {
			if c[a].source != c[b].source {
				return c[a].source < c[b].source
			}
			return c[a].name < c[b].name
		})
	}
	return r, nil
}

// HashtagKey is the secret of a hashtag channel: SHA-256 of the UTF-8 name,
// '#' included, first 16 bytes.
func HashtagKey(name string) [16]byte {
	sum := sha256.Sum256([]byte(name))
	var k [16]byte
	copy(k[:], sum[:16])
	return k
}

// ChannelHash is the channel-hash byte of a secret: SHA-256(secret)[0].
func ChannelHash(secret []byte) byte {
	sum := sha256.Sum256(secret)
	return sum[0]
}

func normaliseChannelName(name string) string {
	if strings.EqualFold(name, "public") {
		return "Public"
	}
	return name
}

func parseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) != 32 && len(s) != 64 {
		return nil, fmt.Errorf("%d hex digits", len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not hex")
	}
	return b, nil
}

// Len is the number of distinct channels in the ring.
func (r *KeyRing) Len() int {
	if r == nil {
		return 0
	}
	return r.n
}

// Candidates is the number of keys whose channel hash is h.
func (r *KeyRing) Candidates(h byte) int {
	if r == nil {
		return 0
	}
	return len(r.byHash[h])
}

// SkippedRainbow lists the rainbow entries that were not valid secrets.
func (r *KeyRing) SkippedRainbow() []string { return r.skipped }

// DecryptionStatus is CoreScope's decryptionStatus.
type DecryptionStatus string

const (
	// StatusNoKey: no key in the ring has this channel hash.
	StatusNoKey DecryptionStatus = "no_key"
	// StatusFailed: keys with this channel hash exist, but none has a
	// matching MAC (another channel shares the hash byte), or the
	// ciphertext is not whole AES blocks.
	StatusFailed DecryptionStatus = "decryption_failed"
	// StatusDecrypted: a key's MAC matched and the plaintext was read.
	StatusDecrypted DecryptionStatus = "decrypted"
)

// GroupDecryption is the outcome of a channel-key search.
type GroupDecryption struct {
	Status    DecryptionStatus
	Channel   string // the channel name, when decrypted
	Secret    []byte // its secret (16 or 32 bytes), when decrypted
	Plaintext []byte // the decrypted blocks, zero padding included
	Tried     int    // keys whose MAC was checked
}

// DecryptGroup searches the ring for a GRP_TXT / GRP_DATA payload
// (channel_hash 1, MAC 2, ciphertext) as the firmware does: only keys whose
// channel hash equals payload[0], MAC first (HMAC-SHA256 keyed with the
// secret zero-extended to 32 bytes, first 2 bytes), decrypting (AES-128-ECB
// with secret[0:16]) only on a match; the first success wins. For text
// (GRP_TXT) a plaintext whose text is not valid UTF-8 is taken for a
// 1-in-65536 MAC collision and the search goes on.
func (r *KeyRing) DecryptGroup(payload []byte, text bool) GroupDecryption {
	if r == nil || len(payload) < 3 {
		return GroupDecryption{Status: StatusNoKey}
	}
	cands := r.byHash[payload[0]]
	if len(cands) == 0 {
		return GroupDecryption{Status: StatusNoKey}
	}
	mac, ct := payload[1:3], payload[3:]
	res := GroupDecryption{Status: StatusFailed}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return res
	}
	for _, k := range cands {
		res.Tried++
		if !k.macMatches(mac, ct) {
			continue
		}
		plain := make([]byte, len(ct))
		for i := 0; i < len(ct); i += aes.BlockSize {
			k.block.Decrypt(plain[i:i+aes.BlockSize], ct[i:i+aes.BlockSize])
		}
		if text && (len(plain) < 5 || !utf8.Valid(cString(plain[5:]))) {
			continue
		}
		res.Status, res.Channel, res.Secret, res.Plaintext = StatusDecrypted, k.name, k.secret, plain
		return res
	}
	return res
}

// macMatches computes HMAC-SHA256 with the precomputed pads, on the stack.
func (k *channelKey) macMatches(mac, ct []byte) bool {
	if len(ct) > MaxPayloadBytes { // not from a valid frame: too big for the stack buffer
		var hk [32]byte
		copy(hk[:], k.secret)
		h := hmac.New(sha256.New, hk[:])
		h.Write(ct)
		sum := h.Sum(nil)
		return sum[0] == mac[0] && sum[1] == mac[1]
	}
	var inner [64 + MaxPayloadBytes]byte
	copy(inner[:64], k.ipad[:])
	n := 64 + copy(inner[64:], ct)
	ih := sha256.Sum256(inner[:n])
	var outer [64 + 32]byte
	copy(outer[:64], k.opad[:])
	copy(outer[64:], ih[:])
	sum := sha256.Sum256(outer[:])
	return sum[0] == mac[0] && sum[1] == mac[1]
}

// cString is b up to its first NUL.
func cString(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// RegionSet holds the transport-code regions of config `hashRegions`.
type RegionSet struct {
	names []string
	keys  [][16]byte
}

// NewRegionSet derives each region's key, SHA-256("#name")[0:16] (a missing
// '#' is added; blanks and duplicates are dropped). Config order is kept:
// when two regions match one code (a 1-in-65536 collision), the first wins.
func NewRegionSet(names []string) *RegionSet {
	rs := &RegionSet{}
	seen := map[string]bool{}
	for _, raw := range names {
		name := strings.TrimSpace(raw)
		if name == "" {
			continue
		}
		if !strings.HasPrefix(name, "#") {
			name = "#" + name
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		rs.names = append(rs.names, name)
		rs.keys = append(rs.keys, HashtagKey(name))
	}
	return rs
}

// TransportCode is FW TransportKeyStore::calcTransportCode: HMAC-SHA256
// (key = region key, msg = payload type byte ‖ payload), first two bytes as
// u16 LE, with 0x0000 → 0x0001 and 0xFFFF → 0xFFFE.
func TransportCode(regionKey [16]byte, t PayloadType, payload []byte) uint16 {
	if len(payload) > MaxPayloadBytes { // not from a valid frame: too big for the stack buffer
		h := hmac.New(sha256.New, regionKey[:])
		h.Write([]byte{byte(t)})
		h.Write(payload)
		return clampCode(h.Sum(nil))
	}
	var ipad, opad [64]byte
	for i := range ipad {
		var b byte
		if i < len(regionKey) {
			b = regionKey[i]
		}
		ipad[i], opad[i] = b^0x36, b^0x5c
	}
	var inner [64 + 1 + MaxPayloadBytes]byte
	copy(inner[:64], ipad[:])
	inner[64] = byte(t)
	n := 65 + copy(inner[65:], payload)
	ih := sha256.Sum256(inner[:n])
	var outer [96]byte
	copy(outer[:64], opad[:])
	copy(outer[64:], ih[:])
	sum := sha256.Sum256(outer[:])
	return clampCode(sum[:])
}

func clampCode(sum []byte) uint16 {
	code := uint16(sum[0]) | uint16(sum[1])<<8
	switch code {
	case 0:
		code = 1
	case 0xFFFF:
		code = 0xFFFE
	}
	return code
}

// Match returns the first region whose transport code for this payload is
// code1.
func (rs *RegionSet) Match(t PayloadType, payload []byte, code1 uint16) (string, bool) {
	if rs == nil {
		return "", false
	}
	for i, k := range rs.keys {
		if TransportCode(k, t, payload) == code1 {
			return rs.names[i], true
		}
	}
	return "", false
}
