package decoder

import (
	"strconv"
	"unicode/utf8"
)

// Describe answers "what is this packet?": one JSON object for one frame in
// the key schema of the corpus's expected.jsonl (raw, valid, error_code,
// error, content_hash, route_type, route_type_name, payload_type,
// payload_type_name, payload_version, transport_codes, path_len_byte,
// path_hash_size, path_hops, path, payload_len, payload,
// payload_error_code, payload_error), plus decoded_json: the object the
// writer would store, or null for a frame the firmware drops. valid reports
// whether the frame passed the firmware's checks. It is what
// `meshingest decode` prints.
func Describe(rawHex string, opts Options) (out []byte, valid bool) {
	w := &jsonObject{}
	w.key("raw").str(rawHex)
	f, err := DecodeFrame(rawHex)
	if err != nil {
		fe := err.(*FrameError)
		w.key("valid").boolean(false)
		w.key("error_code").str(string(fe.Code))
		w.key("error").str(fe.Detail)
		w.key("content_hash").null()
		if f.HeaderKnown() {
			w.key("route_type").int(int64(f.Route))
			w.key("payload_type").int(int64(f.Type))
			w.key("payload_version").int(int64(f.Version))
		}
		w.key("decoded_json").null()
		return w.close(), false
	}
	p := DecodePacket(f, opts)
	w.key("valid").boolean(true)
	w.key("content_hash").str(f.Hash.String())
	w.key("route_type").int(int64(f.Route))
	w.key("route_type_name").str(f.Route.String())
	w.key("payload_type").int(int64(f.Type))
	w.key("payload_type_name").str(f.Type.String())
	w.key("payload_version").int(int64(f.Version))
	w.key("transport_codes")
	if f.HasTransportCodes {
		w.raw("[" + strconv.Itoa(int(f.TransportCodes[0])) + "," + strconv.Itoa(int(f.TransportCodes[1])) + "]")
	} else {
		w.null()
	}
	w.key("path_len_byte").int(int64(f.PathLenByte))
	w.key("path_hash_size").int(int64(f.PathHashSize))
	w.key("path_hops").int(int64(f.PathHops))
	w.key("path").strs(f.HeaderPathHex())
	w.key("payload_len").int(int64(len(f.Payload)))
	w.key("payload")
	if p.PayloadErr != nil {
		w.null()
		w.key("payload_error_code").str(string(p.PayloadErr.Code))
		w.key("payload_error").str(p.PayloadErr.Detail)
	} else {
		describePayload(w, p)
	}
	w.key("decoded_json").raw(string(p.DecodedJSON()))
	return w.close(), true
}

func describePayload(w *jsonObject, p *Packet) {
	f := &p.Frame
	o := &jsonObject{}
	switch {
	case p.Peer != nil:
		m := p.Peer
		o.key("dest_hash").str(hexUpperString([]byte{m.DestHash}))
		o.key("src_hash").str(hexUpperString([]byte{m.SrcHash}))
		o.key("mac").str(hexLowerString(m.MAC[:]))
		cipherFields(o, m.Ciphertext)
	case p.Ack != nil:
		o.key("ack_crc").int(int64(p.Ack.CRC))
		o.key("ack_crc_wire_hex").str(hexLowerString(f.Payload[:4]))
		o.key("ack_extra_hex").str(hexLowerString(p.Ack.Extra))
	case p.Advert != nil:
		describeAdvert(o, p.Advert, f.Payload)
	case p.Group != nil:
		g := p.Group
		o.key("channel_hash").str(hexUpperString([]byte{g.ChannelHash}))
		o.key("mac").str(hexLowerString(g.MAC[:]))
		cipherFields(o, g.Ciphertext)
		if g.Decryption.Status == StatusDecrypted {
			o.key("channel").str(g.Decryption.Channel)
			o.key("channel_key").str(hexLowerString(g.Decryption.Secret))
			if f.Type == TypeGrpTxt {
				o.key("sender_timestamp").int(int64(g.SenderTimestamp))
				o.key("txt_type").int(int64(g.TxtType))
				o.key("attempt").int(int64(g.Attempt))
				o.key("text").str(g.Text)
				o.key("sender").str(g.Sender)
				o.key("message").str(g.Message)
			} else if g.DataErr != "inner too short" {
				o.key("data_type").int(int64(g.DataType))
				o.key("data_len").int(int64(g.DataLen))
				if g.DataErr == "" {
					o.key("data_hex").str(hexLowerString(g.Data))
				} else {
					o.key("data_error").str(g.DataErr)
				}
			} else {
				o.key("data_error").str(g.DataErr)
			}
		}
	case p.AnonReq != nil:
		m := p.AnonReq
		o.key("dest_hash").str(hexUpperString([]byte{m.DestHash}))
		o.key("sender_pubkey").str(hexLowerString(m.SenderPubKey))
		o.key("mac").str(hexLowerString(m.MAC[:]))
		cipherFields(o, m.Ciphertext)
	case p.Trace != nil:
		t := p.Trace
		o.key("tag").int(int64(t.Tag))
		o.key("tag_hex").str(hexUpperString([]byte{byte(t.Tag >> 24), byte(t.Tag >> 16), byte(t.Tag >> 8), byte(t.Tag)}))
		o.key("auth_code").int(int64(t.AuthCode))
		o.key("trace_flags").int(int64(t.Flags))
		o.key("trace_hash_size").int(int64(t.HashSize))
		route := splitHex(t.Route, t.HashSize)
		o.key("trace_route").strs(route)
		o.key("trace_route_len").int(int64(len(route)))
		o.key("snr_count").int(int64(len(t.SNRs)))
		o.key("snrs_db").floats(t.SNRs)
	case p.Multipart != nil:
		m := p.Multipart
		o.key("remaining").int(int64(m.Remaining))
		o.key("inner_type").int(int64(m.InnerType))
		o.key("inner_type_name").str(m.InnerType.String())
		o.key("inner_hex").str(hexLowerString(m.Inner))
	case p.Control != nil:
		c := p.Control
		o.key("control_flags").int(int64(c.Flags))
		o.key("sub_type").int(int64(c.SubType))
		o.key("sub_type_name").str(c.SubTypeName())
		tag := func() {
			o.key("tag").int(int64(c.Tag))
			o.key("tag_hex").str(hexUpperString([]byte{byte(c.Tag >> 24), byte(c.Tag >> 16), byte(c.Tag >> 8), byte(c.Tag)}))
		}
		switch c.SubType {
		case 0x8:
			o.key("prefix_only").boolean(c.PrefixOnly)
			o.key("type_filter").int(int64(c.TypeFilter))
			tag()
			if c.HasSince {
				o.key("since").int(int64(c.Since))
			}
		case 0x9:
			o.key("node_type").int(int64(c.NodeType))
			o.key("snr_db").float(float64(c.SNRRaw) / 4)
			tag()
			o.key("pubkey").str(hexLowerString(c.PubKey))
			o.key("pubkey_len").int(int64(len(c.PubKey)))
		}
	default: // RAW_CUSTOM, reserved
		o.key("raw_hex").str(hexLowerString(f.Payload))
	}
	w.raw(string(o.close()))
}

func cipherFields(o *jsonObject, ct []byte) {
	o.key("ciphertext_len").int(int64(len(ct)))
	o.key("ciphertext_block_aligned").boolean(len(ct)%16 == 0)
}

func describeAdvert(o *jsonObject, a *Advert, pl []byte) {
	o.key("pubkey").str(hexLowerString(a.PubKey))
	o.key("timestamp").int(int64(a.Timestamp))
	o.key("signature").str(hexLowerString(a.Signature))
	o.key("appdata_len").int(int64(len(a.Appdata)))
	if a.SignatureChecked {
		o.key("signature_valid").boolean(a.SignatureValid)
		if len(a.Appdata) > 32 {
			o.key("signature_valid_over_full_appdata").boolean(verifyAdvert(pl, len(a.Appdata)))
		}
	}
	o.key("flags")
	if !a.HasFlags {
		o.null()
		return
	}
	o.int(int64(a.Flags))
	o.key("adv_type").int(int64(a.AdvType))
	o.key("role").str(a.FirmwareRole())
	if a.HasLocation {
		o.key("lat").float(a.Lat())
		o.key("lon").float(a.Lon())
		o.key("lat_e6").int(int64(a.LatE6))
		o.key("lon_e6").int(int64(a.LonE6))
	}
	if a.HasFeat1 {
		o.key("feat1").int(int64(a.Feat1))
	}
	if a.HasFeat2 {
		o.key("feat2").int(int64(a.Feat2))
	}
	o.key("appdata_valid").boolean(a.AppdataValid)
	if a.HasName {
		if len(cString(a.NameBytes)) < len(a.NameBytes) {
			o.key("name_has_nul").boolean(true)
		}
		o.key("name").str(a.Name)
		o.key("name_hex").str(hexLowerString(a.NameBytes))
	}
	if len(a.Appdata) > 32 {
		o.key("appdata_beyond_32_hex").str(hexLowerString(a.Appdata[32:]))
	}
}

// jsonObject writes one JSON object with keys in the order they are added.
type jsonObject struct {
	b []byte
}

func (o *jsonObject) key(k string) *jsonObject {
	if len(o.b) == 0 {
		o.b = append(o.b, '{')
	} else {
		o.b = append(o.b, ',')
	}
	o.b = appendJSONString(o.b, k)
	o.b = append(o.b, ':')
	return o
}

func (o *jsonObject) str(s string)    { o.b = appendJSONString(o.b, s) }
func (o *jsonObject) int(v int64)     { o.b = strconv.AppendInt(o.b, v, 10) }
func (o *jsonObject) float(v float64) { o.b = strconv.AppendFloat(o.b, v, 'g', -1, 64) }
func (o *jsonObject) null()           { o.b = append(o.b, "null"...) }
func (o *jsonObject) raw(s string)    { o.b = append(o.b, s...) }
func (o *jsonObject) boolean(v bool)  { o.b = strconv.AppendBool(o.b, v) }
func (o *jsonObject) strs(v []string) {
	o.b = append(o.b, '[')
	for i, s := range v {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = appendJSONString(o.b, s)
	}
	o.b = append(o.b, ']')
}
func (o *jsonObject) floats(v []float64) {
	o.b = append(o.b, '[')
	for i, f := range v {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = strconv.AppendFloat(o.b, f, 'g', -1, 64)
	}
	o.b = append(o.b, ']')
}

func (o *jsonObject) close() []byte {
	if len(o.b) == 0 {
		return []byte("{}")
	}
	return append(o.b, '}')
}

// appendJSONString quotes s for JSON (no HTML escaping: this output is for
// people and tools, not for LIKE searches).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexLower[c>>4], hexLower[c&15])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
