package decoder

import "time"

// NaiveSkewTolerance is how far a naive envelope timestamp may be from the
// receive time before CoreScope records clock skew on the observer
// (mqtt-formats.md §5, packet path step 2).
const NaiveSkewTolerance = 15 * time.Minute

// EnvelopeTime is the `timestamp` of an observer message: the publisher's
// clock, never used for a stored time.
type EnvelopeTime struct {
	// Time is the instant, in UTC. A naive value is read as if it were UTC.
	Time time.Time
	// Naive is true for ISO text without a zone (`2026-03-29T08:27:30.123456`,
	// Python's isoformat of local time, sent by pyMC_Repeater and meshcore-ha).
	Naive bool
	// OK is false when there was no timestamp or it did not parse.
	OK bool
}

// NaiveSkew returns the signed difference Time − receivedAt, and record =
// true when the timestamp is naive and more than NaiveSkewTolerance away:
// the case where CoreScope writes observers.clock_skew_seconds.
func (e EnvelopeTime) NaiveSkew(receivedAt time.Time) (skew time.Duration, record bool) {
	if !e.OK || !e.Naive {
		return 0, false
	}
	skew = e.Time.Sub(receivedAt)
	return skew, skew > NaiveSkewTolerance || skew < -NaiveSkewTolerance
}

func parseEnvelopeTime(v jsonValue) EnvelopeTime {
	if v.kind != kindString || v.escaped {
		return EnvelopeTime{}
	}
	t, naive, ok := parseISOTime(v.raw)
	return EnvelopeTime{Time: t, Naive: naive, OK: ok}
}

// parseISOTime reads YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]: RFC 3339 with
// a zone, or the same without one (naive). Written out by hand because
// time.Parse allocates a zone for every "+00:00".
func parseISOTime(b []byte) (t time.Time, naive bool, ok bool) {
	num := func(i, n int) (int, bool) {
		if i+n > len(b) {
			return 0, false
		}
		v := 0
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false, false
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 2)
	day, ok3 := num(8, 2)
	hour, ok4 := num(11, 2)
	minute, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false, false
	}
	i := 19
	nsec := 0
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		scale := 100000000
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if i-start < 9 {
				nsec += int(b[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == start || i-start > 9 {
			return time.Time{}, false, false
		}
	}
	offset := 0
	switch {
	case i == len(b):
		naive = true
	case b[i] == 'Z' && i+1 == len(b):
	case (b[i] == '+' || b[i] == '-') && i+6 == len(b) && b[i+3] == ':':
		oh, okh := num(i+1, 2)
		om, okm := num(i+4, 2)
		if !okh || !okm || oh > 23 || om > 59 {
			return time.Time{}, false, false
		}
		offset = oh*3600 + om*60
		if b[i] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false, false
	}
	t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).Add(-time.Duration(offset) * time.Second)
	return t, naive, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
