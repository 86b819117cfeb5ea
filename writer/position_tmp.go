package writer

import "time"

// Position is spool.Position until the spool package lands.
type Position struct {
	Segment uint64
	Seq     uint64
}

// Record is spool.Record until the spool package lands.
type Record struct {
	Seq        uint64
	ReceivedAt time.Time
	Source     string
	Broker     string
	Topic      string
	QoS        byte
	Retained   bool
	Duplicate  bool
	MessageID  uint16
	Payload    []byte
}
