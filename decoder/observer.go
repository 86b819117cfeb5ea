package decoder

import (
	"database/sql"
	"errors"
	"strings"
)

// Who observed a message. CoreScope takes the observer from topic segment 2
// and nothing else; the dialects without that segment (PC's classic
// `meshcore/packets`, a custom template, `binary/<GATEWAY>`) need another
// source, and these are the rules (mqtt-formats.md §4a).
var (
	// ErrNoObserver: the topic has no observer segment and the payload no
	// origin_id that is a public key. Drop reason ReasonNoObserver.
	ErrNoObserver = errors.New("no observer identity: the topic has no observer segment and origin_id is not a public key")
	// ErrGatewayNotKey: a `binary/<GATEWAY>` topic whose gateway segment is
	// not a public key, so nothing says which observer heard the frame.
	// Drop reason ReasonGatewayNotKey.
	ErrGatewayNotKey = errors.New("binary topic gateway segment is not a public key")
)

// PublicKeyHexLen is the length of a MeshCore public key in hex.
const PublicKeyHexLen = 64

// IsPublicKeyHex reports whether s is a public key in hex: exactly 64 hex
// digits, either case.
func IsPublicKeyHex(s string) bool {
	if len(s) != PublicKeyHexLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if unhex(s[i]) >= 16 {
			return false
		}
	}
	return true
}

// ResolveObserver is the observers.id of a message on topic t whose
// payload carries originID (StatusMessage.OriginID, NeighborsMessage.OriginID;
// for a PacketMessage call its Observer method, which decodes origin_id only
// when the topic has no observer segment):
//
//   - KindBinaryPacket: the gateway segment if it is a public key, in upper
//     case, else ErrGatewayNotKey;
//   - a topic with an observer segment: that segment verbatim, as
//     CoreScope does (even a name like `kpabap`);
//   - otherwise origin_id if it is a public key, in upper case (every
//     publisher's topic template puts the key there in upper case, so the
//     observer's row is the same whichever form it publishes), else
//     ErrNoObserver.
//
// An observer publishing on `meshcore/SJC/<KEY>/packets` and
// `meshcore/packets` (or `binary/<KEY>`) therefore gets one row, provided
// its topic segment is the upper-case key as the publishers write it.
func ResolveObserver(t Topic, originID sql.NullString) (string, error) {
	if t.Kind == KindBinaryPacket {
		if !IsPublicKeyHex(t.ObserverID) {
			return "", ErrGatewayNotKey
		}
		return strings.ToUpper(t.ObserverID), nil
	}
	if t.ObserverID != "" {
		return t.ObserverID, nil
	}
	if originID.Valid {
		if id := strings.TrimSpace(originID.String); IsPublicKeyHex(id) {
			return strings.ToUpper(id), nil
		}
	}
	return "", ErrNoObserver
}

// IsOwnTransmission reports whether frame f, reported by observer
// observerID, can only be the observer's own transmission: an ADVERT of the
// observer's own key that no repeater has carried (zero hops). A radio does
// not receive what it sends, so such a report is a transmit log: agessaman
// firmware publishes its own adverts on `…/raw` (which has no direction
// field) and on `…/packets` with direction "tx". Drop reason
// ReasonOwnTransmission. A report of the observer's advert with hops is a
// real reception of a repeat and is not matched.
func IsOwnTransmission(f *Frame, observerID string) bool {
	if f.Type != TypeAdvert || f.PathHops != 0 || len(f.Payload) < 32 || !IsPublicKeyHex(observerID) {
		return false
	}
	for i, b := range f.Payload[:32] {
		if unhex(observerID[2*i]) != b>>4 || unhex(observerID[2*i+1]) != b&15 {
			return false
		}
	}
	return true
}
