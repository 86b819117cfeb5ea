package decoder

import "errors"

// ErrorCode classifies why a frame or its payload was refused. The values
// are the error classes of docs/reference/meshcore-packets.md §1 and the
// `error_code` / `payload_error_code` strings of the corpus.
type ErrorCode string

// Frame error classes, in the order the firmware checks them.
const (
	CodeBadHex               ErrorCode = "bad_hex"
	CodeTooShort             ErrorCode = "too_short"
	CodeTooLong              ErrorCode = "too_long"
	CodeUnsupportedVersion   ErrorCode = "unsupported_version"
	CodePathHashSizeReserved ErrorCode = "path_hash_size_reserved"
	CodePathTooLong          ErrorCode = "path_too_long"
	CodeTruncatedPath        ErrorCode = "truncated_path"
	CodePayloadTooLong       ErrorCode = "payload_too_long"
	// CodePayloadTooShort marks a valid frame (it has a content hash) whose
	// payload is shorter than its type's handler needs.
	CodePayloadTooShort ErrorCode = "payload_too_short"
)

// FrameError is a frame the firmware would drop, or a payload it could not
// read. Detail is the human-readable reason (the corpus `error` text).
type FrameError struct {
	Code   ErrorCode
	Detail string
}

func (e *FrameError) Error() string { return "meshcore frame: " + string(e.Code) + ": " + e.Detail }

// Is lets errors.Is(err, decoder.ErrTooShort) match any FrameError of that
// class, whatever its detail.
func (e *FrameError) Is(target error) bool {
	t, ok := target.(*FrameError)
	return ok && t.Detail == "" && t.Code == e.Code
}

// Sentinels for errors.Is, one per class.
var (
	ErrBadHex               = &FrameError{Code: CodeBadHex}
	ErrTooShort             = &FrameError{Code: CodeTooShort}
	ErrTooLong              = &FrameError{Code: CodeTooLong}
	ErrUnsupportedVersion   = &FrameError{Code: CodeUnsupportedVersion}
	ErrPathHashSizeReserved = &FrameError{Code: CodePathHashSizeReserved}
	ErrPathTooLong          = &FrameError{Code: CodePathTooLong}
	ErrTruncatedPath        = &FrameError{Code: CodeTruncatedPath}
	ErrPayloadTooLong       = &FrameError{Code: CodePayloadTooLong}
	ErrPayloadTooShort      = &FrameError{Code: CodePayloadTooShort}
)

// Observer-message errors. They are wrapped in a *MessageError that says
// where in the payload the problem is.
var (
	// ErrMessageTooLarge: the payload is over MaxMessageBytes; nothing of it
	// was read.
	ErrMessageTooLarge = errors.New("message payload too large")
	// ErrNotJSON: the payload is not valid JSON (BR's plain-text
	// `meshcore/status` is one such payload).
	ErrNotJSON = errors.New("message payload is not valid JSON")
	// ErrNotObject: valid JSON, but not an object at the top level.
	ErrNotObject = errors.New("message payload is not a JSON object")
	// ErrTooDeep: objects or arrays nested deeper than MaxJSONDepth.
	ErrTooDeep = errors.New("message payload nests JSON deeper than allowed")
	// ErrNoRaw: a packet message without a non-empty string `raw`;
	// CoreScope ignores these.
	ErrNoRaw = errors.New("packet message has no raw frame")
	// ErrNoText: a companion message without `text`; CoreScope ignores these.
	ErrNoText = errors.New("companion message has no text")
)

// MessageError is an observer message that could not be read: Err is one
// of the sentinels above, Offset the byte in the payload where reading
// stopped (-1 when not applicable).
type MessageError struct {
	Err    error
	Offset int
	Detail string
}

func (e *MessageError) Error() string {
	s := "observer message: " + e.Err.Error()
	if e.Offset >= 0 {
		s += " at byte " + itoa(e.Offset)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *MessageError) Unwrap() error { return e.Err }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
