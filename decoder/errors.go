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
	// ErrNoRaw: a message that carries no frame: a packet message without
	// a non-empty string `raw`, a raw-form message without `data`, an empty
	// binary payload. Real publishers send such envelopes (origin fields
	// only); CoreScope ignores them. It is a drop (ReasonNoRaw), not an
	// unreadable payload.
	ErrNoRaw = errors.New("message carries no packet bytes")
	// ErrNoText: a companion message without `text`; CoreScope ignores these.
	ErrNoText = errors.New("companion message has no text")
	// ErrNoNeighbors: a neighbors message without a `neighbors` array.
	ErrNoNeighbors = errors.New("neighbors message has no neighbors array")
)

// Drop reasons: why a message produces no rows, as the stats file's
// `meshingest.drops` and the reason label of meshingest_writer_drops_total
// name it. A released name never changes (dashboards count on it); new ones
// are snake_case like the ErrorCodes. DropReason maps the decoder's errors
// to them; the writer adds its own (writer/ingest.go) for what only it can
// tell.
const (
	ReasonUnreadable = "unreadable_payload" // *MessageError other than the ones below
	// ReasonInvalidFrame is followed by ":" and the ErrorCode, e.g.
	// invalid_frame:unsupported_version.
	ReasonInvalidFrame  = "invalid_frame"
	ReasonNoRaw         = "no_raw"            // ErrNoRaw, every form
	ReasonNoText        = "companion_no_text" // ErrNoText
	ReasonNoNeighbors   = "no_neighbor_list"  // ErrNoNeighbors
	ReasonNoObserver    = "no_observer_id"    // ErrNoObserver
	ReasonGatewayNotKey = "gateway_not_pubkey"
	// ReasonOwnTransmission: IsOwnTransmission; the writer decides.
	ReasonOwnTransmission = "own_transmission"
	// ReasonDuplicateForm: the second form (`…/packets` and `…/raw`) of one
	// reception; the writer recognises the pair (doc.go, "One reception,
	// two forms").
	ReasonDuplicateForm = "duplicate_form"
)

// DropReasons lists every reason the decoder names, so that counters can
// be created at zero; invalid_frame appears once per ErrorCode.
func DropReasons() []string {
	r := []string{ReasonUnreadable, ReasonNoRaw, ReasonNoText, ReasonNoNeighbors, ReasonNoObserver,
		ReasonGatewayNotKey, ReasonOwnTransmission, ReasonDuplicateForm}
	for _, c := range []ErrorCode{CodeBadHex, CodeTooShort, CodeTooLong, CodeUnsupportedVersion,
		CodePathHashSizeReserved, CodePathTooLong, CodeTruncatedPath, CodePayloadTooLong} {
		r = append(r, ReasonInvalidFrame+":"+string(c))
	}
	return r
}

// DropReason is the drop reason of an error from the Parse* functions,
// ParseObservation, DecodeFrame, ResolveObserver or PacketMessage.Observer,
// and "" for nil or an error the decoder does not return.
func DropReason(err error) string {
	var fe *FrameError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoRaw):
		return ReasonNoRaw
	case errors.Is(err, ErrNoText):
		return ReasonNoText
	case errors.Is(err, ErrNoNeighbors):
		return ReasonNoNeighbors
	case errors.Is(err, ErrNoObserver):
		return ReasonNoObserver
	case errors.Is(err, ErrGatewayNotKey):
		return ReasonGatewayNotKey
	case errors.As(err, &fe):
		return ReasonInvalidFrame + ":" + string(fe.Code)
	}
	var me *MessageError
	if errors.As(err, &me) {
		return ReasonUnreadable
	}
	return ""
}

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
