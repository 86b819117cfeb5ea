package jobs

import (
	"slices"
	"strings"
)

// resolved_path (docs/reference/mqtt-formats.md §8): for each hop of an
// observation's path_json, the full public key of the one node whose key
// starts with the hop's hex, else null; a hop several nodes share is
// settled by the neighbour graph when exactly one of them is adjacent to
// the node before it (the advert's own key for the first hop of an
// advert). It is CoreScope's resolvePathWithContext, computed for every
// observation as it is inserted, from an index kept in memory.
//
// The rule is over the nodes table as it is now and, for adjacency, the
// edges earlier observations (smaller ids) give against it: a node learned
// later has the paths through its prefix resolved again (rederive.go).
// CoreScope a06ac8a resolves once, at insert, against an index and a graph
// rebuilt every 60 s, so a node heard for the first time resolves there
// only a minute later, and never on the observations stored before it.

// prefixLengths are the hop sizes, in hex digits, the index answers for:
// CoreScope's 1, 2, 3, 4, 6 and 8-byte prefixes. Header paths use 1-3
// byte hashes and TRACE routes 1, 2, 4 or 8; a hop of any other length
// resolves to nothing, as in CoreScope.
var prefixLengths = [...]int{2, 4, 6, 8, 12, 16}

func indexedPrefixLength(n int) bool {
	for _, l := range prefixLengths {
		if l == n {
			return true
		}
	}
	return false
}

// nodeIndex is the set of node public keys (lower-case) in sorted order, so
// that the nodes sharing a prefix are one contiguous range found by binary
// search, whatever the prefix length. Each key carries its id in the
// neighbour graph's name table. Adding a node is a copy of the slice tail:
// new nodes are rare next to lookups (tens a day against hundreds of hops
// a second).
type nodeIndex struct {
	keys []string
	ids  []uint32
	// byFirstByte[b] is the range of keys starting with the two hex
	// digits of b: a 1-byte hop, the most common, is one table lookup,
	// and a longer one a search within that range.
	byFirstByte [256][2]int32
}

// rebuildBuckets recomputes byFirstByte after the keys changed.
func (x *nodeIndex) rebuildBuckets() {
	x.byFirstByte = [256][2]int32{}
	for i := 0; i < len(x.keys); {
		b, ok := hexByte(x.keys[i])
		if !ok {
			i++
			continue
		}
		j := i + 1
		for j < len(x.keys) && len(x.keys[j]) >= 2 && x.keys[j][:2] == x.keys[i][:2] {
			j++
		}
		x.byFirstByte[b] = [2]int32{int32(i), int32(j)}
		i = j
	}
}

// hexByte reads the two lower-case hex digits s starts with.
func hexByte[S ~string | ~[]byte](s S) (byte, bool) {
	if len(s) < 2 {
		return 0, false
	}
	hi, ok1 := hexValue(s[0])
	lo, ok2 := hexValue(s[1])
	return hi<<4 | lo, ok1 && ok2
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// reset replaces the index with the given keys (any order, no duplicates).
func (x *nodeIndex) reset(keys []string, ids []uint32) {
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	x.keys = make([]string, len(keys))
	x.ids = make([]uint32, len(keys))
	for i, o := range order {
		x.keys[i], x.ids[i] = keys[o], ids[o]
	}
	x.rebuildBuckets()
}

func (x *nodeIndex) len() int { return len(x.keys) }

// add inserts a key; it reports false when the key is already there.
func (x *nodeIndex) add(key string, id uint32) bool {
	i, found := slices.BinarySearch(x.keys, key)
	if found {
		return false
	}
	x.keys = slices.Insert(x.keys, i, key)
	x.ids = slices.Insert(x.ids, i, id)
	x.rebuildBuckets()
	return true
}

// remove deletes a key; it reports false when the key was not there.
func (x *nodeIndex) remove(key string) bool {
	i, found := slices.BinarySearch(x.keys, key)
	if !found {
		return false
	}
	x.keys = slices.Delete(x.keys, i, i+1)
	x.ids = slices.Delete(x.ids, i, i+1)
	x.rebuildBuckets()
	return true
}

// candidates returns the ids of the nodes whose key starts with prefix
// (lower-case hex of an indexed length), in key order. The slice aliases
// the index: use it before the next add or remove.
func (x *nodeIndex) candidates(prefix []byte) []uint32 {
	if !indexedPrefixLength(len(prefix)) {
		return nil
	}
	b, ok := hexByte(prefix)
	if !ok {
		return nil
	}
	lo, hi := int(x.byFirstByte[b][0]), int(x.byFirstByte[b][1])
	if len(prefix) == 2 || lo == hi {
		return x.ids[lo:hi]
	}
	for lo < hi && comparePrefix(x.keys[lo], prefix) < 0 {
		lo++
	}
	end := lo
	for end < hi && comparePrefix(x.keys[end], prefix) == 0 {
		end++
	}
	return x.ids[lo:end]
}

// comparePrefix compares the first len(p) bytes of k with p; a key shorter
// than p compares below it, so it never matches.
func comparePrefix(k string, p []byte) int {
	n := min(len(k), len(p))
	for i := 0; i < n; i++ {
		switch {
		case k[i] < p[i]:
			return -1
		case k[i] > p[i]:
			return 1
		}
	}
	if len(k) < len(p) {
		return -1
	}
	return 0
}

// hop is one path_json entry as lower-case hex.
type hop struct {
	hex [16]byte
	n   int // hex digits; 0 for an entry too long to be a hop
}

func (h *hop) prefix() []byte { return h.hex[:h.n] }

// maxHops bounds the entries read from one path_json: 64 path bytes of
// 1-byte hashes is the most a frame can carry.
const maxHops = 64

// parsePathJSON reads the hops of a path_json written by the writer
// (`["7D1D","DA2A"]`) into buf, lower-cased, without allocating. An entry
// longer than 16 hex digits is kept as a hop that matches nothing. A value
// that is not such an array yields no hops.
func parsePathJSON(s string, buf *[maxHops]hop) []hop {
	out := buf[:0]
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return out
	}
	i := 1
	for i < len(s)-1 && len(out) < maxHops {
		if s[i] == ',' || s[i] == ' ' {
			i++
			continue
		}
		if s[i] != '"' {
			return buf[:0]
		}
		end := strings.IndexByte(s[i+1:], '"')
		if end < 0 {
			return buf[:0]
		}
		v := s[i+1 : i+1+end]
		var h hop
		if len(v) <= len(h.hex) {
			h.n = len(v)
			for k := 0; k < len(v); k++ {
				c := v[k]
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				h.hex[k] = c
			}
		}
		out = append(out, h)
		i += end + 2
	}
	return out
}

// noNode marks a hop that resolved to nothing.
const noNode = ^uint32(0)

// resolveHops is CoreScope's resolvePathWithContext over the index and the
// graph as they count for observation obs received at ts (unix seconds):
// out[i] is the id of the node hop i resolves to, or noNode. from is the
// advert's own node (or noNode): it anchors the first hop, and it and
// every node already on the path are excluded from later hops, since a
// packet does not pass a node twice.
func (p *pathState) resolveHops(hops []hop, from uint32, ts, obs int64, out []uint32) []uint32 {
	out = out[:0]
	var seenBuf [maxHops + 1]uint32
	seen := seenBuf[:0]
	anchor := from
	if from != noNode {
		seen = append(seen, from)
	}
	for i := range hops {
		cands := p.index.candidates(hops[i].prefix())
		r := p.resolveHop(cands, hops[i].prefix(), anchor, seen, ts, obs)
		out = append(out, r)
		if r != noNode {
			seen = append(seen, r)
		}
		anchor = r
	}
	return out
}

// resolveHop settles one hop among its candidates: the only one (unless
// already on the path), or among several the only one not on the path
// that is adjacent to the anchor.
func (p *pathState) resolveHop(cands []uint32, prefix []byte, anchor uint32, seen []uint32, ts, obs int64) uint32 {
	switch len(cands) {
	case 0:
		return noNode
	case 1:
		if slices.Contains(seen, cands[0]) {
			return noNode
		}
		return cands[0]
	}
	if anchor == noNode {
		return noNode
	}
	match, survivors := noNode, 0
	consider := func(c uint32) bool {
		if slices.Contains(seen, c) || !p.graph.adjacent(anchor, c, ts, obs) {
			return true
		}
		survivors++
		match = c
		return survivors < 2
	}
	// Walk whichever list is shorter: the nodes sharing the prefix (a
	// 1-byte prefix is shared by every 256th node of the mesh) or the
	// anchor's neighbours.
	if nbrs := p.graph.neighbours(anchor); len(nbrs) < len(cands) {
		for _, c := range nbrs {
			if p.isNode(c) && hasPrefix(p.graph.names.name(c), prefix) && !consider(c) {
				break
			}
		}
	} else {
		for _, c := range cands {
			if !consider(c) {
				break
			}
		}
	}
	if survivors == 1 {
		return match
	}
	return noNode
}

func hasPrefix(s string, p []byte) bool {
	return len(s) >= len(p) && comparePrefix(s, p) == 0
}

// appendResolvedPath appends the resolved_path JSON for the resolution
// (`["<pk>",null,…]`) to dst. ok is false when no hop resolved: the
// column is then NULL, so an upsert keeps an older good value (CoreScope
// #1548).
func (p *pathState) appendResolvedPath(dst []byte, res []uint32) (_ []byte, ok bool) {
	for _, r := range res {
		if r != noNode {
			ok = true
			break
		}
	}
	if !ok {
		return dst, false
	}
	dst = append(dst, '[')
	for i, r := range res {
		if i > 0 {
			dst = append(dst, ',')
		}
		if r == noNode {
			dst = append(dst, "null"...)
			continue
		}
		if p.graph.names.plain[r] {
			dst = append(dst, '"')
			dst = append(dst, p.graph.names.name(r)...)
			dst = append(dst, '"')
		} else {
			dst = appendJSONString(dst, p.graph.names.name(r))
		}
	}
	return append(dst, ']'), true
}

// appendJSONString appends s as a JSON string. Node keys are hex; the
// escaping only matters for a database holding odd keys.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, `\u00`...)
			dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"
