package forms

import (
	"errors"
	"testing"
)

// TestMemory_EncodeDecode_RoundTrip: what is stored reads back as the same
// pairs (two observers, two forms, one key twice); a cut list is damaged,
// not a shorter memory.
func TestMemory_EncodeDecode_RoundTrip(t *testing.T) {
	m := NewMemory()
	a, b := Key{"obs-a", 1}, Key{"obs-b", 1 << 63}
	m.Add(a, true, 10_000)
	m.Add(a, true, 10_500)
	m.Add(b, false, 9_000)
	blob := Encode(m, 12_000)
	got, err := Decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	// Each stored reception pairs once with the other form, within Window.
	if !got.Match(a, false, 11_000) || !got.Match(a, false, 11_000) || got.Match(a, false, 11_000) {
		t.Error("obs-a: want two /packets matches for its two /raw receptions, then none")
	}
	if got.Match(b, false, 9_000) || !got.Match(b, true, 9_000+Window.Milliseconds()) {
		t.Error("obs-b: a same-form message matched, or the other form at the window's edge did not")
	}
	for _, cut := range []int{0, 1, 2, len(blob) - 1} {
		if _, err := Decode(blob[:cut]); !errors.Is(err, ErrDamaged) {
			t.Errorf("cut at %d of %d: %v, want ErrDamaged", cut, len(blob), err)
		}
	}
}

// TestMemory_Expire_ForgetsOutsideWindow: a reception more than Window
// before the newest cannot be matched any more and is forgotten.
func TestMemory_Expire_ForgetsOutsideWindow(t *testing.T) {
	m := NewMemory()
	k := Key{"obs", 7}
	m.Add(k, true, 0)
	m.Add(k, true, 5_000)
	m.Expire(Window.Milliseconds() + 1)
	if !m.Match(k, false, 5_000) || m.Match(k, false, 5_000) {
		t.Error("want the reception at 5 s kept and the one at 0 forgotten")
	}
}
