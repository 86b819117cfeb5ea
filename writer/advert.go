package writer

import (
	"database/sql"
	"math"
	"strings"
	"unicode"

	"github.com/meshingest/meshingest/decoder"
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

// advertProblems lists what advertProblem returns, so counters can start
// at zero.
var advertProblems = []string{"invalid_advert_pubkey", "invalid_advert_lat", "invalid_advert_lon", "invalid_advert_name"}
