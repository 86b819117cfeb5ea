// Package recent is the bounded map the writer and its jobs keep the
// recent past in: content hash → transmission, observer id → rowid, the
// observation keys of recent transmissions.
package recent

// Cache is a bounded map that keeps the most recently used entries: two
// generations of at most size entries each. A hit in the old generation
// moves the entry to the current one; when the current one is full it
// becomes the old one and the previous old one is dropped. Lookups and
// inserts are O(1), memory is bounded by 2×size entries, and no entry that
// was used within the last size insertions is ever evicted.
//
// What matters to its users is the recent past: the observations of one
// transmission arrive within seconds of each other. It is not safe for
// concurrent use.
type Cache[K comparable, V any] struct {
	size     int
	cur, old map[K]V
}

// New returns an empty cache of size entries a generation (at least 16).
func New[K comparable, V any](size int) *Cache[K, V] {
	if size < 16 {
		size = 16
	}
	return &Cache[K, V]{size: size, cur: make(map[K]V, size)}
}

// Get returns the entry for k, and makes it recent.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.old[k]
	if ok {
		c.Put(k, v)
	}
	return v, ok
}

// Put stores v under k.
func (c *Cache[K, V]) Put(k K, v V) {
	c.cur[k] = v
	if len(c.cur) >= c.size {
		c.old = c.cur
		c.cur = make(map[K]V, c.size)
	}
}

// Update changes an entry only if it is cached.
func (c *Cache[K, V]) Update(k K, f func(*V)) {
	if v, ok := c.cur[k]; ok {
		f(&v)
		c.cur[k] = v
		return
	}
	if v, ok := c.old[k]; ok {
		f(&v)
		c.old[k] = v
	}
}

// Len is the number of entries held, both generations.
func (c *Cache[K, V]) Len() int { return len(c.cur) + len(c.old) }

// Clear forgets every entry.
func (c *Cache[K, V]) Clear() {
	c.cur = make(map[K]V, c.size)
	c.old = nil
}
