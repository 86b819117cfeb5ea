package spool

import "errors"

// Refusals of Append. Each is counted separately in AppenderStats so the
// receiver can publish why messages were not spooled.
var (
	// ErrPayloadTooLarge refuses a payload over Options.MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("spool: payload too large")
	// ErrFull refuses an append while the spool byte cap or the free-disk
	// floor is reached; the receiver applies its policy (stop acking QoS 1,
	// drop QoS 0 and count it).
	ErrFull = errors.New("spool: full")
	// ErrQueueFull refuses an append while the records not yet on disk
	// already hold Options.QueueMaxBytes of memory.
	ErrQueueFull = errors.New("spool: queue of records not yet on disk is full")
	// ErrClosed refuses an append after Close.
	ErrClosed = errors.New("spool: appender closed")
	// ErrInvalidRecord refuses a record that cannot be encoded (a string
	// over 65,535 bytes, a QoS over 2).
	ErrInvalidRecord = errors.New("spool: invalid record")
)

var (
	// ErrLocked means another appender owns the spool folder.
	ErrLocked = errors.New("spool: folder in use by another appender")
	// ErrCorrupt marks a record or segment that failed its checks.
	ErrCorrupt = errors.New("spool: corrupt")
	// ErrUnsafeFile marks a symlink, a non-regular file or a file owned by
	// another user where a spool file should be.
	ErrUnsafeFile = errors.New("spool: unsafe file")
)

// Error is a failed spool operation on a path, with a hint for the operator.
type Error struct {
	Op   string // what was being done: "open segment", "seal", ...
	Path string
	Err  error
	Hint string // what the operator can do; may be empty
}

func (e *Error) Error() string {
	s := e.Op + " " + e.Path + ": " + e.Err.Error()
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }
