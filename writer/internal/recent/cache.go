package writer

// recentCache is a bounded map that keeps the most recently used entries:
// two generations of at most size entries each. A hit in the old
// generation moves the entry to the current one; when the current one is
// full it becomes the old one and the previous old one is dropped. Lookups
// and inserts are O(1), memory is bounded by 2×size entries, and no entry
// that was used within the last size insertions is ever evicted.
//
// The writer uses it for content hash → transmission and observer id →
// rowid, where what matters is the recent past: the observations of one
// transmission arrive within seconds of each other.
type recentCache[K comparable, V any] struct {
	size     int
	cur, old map[K]V
}

func newRecentCache[K comparable, V any](size int) *recentCache[K, V] {
	if size < 16 {
		size = 16
	}
	return &recentCache[K, V]{size: size, cur: make(map[K]V, size)}
}

func (c *recentCache[K, V]) get(k K) (V, bool) {
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.old[k]
	if ok {
		c.put(k, v)
	}
	return v, ok
}

func (c *recentCache[K, V]) put(k K, v V) {
	c.cur[k] = v
	if len(c.cur) >= c.size {
		c.old = c.cur
		c.cur = make(map[K]V, c.size)
	}
}

// update changes an entry only if it is cached.
func (c *recentCache[K, V]) update(k K, f func(*V)) {
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

func (c *recentCache[K, V]) len() int { return len(c.cur) + len(c.old) }

func (c *recentCache[K, V]) clear() {
	c.cur = make(map[K]V, c.size)
	c.old = nil
}
