package decoder

import (
	"database/sql"
	"strings"
)

// NeighborsMessage is a `…/neighbors` message (mqtt-formats.md §4a): an
// observer's zero-hop neighbour table, published every 12-336 hours (24 by
// default) with QoS 1 and up to 10 KB by agessaman's observer firmware
// (WITH_MQTT_NEIGHBORS) and by PC. For each neighbour the observer asked
// its region scopes over the air; only a "responded" answer says what the
// neighbour has configured (Neighbor.ScopesConfirmed).
type NeighborsMessage struct {
	Envelope
	// TotalNeighbors is how many neighbours the observer knew,
	// QueriedNeighbors how many it asked; Truncated is true when it left
	// some out (its cap, or the 10 KB payload budget, which drops the
	// least recently heard). A neighbour missing from the list is
	// therefore not gone.
	TotalNeighbors, QueriedNeighbors sql.NullInt64
	Truncated                        sql.NullBool
	// SelfScopes is the observer's own `self.scopes` (comma-separated
	// region names it floods), SelfDefaultScope its `self.default_scope`
	// ("*" for unscoped).
	SelfScopes, SelfDefaultScope sql.NullString
	Neighbors                    []Neighbor
	// Skipped counts entries left out because they were not objects or
	// had no pubkey of 2-64 hex digits (an even number).
	Skipped int
}

// Neighbor is one entry of a NeighborsMessage.
type Neighbor struct {
	// PublicKey is `pubkey` in upper case: normally the whole key, but a
	// discover response may carry a prefix only.
	PublicKey string
	// SNR (dB) and RSSI (dBm) at which the observer last heard it.
	SNR, RSSI sql.NullFloat64
	// HeardSecsAgo is the age of that hearing at publish time; NULL when
	// the observer's clock could not tell (the firmware sends null).
	HeardSecsAgo sql.NullInt64
	// Scopes is the comma-separated region names the neighbour answered,
	// "" for none, as sent.
	Scopes sql.NullString
	// Status is the answer to the scope query: "responded", "timeout" or
	// "send_failed" (others kept as sent).
	Status string
}

// ScopesConfirmed reports whether Scopes is the neighbour's answer. Over
// the air the query often gets none, and a timeout says nothing about
// what the neighbour has configured.
func (n *Neighbor) ScopesConfirmed() bool { return n.Status == "responded" }

// ParseNeighborsMessage reads a neighbors payload. It fails like
// ParseStatusMessage, or with ErrNoNeighbors when there is no `neighbors`
// array.
func ParseNeighborsMessage(payload []byte) (NeighborsMessage, error) {
	var m NeighborsMessage
	var list, self jsonValue
	err := readObject(payload, func(k []byte, val jsonValue) {
		if m.take(k, val) {
			return
		}
		switch string(k) {
		case "total_neighbors":
			m.TotalNeighbors = roundedNumber(val)
		case "queried_neighbors":
			m.QueriedNeighbors = roundedNumber(val)
		case "truncated":
			m.Truncated = parseFlag(val)
		case "self":
			self = val
		case "neighbors":
			list = val
		}
	})
	if err != nil {
		return m, err
	}
	if self.kind == kindObject {
		err := eachMember(self, 2, func(k []byte, v jsonValue) {
			switch string(k) {
			case "scopes":
				m.SelfScopes = nullText(v)
			case "default_scope":
				m.SelfDefaultScope = nullText(v)
			}
		})
		if err != nil {
			return m, err
		}
	}
	if list.kind != kindArray {
		return m, &MessageError{Err: ErrNoNeighbors, Offset: -1}
	}
	as := &scanner{b: list.raw, pos: 1}
	first := true
	for {
		v, done, err := as.nextElem(&first, 3)
		if err != nil {
			return m, err
		}
		if done {
			break
		}
		n, ok, err := parseNeighbor(v)
		if err != nil {
			return m, err
		}
		if !ok {
			m.Skipped++
			continue
		}
		m.Neighbors = append(m.Neighbors, n)
	}
	return m, nil
}

func parseNeighbor(v jsonValue) (Neighbor, bool, error) {
	var n Neighbor
	if v.kind != kindObject {
		return n, false, nil
	}
	var key jsonValue
	err := eachMember(v, 3, func(k []byte, v jsonValue) {
		switch string(k) {
		case "pubkey":
			key = v
		case "snr":
			n.SNR = nullNumber(v)
		case "rssi":
			n.RSSI = nullNumber(v)
		case "heard_secs_ago":
			n.HeardSecsAgo = roundedNumber(v)
		case "scopes":
			n.Scopes = nullText(v)
		case "status":
			n.Status, _ = v.text()
		}
	})
	if err != nil {
		return n, false, err
	}
	pk, _ := key.text()
	pk = strings.TrimSpace(pk)
	if len(pk) < 2 || len(pk) > PublicKeyHexLen || len(pk)%2 != 0 || !isClientKey(pk) {
		return n, false, nil
	}
	n.PublicKey = strings.ToUpper(pk)
	return n, true, nil
}
