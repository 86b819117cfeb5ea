package writer

import (
	"database/sql"
	"math"
	"strings"
	"unicode"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
)

// Drop reasons of CoreScope's ValidateAdvert (advertProblem).
const (
	dropAdvertPubkey = "invalid_advert_pubkey"
	dropAdvertLat    = "invalid_advert_lat"
	dropAdvertLon    = "invalid_advert_lon"
	dropAdvertName   = "invalid_advert_name"
)

// advertProblem applies CoreScope's ValidateAdvert to a node the firmware
// accepted: a usable public key, a position on the globe, a printable name
// of at most 64 bytes. CoreScope drops an advert that fails (no row at
// all), so a node row never holds a latitude of 95° or a name with control
// characters. It returns "" for a good advert.
func advertProblem(n *decoder.Node) string {
	if len(n.PublicKey) < 16 || strings.Trim(n.PublicKey, "0") == "" {
		return dropAdvertPubkey
	}
	if n.Lat.Valid && (math.IsNaN(n.Lat.Float64) || n.Lat.Float64 < -90 || n.Lat.Float64 > 90) {
		return dropAdvertLat
	}
	if n.Lon.Valid && (math.IsNaN(n.Lon.Float64) || n.Lon.Float64 < -180 || n.Lon.Float64 > 180) {
		return dropAdvertLon
	}
	if len(n.Name) > 64 {
		return dropAdvertName
	}
	for _, r := range n.Name {
		if unicode.IsControl(r) {
			return dropAdvertName
		}
	}
	return ""
}

// nodeAdvertFrom is the nodes row an advert gives. An empty name is NULL,
// so it keeps the name a node already has rather than blanking it.
func nodeAdvertFrom(n *decoder.Node, scope sql.NullString) *NodeAdvert {
	a := &NodeAdvert{
		PublicKey: n.PublicKey,
		Role:      sql.NullString{String: n.Role, Valid: n.Role != ""},
		Name:      sql.NullString{String: n.Name, Valid: n.Name != ""},
		Lat:       n.Lat,
		Lon:       n.Lon,
	}
	if scope.Valid && scope.String != "" {
		a.DefaultScope = scope
	}
	return a
}

// geoFilter is CoreScope's geo_filter: a polygon (with an optional buffer
// around it) or a latitude/longitude box. An advert without a position
// always passes.
type geoFilter struct {
	polygon  [][2]float64 // [lat, lon] vertices
	bufferKm float64
	latMin   float64
	latMax   float64
	lonMin   float64
	lonMax   float64
	box      bool
}

func newGeoFilter(g *shared.GeoFilter) *geoFilter {
	if g == nil {
		return nil
	}
	if len(g.Polygon) >= 3 {
		return &geoFilter{polygon: g.Polygon, bufferKm: g.BufferKm}
	}
	if g.LatMin == nil && g.LatMax == nil && g.LonMin == nil && g.LonMax == nil {
		return nil
	}
	f := &geoFilter{box: true, latMin: -90, latMax: 90, lonMin: -180, lonMax: 180}
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

// passes reports whether a position is inside the filter.
func (g *geoFilter) passes(lat, lon sql.NullFloat64) bool {
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

// advertProblems lists what advertProblem returns, so counters can start
// at zero.
var advertProblems = []string{"invalid_advert_pubkey", "invalid_advert_lat", "invalid_advert_lon", "invalid_advert_name"}
