package recent

import "testing"

func TestCache_Get_KeepsRecentlyUsed(t *testing.T) {
	c := New[int, int](16)
	for i := 0; i < 16; i++ {
		c.Put(i, i*10)
	}
	// 0..15 rotated into the old generation; touching 3 brings it back.
	if v, ok := c.Get(3); !ok || v != 30 {
		t.Fatalf("get(3) = %d, %v; want 30, true", v, ok)
	}
	for i := 100; i < 116; i++ {
		c.Put(i, i)
	}
	if _, ok := c.Get(3); !ok {
		t.Fatal("entry used recently was evicted")
	}
	if _, ok := c.Get(4); ok {
		t.Fatal("entry unused for two generations is still cached")
	}
	if c.Len() > 32 {
		t.Fatalf("len %d exceeds two generations", c.Len())
	}
}

func TestCache_Update_OnlyCachedEntries(t *testing.T) {
	c := New[string, int](16)
	c.Put("a", 1)
	c.Update("a", func(v *int) { *v = 2 })
	c.Update("b", func(v *int) { *v = 3 })
	if v, _ := c.Get("a"); v != 2 {
		t.Fatalf("a = %d, want 2", v)
	}
	if _, ok := c.Get("b"); ok {
		t.Fatal("update created an entry")
	}
	c.Clear()
	if c.Len() != 0 {
		t.Fatalf("len after clear = %d", c.Len())
	}
}
