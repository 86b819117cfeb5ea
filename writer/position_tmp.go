package writer

// Position is spool.Position until the spool package lands.
type Position struct {
	Segment uint64
	Seq     uint64
}
