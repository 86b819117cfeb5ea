package receiver

import "strings"

// regionFilter is a source's iataFilter. Observers publish on
// meshcore/<IATA>/<OBSERVER>/<kind>; the filter keeps packet messages
// (`packets`, `raw`) whose region segment is listed and passes every status
// and neighbors message, whatever its region: CoreScope applies a source's
// iataFilter to packets only (observer metadata is still recorded), and a
// neighbors report is observer metadata too. The segment is compared as it
// is, as CoreScope does. A topic without a region segment (`binary/<GW>`,
// PC's classic `meshcore/packets`) cannot be shown to be in a listed region
// and is filtered, as CoreScope filters `meshcore/packets`: such publishers
// belong on a source without an iataFilter.
type regionFilter map[string]bool

func newRegionFilter(iatas []string) regionFilter {
	if len(iatas) == 0 {
		return nil
	}
	f := regionFilter{}
	for _, r := range iatas {
		f[r] = true
	}
	return f
}

// pass reports whether a message on topic is kept.
func (f regionFilter) pass(topic string) bool {
	if f == nil {
		return true
	}
	parts := strings.SplitN(topic, "/", 5)
	if len(parts) >= 4 && (parts[3] == "status" || parts[3] == "neighbors") {
		return true
	}
	return len(parts) >= 2 && f[parts[1]]
}
