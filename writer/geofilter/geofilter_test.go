package geofilter

import (
	"database/sql"
	"testing"

	"github.com/meshingest/meshingest/shared"
)

func at(lat, lon float64) (sql.NullFloat64, sql.NullFloat64) {
	return sql.NullFloat64{Float64: lat, Valid: true}, sql.NullFloat64{Float64: lon, Valid: true}
}

// TestFilter_Passes_PolygonWithBuffer: inside the polygon passes, and so
// does a point outside it within the buffer (3 km south of the edge); a
// point 19 km south does not.
func TestFilter_Passes_PolygonWithBuffer(t *testing.T) {
	g := New(&shared.GeoFilter{Polygon: [][2]float64{{37, -122}, {37, -121}, {38, -121}, {38, -122}}, BufferKm: 5})
	for _, c := range []struct {
		lat, lon float64
		want     bool
	}{{37.5, -121.5, true}, {36.97, -121.5, true}, {36.8, -121.5, false}, {37.5, -120, false}} {
		if got := g.Passes(at(c.lat, c.lon)); got != c.want {
			t.Errorf("(%v, %v): passes %v, want %v", c.lat, c.lon, got, c.want)
		}
	}
}

// TestFilter_Passes_Edges: a box with one bound, no filter, a position
// without a longitude, and a polygon of two vertices (not a polygon: no
// filter).
func TestFilter_Passes_Edges(t *testing.T) {
	latMin := 40.0
	box := New(&shared.GeoFilter{LatMin: &latMin})
	if box.Passes(at(39.9, 0)) || !box.Passes(at(40, 179)) {
		t.Error("box with latMin 40: wrong inside/outside")
	}
	if lat, _ := at(0, 0); !box.Passes(lat, sql.NullFloat64{}) {
		t.Error("a position without a longitude did not pass")
	}
	if f := New(nil); f != nil || !f.Passes(at(89, 179)) {
		t.Error("no geo_filter: not nil, or a position did not pass")
	}
	if f := New(&shared.GeoFilter{Polygon: [][2]float64{{0, 0}, {1, 1}}}); f != nil {
		t.Error("a two-vertex polygon made a filter")
	}
}
