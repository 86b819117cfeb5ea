package receiver

import "testing"

// Every publisher dialect against an iataFilter of SJC: packet forms are
// kept only from a listed region, observer metadata (status, neighbors)
// always, and a topic with no region segment never.
func TestRegionFilter_Pass_Dialects(t *testing.T) {
	f := newRegionFilter([]string{"SJC"})
	const pk = "EC3433BB3ADF1ACAEE0CE117600B0CA473705486EC666137379A1E8CBB7E75F4"
	cases := []struct {
		topic string
		want  bool
	}{
		{"meshcore/SJC/" + pk + "/packets", true},
		{"meshcore/OAK/" + pk + "/packets", false},
		{"meshcore/SJC/" + pk + "/raw", true},
		{"meshcore/OAK/" + pk + "/raw", false},
		{"meshcore/OAK/" + pk + "/status", true},
		{"meshcore/OAK/" + pk + "/neighbors", true},
		{"meshcore/SJC/" + pk + "/neighbors", true},
		{"binary/" + pk, false},
		{"meshcore/packets", false},
		{"meshcore/raw", false},
		{"meshcore/SJC/packets", true}, // a custom template's region segment
	}
	for _, c := range cases {
		if got := f.pass(c.topic); got != c.want {
			t.Errorf("pass(%q) = %v, want %v", c.topic, got, c.want)
		}
	}
	none := newRegionFilter(nil)
	for _, c := range cases {
		if !none.pass(c.topic) {
			t.Errorf("no filter: pass(%q) = false", c.topic)
		}
	}
}
