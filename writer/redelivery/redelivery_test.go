package redelivery

import (
	"errors"
	"maps"
	"testing"
)

func TestDeliveries_EncodeDecode_RoundTrip(t *testing.T) {
	d := Deliveries{
		{"eu", 1}: 0xdeadbeef, {"eu", 65535}: 1, {"us-west", 7}: 0, {"", 9}: 1 << 63,
	}
	got := Deliveries{}
	n, err := Decode(Encode(d), func(k Key, v uint64) { got[k] = v })
	if err != nil || n != len(d) || !maps.Equal(got, d) {
		t.Errorf("decoded %v (%d, %v), want %v", got, n, err, d)
	}
	blob := Encode(d)
	for _, cut := range []int{1, 5, len(blob) - 1} {
		if _, err := Decode(blob[:cut], func(Key, uint64) {}); !errors.Is(err, ErrDamaged) {
			t.Errorf("cut at %d of %d: err %v, want ErrDamaged", cut, len(blob), err)
		}
	}
}

func TestDeliveries_RowsToForget_KeepsTheWindow(t *testing.T) {
	rows := []Row{{1, 40}, {2, 30}, {3, 20}, {4, 10}} // plus a new row of 10: 110 kept
	for _, c := range []struct{ window, want int }{
		{200, 0}, {110, 0}, {70, 1}, {40, 2}, {20, 3}, {10, 4}, {1, 4},
	} {
		if got := rowsToForget(rows, 110, c.window); got != c.want {
			t.Errorf("window %d: forget %d rows, want %d", c.window, got, c.want)
		}
	}
}
