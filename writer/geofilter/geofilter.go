// Package geofilter is CoreScope's geo_filter: which advertised positions
// are the mesh's own (the writer marks or drops the others, per
// foreignAdverts).
package geofilter

import (
	"database/sql"
	"math"

	"github.com/meshingest/meshingest/shared"
)

// Filter is CoreScope's geo_filter: a polygon (with an optional buffer
// around it) or a latitude/longitude box. An advert without a position
// always passes.
type Filter struct {
	polygon  [][2]float64 // [lat, lon] vertices
	bufferKm float64
	latMin   float64
	latMax   float64
	lonMin   float64
	lonMax   float64
	box      bool
}

// New is the filter g configures; nil (every position passes) when g sets
// neither a polygon of at least three vertices nor a bound.
func New(g *shared.GeoFilter) *Filter {
	if g == nil {
		return nil
	}
	if len(g.Polygon) >= 3 {
		return &Filter{polygon: g.Polygon, bufferKm: g.BufferKm}
	}
	if g.LatMin == nil && g.LatMax == nil && g.LonMin == nil && g.LonMax == nil {
		return nil
	}
	f := &Filter{box: true, latMin: -90, latMax: 90, lonMin: -180, lonMax: 180}
	if g.LatMin != nil {
		f.latMin = *g.LatMin
	}
	if g.LatMax != nil {
		f.latMax = *g.LatMax
	}
	if g.LonMin != nil {
		f.lonMin = *g.LonMin
	}
	if g.LonMax != nil {
		f.lonMax = *g.LonMax
	}
	return f
}

// Passes reports whether a position is inside the filter. A nil filter
// and a position without latitude or longitude pass.
func (g *Filter) Passes(lat, lon sql.NullFloat64) bool {
	if g == nil || !lat.Valid || !lon.Valid {
		return true
	}
	y, x := lat.Float64, lon.Float64
	if g.box {
		return y >= g.latMin && y <= g.latMax && x >= g.lonMin && x <= g.lonMax
	}
	if pointInPolygon(y, x, g.polygon) {
		return true
	}
	return g.bufferKm > 0 && distanceToPolygonKm(y, x, g.polygon) <= g.bufferKm
}

// pointInPolygon is the even-odd ray test; vertices are [lat, lon].
func pointInPolygon(lat, lon float64, poly [][2]float64) bool {
	in := false
	for i, j := 0, len(poly)-1; i < len(poly); j, i = i, i+1 {
		yi, xi := poly[i][0], poly[i][1]
		yj, xj := poly[j][0], poly[j][1]
		if (yi > lat) != (yj > lat) && lon < (xj-xi)*(lat-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

// distanceToPolygonKm is the distance from a point to the polygon's
// nearest edge, on a local equirectangular projection (accurate to well
// under a percent at the tens of kilometres a buffer spans).
func distanceToPolygonKm(lat, lon float64, poly [][2]float64) float64 {
	const kmPerDeg = 111.32
	cos := math.Cos(lat * math.Pi / 180)
	proj := func(p [2]float64) (x, y float64) { return (p[1] - lon) * kmPerDeg * cos, (p[0] - lat) * kmPerDeg }
	best := math.Inf(1)
	for i, j := 0, len(poly)-1; i < len(poly); j, i = i, i+1 {
		ax, ay := proj(poly[j])
		bx, by := proj(poly[i])
		dx, dy := bx-ax, by-ay
		t := 0.0
		if l := dx*dx + dy*dy; l > 0 {
			t = max(0, min(1, -(ax*dx+ay*dy)/l))
		}
		px, py := ax+t*dx, ay+t*dy
		best = min(best, math.Hypot(px, py))
	}
	return best
}
