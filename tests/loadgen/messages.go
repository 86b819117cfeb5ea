package loadgen

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// radio is what an observer's radio reported for one reception.
type radio struct {
	snr  float64 // dB, a multiple of 0.25 (the radio keeps SNR × 4)
	rssi int     // dBm
}

// envelopeTime formats the publisher's clock as each publisher does:
// UTC ISO 8601 with +00:00 (meshcoretomqtt, packet-capture) or naive
// local time (pyMC_repeater, meshcore-ha).
func (o *Observer) envelopeTime(now time.Time) string {
	switch o.Publisher {
	case PyMCRepeater, MeshcoreHA:
		local := now.UTC().Add(time.Duration(o.LocalOffsetHours) * time.Hour)
		return local.Format("2006-01-02T15:04:05.000000")
	}
	return now.UTC().Format("2006-01-02T15:04:05.000000") + "+00:00"
}

// packetJSON is the `…/packets` payload in the field order and string
// types of the observer's publisher (mqtt-formats.md §2). Fields an
// analyzer must not trust (len, packet_type, route, payload_len, hash) are
// filled the way each publisher fills them.
func (o *Observer) packetJSON(now time.Time, f *frame, raw []byte, rx radio, hash string) []byte {
	rawHex := strings.ToUpper(hex.EncodeToString(raw))
	route := "F"
	if f.route == routeDirect || f.route == routeTransportDirect {
		route = "D"
	}
	snr, rssi := o.formatRadio(rx)
	b := o.newJSON()
	b.field("origin", o.Name)
	b.field("origin_id", o.ID)
	b.field("timestamp", o.envelopeTime(now))
	b.field("type", "PACKET")
	b.field("direction", "rx")
	local := now.UTC().Add(time.Duration(o.LocalOffsetHours) * time.Hour)
	b.field("time", local.Format("15:04:05"))
	b.field("date", fmt.Sprintf("%d/%d/%d", local.Day(), int(local.Month()), local.Year()))
	b.field("len", strconv.Itoa(len(raw)))
	b.field("packet_type", strconv.Itoa(f.ptype))
	b.field("route", route)
	b.field("payload_len", strconv.Itoa(len(f.payload)))
	if o.Publisher == PyMCRepeater {
		rawHex = strings.ToLower(rawHex) // "as stored": the corpus has both cases
	}
	b.field("raw", rawHex)
	b.field("SNR", snr)
	b.field("RSSI", rssi)
	switch o.Publisher {
	case MeshcoreToMQTT:
		b.field("score", strconv.Itoa(int(math.Round(1000*scoreOf(rx)))))
		b.field("duration", strconv.Itoa(40+len(raw)*2))
		b.field("hash", strings.ToUpper(hash))
	case PacketCapture:
		b.field("hash", strings.ToUpper(hash))
	case PyMCRepeater:
		b.field("score", strconv.Itoa(int(math.Round(1000*scoreOf(rx)))))
		b.field("duration", "0")
		b.field("hash", strings.ToUpper(hash))
	case MeshcoreHA:
		b.field("score", "1000")
		b.field("duration", "0")
	}
	return b.close()
}

func scoreOf(rx radio) float64 { return max(0, min(1, (rx.snr+20)/32)) }

// formatRadio writes SNR and RSSI as the publisher does: a truncated
// integer (meshcoretomqtt), a float or "Unknown" (packet-capture), Python's
// str(float) (pyMC), or strings that may be empty (meshcore-ha).
func (o *Observer) formatRadio(rx radio) (snr, rssi string) {
	switch o.Publisher {
	case MeshcoreToMQTT:
		snr, rssi = strconv.Itoa(int(rx.snr)), strconv.Itoa(rx.rssi)
	case PacketCapture:
		snr, rssi = strconv.FormatFloat(rx.snr, 'f', -1, 64), strconv.Itoa(rx.rssi)
		if rx.rssi == -120 { // a radio that reported nothing
			snr, rssi = "Unknown", "Unknown"
		}
	case PyMCRepeater:
		snr, rssi = pyFloat(rx.snr), pyFloat(float64(rx.rssi))
	case MeshcoreHA:
		snr, rssi = strconv.FormatFloat(rx.snr, 'f', -1, 64), strconv.Itoa(rx.rssi)
		if rx.rssi == -119 {
			snr, rssi = "", ""
		}
	}
	if o.UnitSuffix && snr != "Unknown" && snr != "" {
		snr, rssi = snr+"dB", rssi+"dBm"
	}
	return snr, rssi
}

// pyFloat is Python's str(float): always a decimal point.
func pyFloat(v float64) string {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

// statusJSON is a `…/status` payload (mqtt-formats.md §3) with the
// observer's hardware metadata and stats, which advance each time.
func (o *Observer) statusJSON(now time.Time) []byte {
	st := &o.status
	st.uptime += 60
	st.txAir += 3
	st.rxAir += 17
	st.recvErrors++
	b := o.newJSON()
	b.field("status", "online")
	b.field("timestamp", o.envelopeTime(now))
	b.field("origin", o.Name)
	b.field("origin_id", o.ID)
	b.field("radio", o.Radio)
	b.field("model", o.Model)
	b.field("firmware_version", o.Firmware)
	b.field("client_version", o.ClientVersion)
	if o.Publisher == MeshcoreHA {
		b.field("source", "meshcore-ha")
	}
	stats := map[string]any{
		"battery_mv": st.battery, "uptime_secs": st.uptime, "noise_floor": st.noise,
		"tx_air_secs": st.txAir, "rx_air_secs": st.rxAir, "recv_errors": st.recvErrors,
	}
	if o.Publisher == PyMCRepeater {
		stats = map[string]any{"uptime_secs": st.uptime}
	}
	b.raw("stats", stats)
	return b.close()
}

func (o *Observer) newJSON() *jsonBuf {
	return &jsonBuf{asciiOnly: o.Publisher == MeshcoreToMQTT || o.Publisher == PacketCapture}
}

// jsonBuf writes a JSON object with keys in the order given, as the
// publishers' Python dicts do. With asciiOnly it escapes every non-ASCII
// character as \uXXXX (surrogate pairs for emoji), as Python's json.dumps
// does by default (meshcoretomqtt, packet-capture); otherwise UTF-8 is
// written as it is. Neither escapes <, > or & (Go's encoding/json would).
type jsonBuf struct {
	b         []byte
	asciiOnly bool
}

func (j *jsonBuf) key(k string) {
	if len(j.b) == 0 {
		j.b = append(j.b, '{')
	} else {
		j.b = append(j.b, ',')
	}
	j.b = strconv.AppendQuote(j.b, k)
	j.b = append(j.b, ':')
}

func (j *jsonBuf) field(k, v string) {
	j.key(k)
	j.b = append(j.b, '"')
	for _, r := range v {
		switch {
		case r == '"' || r == '\\':
			j.b = append(j.b, '\\', byte(r))
		case r < 0x20:
			j.b = fmt.Appendf(j.b, `\u%04x`, r)
		case r < 0x80 || !j.asciiOnly:
			j.b = utf8.AppendRune(j.b, r)
		case r > 0xFFFF:
			hi, lo := utf16.EncodeRune(r)
			j.b = fmt.Appendf(j.b, `\u%04x\u%04x`, hi, lo)
		default:
			j.b = fmt.Appendf(j.b, `\u%04x`, r)
		}
	}
	j.b = append(j.b, '"')
}

func (j *jsonBuf) raw(k string, v any) {
	j.key(k)
	s, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	j.b = append(j.b, s...)
}

func (j *jsonBuf) close() []byte {
	if len(j.b) == 0 {
		return []byte("{}")
	}
	return append(j.b, '}')
}
