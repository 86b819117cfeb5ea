package writer

import "testing"

func TestRecentCache_Get_KeepsRecentlyUsed(t *testing.T) {
	c := newRecentCache[int, int](16)
	for i := 0; i < 16; i++ {
		c.put(i, i*10)
	}
	// 0..15 rotated into the old generation; touching 3 brings it back.
	if v, ok := c.get(3); !ok || v != 30 {
		t.Fatalf("get(3) = %d, %v; want 30, true", v, ok)
	}
	for i := 100; i < 116; i++ {
		c.put(i, i)
	}
	if _, ok := c.get(3); !ok {
		t.Fatal("entry used recently was evicted")
	}
	if _, ok := c.get(4); ok {
		t.Fatal("entry unused for two generations is still cached")
	}
	if c.len() > 32 {
		t.Fatalf("len %d exceeds two generations", c.len())
	}
}

func TestRecentCache_Update_OnlyCachedEntries(t *testing.T) {
	c := newRecentCache[string, int](16)
	c.put("a", 1)
	c.update("a", func(v *int) { *v = 2 })
	c.update("b", func(v *int) { *v = 3 })
	if v, _ := c.get("a"); v != 2 {
		t.Fatalf("a = %d, want 2", v)
	}
	if _, ok := c.get("b"); ok {
		t.Fatal("update created an entry")
	}
	c.clear()
	if c.len() != 0 {
		t.Fatalf("len after clear = %d", c.len())
	}
}
