package decoder

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Observer payloads are read by a small bounded scanner instead of
// encoding/json: it validates the whole payload, keeps only the handful of
// keys the writer uses (as slices of the payload, no copies), and refuses
// hostile input after looking at a bounded number of bytes. Unmarshalling
// into map[string]any costs ~40 allocations for a typical packet message;
// this costs one per string the caller keeps.
const (
	// MaxMessageBytes caps an observer payload. Real ones are under 2 KiB;
	// the spool refuses more than 64 KiB by default, so nothing larger is
	// legitimate.
	MaxMessageBytes = 64 << 10
	// MaxJSONDepth caps nesting. Real payloads nest two deep (stats, gps).
	MaxJSONDepth = 16
)

type jsonKind uint8

const (
	kindNone jsonKind = iota
	kindString
	kindNumber
	kindTrue
	kindFalse
	kindNull
	kindObject
	kindArray
)

// jsonValue is one value of the payload, as a slice of it: for a string the
// bytes between the quotes (escapes still in), for a number its text, for
// an object or array its whole span.
type jsonValue struct {
	kind    jsonKind
	raw     []byte
	escaped bool // a string with backslash escapes
}

type scanner struct {
	b   []byte
	pos int
}

func (s *scanner) fail(err error, detail string) error {
	return &MessageError{Err: err, Offset: s.pos, Detail: detail}
}

func (s *scanner) ws() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// openTopObject checks the size cap and positions the scanner inside the
// top-level object.
func openTopObject(payload []byte) (*scanner, error) {
	if len(payload) > MaxMessageBytes {
		return nil, &MessageError{Err: ErrMessageTooLarge, Offset: -1, Detail: itoa(len(payload)) + " bytes, the limit is " + itoa(MaxMessageBytes)}
	}
	s := &scanner{b: payload}
	s.ws()
	if s.pos >= len(s.b) {
		return nil, s.fail(ErrNotJSON, "empty payload")
	}
	if s.b[s.pos] != '{' {
		// Tell "valid JSON of the wrong shape" from "not JSON at all".
		save := s.pos
		if _, err := s.value(1); err == nil {
			s.ws()
			if s.pos == len(s.b) {
				s.pos = save
				return nil, s.fail(ErrNotObject, "")
			}
		}
		s.pos = save
		return nil, s.fail(ErrNotJSON, "expected '{'")
	}
	s.pos++
	return s, nil
}

// objectIter walks the members of one object.
type objectIter struct {
	started bool
	depth   int
}

// next returns the next member; done is true after the closing brace.
func (s *scanner) next(it *objectIter) (key jsonValue, val jsonValue, done bool, err error) {
	s.ws()
	if s.pos >= len(s.b) {
		return key, val, false, s.fail(ErrNotJSON, "unterminated object")
	}
	if s.b[s.pos] == '}' {
		s.pos++
		return key, val, true, nil
	}
	if it.started {
		if s.b[s.pos] != ',' {
			return key, val, false, s.fail(ErrNotJSON, "expected ',' or '}'")
		}
		s.pos++
		s.ws()
	}
	it.started = true
	if s.pos >= len(s.b) || s.b[s.pos] != '"' {
		return key, val, false, s.fail(ErrNotJSON, "expected a string key")
	}
	key, err = s.str()
	if err != nil {
		return key, val, false, err
	}
	s.ws()
	if s.pos >= len(s.b) || s.b[s.pos] != ':' {
		return key, val, false, s.fail(ErrNotJSON, "expected ':'")
	}
	s.pos++
	val, err = s.value(it.depth + 1)
	return key, val, false, err
}

// readObject reads payload, which must be one JSON object, calling fn for
// each top-level member with its name (escapes decoded, see keyBytes; valid
// until fn returns) and value, and validates the whole payload.
func readObject(payload []byte, fn func(key []byte, val jsonValue)) error {
	s, err := openTopObject(payload)
	if err != nil {
		return err
	}
	if err := s.members(1, fn); err != nil {
		return err
	}
	return s.end()
}

// eachMember calls fn for each member of obj, an object value the scanner
// has already validated, which sits at nesting depth depth.
func eachMember(obj jsonValue, depth int, fn func(key []byte, val jsonValue)) error {
	s := &scanner{b: obj.raw, pos: 1}
	return s.members(depth, fn)
}

// members walks the object the scanner is inside (just after its '{').
func (s *scanner) members(depth int, fn func(key []byte, val jsonValue)) error {
	// One buffer for the decoded names of the whole walk: handed to fn,
	// it lives on the heap, and one per member would be an allocation
	// each.
	kb := new([32]byte)
	it := objectIter{depth: depth}
	for {
		key, val, done, err := s.next(&it)
		if err != nil || done {
			return err
		}
		fn(keyBytes(key, kb[:0]), val)
	}
}

// nextElem returns the next element of the array the scanner is inside
// (just after its '['); done is true after the closing bracket.
func (s *scanner) nextElem(first *bool, depth int) (jsonValue, bool, error) {
	s.ws()
	if s.pos >= len(s.b) {
		return jsonValue{}, false, s.fail(ErrNotJSON, "unterminated array")
	}
	if s.b[s.pos] == ']' {
		s.pos++
		return jsonValue{}, true, nil
	}
	if !*first {
		if s.b[s.pos] != ',' {
			return jsonValue{}, false, s.fail(ErrNotJSON, "expected ',' or ']'")
		}
		s.pos++
	}
	*first = false
	v, err := s.value(depth)
	return v, false, err
}

// end checks that nothing but whitespace follows the top-level value.
func (s *scanner) end() error {
	s.ws()
	if s.pos != len(s.b) {
		return s.fail(ErrNotJSON, "data after the top-level object")
	}
	return nil
}

// value reads (and validates) one value at nesting depth depth.
func (s *scanner) value(depth int) (jsonValue, error) {
	s.ws()
	if s.pos >= len(s.b) {
		return jsonValue{}, s.fail(ErrNotJSON, "expected a value")
	}
	start := s.pos
	switch c := s.b[s.pos]; {
	case c == '"':
		return s.str()
	case c == '{' || c == '[':
		if depth > MaxJSONDepth {
			return jsonValue{}, s.fail(ErrTooDeep, "more than "+itoa(MaxJSONDepth)+" levels")
		}
		if err := s.composite(depth); err != nil {
			return jsonValue{}, err
		}
		k := kindObject
		if c == '[' {
			k = kindArray
		}
		return jsonValue{kind: k, raw: s.b[start:s.pos]}, nil
	case c == 't':
		return s.literal("true", kindTrue)
	case c == 'f':
		return s.literal("false", kindFalse)
	case c == 'n':
		return s.literal("null", kindNull)
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	default:
		return jsonValue{}, s.fail(ErrNotJSON, "unexpected character "+strconv.QuoteRune(rune(c)))
	}
}

func (s *scanner) literal(word string, k jsonKind) (jsonValue, error) {
	if len(s.b)-s.pos < len(word) || string(s.b[s.pos:s.pos+len(word)]) != word {
		return jsonValue{}, s.fail(ErrNotJSON, "invalid literal")
	}
	v := jsonValue{kind: k, raw: s.b[s.pos : s.pos+len(word)]}
	s.pos += len(word)
	return v, nil
}

// composite skips an object or array, validating it.
func (s *scanner) composite(depth int) error {
	if s.b[s.pos] == '{' {
		s.pos++
		it := objectIter{depth: depth}
		for {
			_, _, done, err := s.next(&it)
			if err != nil || done {
				return err
			}
		}
	}
	s.pos++ // '['
	first := true
	for {
		s.ws()
		if s.pos >= len(s.b) {
			return s.fail(ErrNotJSON, "unterminated array")
		}
		if s.b[s.pos] == ']' {
			s.pos++
			return nil
		}
		if !first {
			if s.b[s.pos] != ',' {
				return s.fail(ErrNotJSON, "expected ',' or ']'")
			}
			s.pos++
		}
		first = false
		if _, err := s.value(depth + 1); err != nil {
			return err
		}
	}
}

func (s *scanner) str() (jsonValue, error) {
	s.pos++ // opening quote
	start := s.pos
	escaped := false
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		switch {
		case c == '"':
			v := jsonValue{kind: kindString, raw: s.b[start:s.pos], escaped: escaped}
			s.pos++
			return v, nil
		case c == '\\':
			escaped = true
			if s.pos+1 >= len(s.b) {
				return jsonValue{}, s.fail(ErrNotJSON, "unterminated string")
			}
			switch s.b[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				if s.pos+6 > len(s.b) {
					return jsonValue{}, s.fail(ErrNotJSON, "short \\u escape")
				}
				for _, h := range s.b[s.pos+2 : s.pos+6] {
					if unhex(h) >= 16 {
						return jsonValue{}, s.fail(ErrNotJSON, "bad \\u escape")
					}
				}
				s.pos += 6
			default:
				return jsonValue{}, s.fail(ErrNotJSON, "bad escape")
			}
		case c < 0x20:
			return jsonValue{}, s.fail(ErrNotJSON, "control character in string")
		default:
			s.pos++
		}
	}
	return jsonValue{}, s.fail(ErrNotJSON, "unterminated string")
}

func (s *scanner) number() (jsonValue, error) {
	start := s.pos
	b := s.b
	i := s.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		s.pos = i
		return jsonValue{}, s.fail(ErrNotJSON, "bad number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			s.pos = i
			return jsonValue{}, s.fail(ErrNotJSON, "bad number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			s.pos = i
			return jsonValue{}, s.fail(ErrNotJSON, "bad number")
		}
	}
	s.pos = i
	return jsonValue{kind: kindNumber, raw: b[start:i]}, nil
}

// text returns a string value as Go text (escapes decoded, invalid UTF-8
// replaced with U+FFFD as encoding/json does). ok is false for non-strings.
func (v jsonValue) text() (string, bool) {
	if v.kind != kindString {
		return "", false
	}
	if !v.escaped {
		if utf8.Valid(v.raw) {
			return string(v.raw), true
		}
		return strings.ToValidUTF8(string(v.raw), "\uFFFD"), true
	}
	out := unescape(make([]byte, 0, len(v.raw)), v.raw)
	if !utf8.Valid(out) {
		return strings.ToValidUTF8(string(out), "\uFFFD"), true
	}
	return string(out), true
}

// unescape decodes the JSON escapes of a string body already validated by
// the scanner.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := rune(hex4(s[i:]))
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if d := utf16.DecodeRune(r, rune(hex4(s[i+2:]))); d != utf8.RuneError {
						r2 = d
						i += 6
					}
				}
				r = r2
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, e)
		}
	}
	return dst
}

func hex4(b []byte) int {
	return int(unhex(b[0]))<<12 | int(unhex(b[1]))<<8 | int(unhex(b[2]))<<4 | int(unhex(b[3]))
}

// number returns the value as CoreScope reads observer numbers: a JSON
// number, or a string that, trimmed and with a trailing unit (dBm, dB, mW,
// km, mi, m, any case) removed, parses as one. "Unknown", "", null, NaN and
// infinities are not numbers.
func (v jsonValue) number() (float64, bool) {
	var s []byte
	switch v.kind {
	case kindNumber:
		s = v.raw
	case kindString:
		if v.escaped {
			t, _ := v.text()
			s = []byte(t)
		} else {
			s = v.raw
		}
		s = trimSpace(s)
		s = trimSpace(stripUnit(s))
	default:
		return 0, false
	}
	f, ok := parseFloat(s)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

func trimSpace(s []byte) []byte {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// stripUnit removes the first of CoreScope's unit suffixes that matches.
func stripUnit(s []byte) []byte {
	for _, u := range [...]string{"dbm", "db", "mw", "km", "mi", "m"} {
		if len(s) >= len(u) && strings.EqualFold(string(s[len(s)-len(u):]), u) {
			return s[:len(s)-len(u)]
		}
	}
	return s
}

// pow10 holds the powers of ten that are exact in a float64.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat parses a decimal without allocating in the common case (at
// most 15 significant digits, no exponent): the mantissa and the power of
// ten are both exact, so one division is correctly rounded, the same result
// strconv gives. Anything else goes to strconv.ParseFloat.
func parseFloat(s []byte) (float64, bool) {
	if len(s) == 0 {
		return 0, false
	}
	i, neg := 0, false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		i++
	}
	var mant uint64
	digits, frac := 0, 0
	seenDot, simple := false, true
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			if digits > 0 || c != '0' {
				digits++
			}
			mant = mant*10 + uint64(c-'0')
			if seenDot {
				frac++
			}
		case c == '.' && !seenDot:
			seenDot = true
		default:
			simple = false
		}
		if !simple || digits > 15 {
			simple = false
			break
		}
	}
	start := 0
	if s[0] == '-' || s[0] == '+' {
		start = 1
	}
	if simple && i == len(s) && len(s) > start && !(len(s) == start+1 && seenDot) && frac < len(pow10) {
		f := float64(mant) / pow10[frac]
		if neg {
			f = -f
		}
		return f, true
	}
	f, err := strconv.ParseFloat(string(s), 64)
	return f, err == nil
}
