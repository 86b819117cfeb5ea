package decoder

import (
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"testing"
)

// The stored forms for one frame of each kind. The decoded_json strings are
// CoreScope's shapes (mqtt-formats.md §10), byte for byte where CoreScope
// and the firmware agree (the ACK, TRACE, MULTIPART, GRP_DATA and CONTROL
// lines are the reference's own examples).
func TestPacket_StoredForms(t *testing.T) {
	opts := corpusOptions(t, false)
	null := sql.NullString{}
	cases := []struct {
		name, raw, decoded string
		channelHash        sql.NullString
		fromPubkey         sql.NullString
		pathJSON           string
	}{
		{"ack", "0D04B891647EBB40BA70", `{"type":"ACK","extraHash":"70ba40bb","ackLen":4}`, null, null, `["B8","91","64","7E"]`},
		{"ack 6 bytes", "0D00A1B2C3D40017", `{"type":"ACK","extraHash":"d4c3b2a1","ackLen":6,"ackAttempt":0,"ackRand":23}`, null, null, `[]`},
		{"trace: route hashes in path_json", "2604302D0D2359FEE7B100000000006733D63367", `{"type":"TRACE","pathData":"6733d63367","snrValues":[12,11.25,3.25,8.75],"tag":2984771161,"traceFlags":0}`, null, null, `["67","33","D6","33","67"]`},
		{"trace 2-byte route", "260130040302010A0B0C0D01AABBCCDD", `{"type":"TRACE","pathData":"aabbccdd","snrValues":[12],"tag":16909060,"authCode":218893066,"traceFlags":1}`, null, null, `["AABB","CCDD"]`},
		{"multipart ack", "2A015A13A1B2C3D4", `{"type":"MULTIPART","remaining":1,"innerType":3,"innerTypeName":"ACK","innerAckCrc":"d4c3b2a1","innerAckLen":4}`, null, null, `["5A"]`},
		{"grp_data: no channel_hash column", "1900D9A0A73E0FB2CE3932029D92DABBE88CFDA0A3", `{"type":"GRP_DATA","channelHash":217,"channelHashHex":"D9","decryptionStatus":"decrypted","channel":"#test","dataType":65280,"dataLen":5,"decryptedBlob":"68656c6c6f"}`, null, null, `[]`},
		{"control discover resp: ctrlSNR raw int8", "2E0092DC35333E5B4FBB374D26E77A3AF0A0E3D34A7174131BBEBF2341EE948B6F4B13CF800C928F", `{"type":"CONTROL","raw":"92dc35333e5b4fbb374d26e77a3af0a0e3d34a7174131bbebf2341ee948b6f4b13cf800c928f","ctrlFlags":"92","ctrlZeroHop":true,"ctrlLength":38,"ctrlSubtype":"DISCOVER_RESP","ctrlTag":1530802997,"ctrlNodeType":2,"ctrlSNR":-36,"ctrlPubKey":"4fbb374d26e77a3af0a0e3d34a7174131bbebf2341ee948b6f4b13cf800c928f"}`, null, null, `[]`},
		{"control discover req", "2E0080040102030400000000", `{"type":"CONTROL","raw":"80040102030400000000","ctrlFlags":"80","ctrlZeroHop":true,"ctrlLength":10,"ctrlSubtype":"DISCOVER_REQ","ctrlFilter":4,"ctrlTag":67305985,"ctrlSince":0}`, null, null, `[]`},
		{"control discover req too short", "2E00800401", `{"type":"CONTROL","raw":"800401","error":"too short","ctrlFlags":"80","ctrlZeroHop":true,"ctrlLength":3,"ctrlSubtype":"DISCOVER_REQ"}`, null, null, `[]`},
		{"raw custom", "3E00DEADBEEF01", `{"type":"RAW_CUSTOM","raw":"deadbeef01","rawLength":5,"firstByteTag":"DE"}`, null, null, `[]`},
		{"reserved type", "31000102030405", `{"type":"UNKNOWN","raw":"0102030405"}`, null, null, `[]`},
		{"empty REQ payload", "0100", `{"type":"REQ","error":"too short"}`, null, null, `[]`},
		{"short advert", "1100" + "AB", `{"type":"ADVERT","raw":"ab","error":"too short for advert"}`, null, null, `[]`},
		{"short grp_txt keeps enc_", "150011C3C1", `{"type":"GRP_TXT","raw":"11c3c1","error":"too short"}`, text("enc_11"), null, `[]`},
		{"advert", "11007E7662676F7F0850A8A355BAAFBFC1EB7B4174C340442D7D7161C9474A2C94006CE7CF682E58408DD8FCC51906ECA98EBF94A037886BDADE7ECD09FD92B839491DF3809C9454F5286D1D3370AC31A34593D569E9A042A3B41FD331DFFB7E18599CE1E60992A076D50238C5B8F85757375354522F50756765744D65736820436F75676172",
			`{"type":"ADVERT","pubKey":"7e7662676f7f0850a8a355baafbfc1eb7b4174c340442d7d7161c9474a2c9400","timestamp":1758455660,"timestampISO":"2025-09-21T11:54:20.000Z","signature":"2e58408dd8fcc51906eca98ebf94a037886bdade7ecd09fd92b839491df3809c9454f5286d1d3370ac31a34593d569e9a042a3b41fd331dffb7e18599ce1e609","signatureValid":true,"flags":{"raw":146,"type":2,"chat":false,"repeater":true,"room":false,"sensor":false,"hasLocation":true,"hasFeat1":false,"hasFeat2":false,"hasName":true},"lat":47.543968,"lon":-122.108616,"name":"WW7STR/PugetMesh Cougar"}`,
			null, text("7e7662676f7f0850a8a355baafbfc1eb7b4174c340442d7d7161c9474a2c9400"), `[]`},
		{"grp_txt decrypted", "15833fa002860ccae0eed9ca78b9ab0775d477c1f6490a398bf4edc75240", `{"type":"CHAN","channelHash":202,"channelHashHex":"CA","decryptionStatus":"decrypted","channel":"#bot","text":"Roy B V4: P","sender":"Roy B V4","sender_timestamp":1772919297}`, text("#bot"), null, `["3FA002","860CCA","E0EED9"]`},
		{"grp_txt no key", "150013752F15A1BF3C018EB1FC4F26B5FAEB417BB0F1AE8FF07655484EBAA05CB9A927D689", `{"type":"GRP_TXT","mac":"752f","encryptedData":"15a1bf3c018eb1fc4f26b5faeb417bb0f1ae8ff07655484ebaa05cb9a927d689","channelHash":19,"channelHashHex":"13","decryptionStatus":"no_key"}`, text("enc_13"), null, `[]`},
		{"grp_txt bad mac", "150011C2C1354D619BAE9590E4D177DB7EEAF982F5BDCF78005D75157D9535FA90178F785D", `{"type":"GRP_TXT","mac":"c2c1","encryptedData":"354d619bae9590e4d177db7eeaf982f5bdcf78005d75157d9535fa90178f785d","channelHash":17,"channelHashHex":"11","decryptionStatus":"decryption_failed"}`, text("enc_11"), null, `[]`},
		{"grp_txt txt_type 1", "1500D9C367F261ACD146FE2538D3EABA8AC5D265E27D16A6EC97B939A174D7CA7394763DE3", `{"type":"CHAN","channelHash":217,"channelHashHex":"D9","decryptionStatus":"decrypted","channel":"#test","text":"carol: not plain","sender":"carol","sender_timestamp":1700000200,"txtType":1}`, text("#test"), null, `[]`},
		{"grp_txt 32-byte secret", "1500FD06951FEB19A6C0ECF87F634516AEF328CA33B753DF756BC3D198E2ACD37D2766841D", `{"type":"CHAN","channelHash":253,"channelHashHex":"FD","decryptionStatus":"decrypted","channel":"corpus-256bit","text":"bob: 256-bit channel test","sender":"bob","sender_timestamp":1700000100}`, text("corpus-256bit"), null, `[]`},
		{"anon_req", "1E015F5754AF4E36FB37D58BE06A87AA8F97C23D0A1F42EC66ECED68875175540404A496141B071D2809885DE13090A8F813B9151927", `{"type":"ANON_REQ","destHash":"57","mac":"141b","encryptedData":"071d2809885de13090a8f813b9151927","ephemeralPubKey":"54af4e36fb37d58be06a87aa8f97c23d0a1f42ec66eced68875175540404a496"}`, null, null, `["5F"]`},
		{"path", "2105F464C77E411279399EFE1942B8A3FFA10F54D9C602FF2C8CF4", `{"type":"PATH","destHash":"12","srcHash":"79","mac":"399e","pathData":"fe1942b8a3ffa10f54d9c602ff2c8cf4"}`, null, null, `["F4","64","C7","7E","41"]`},
	}
	for _, c := range cases {
		f, err := DecodeFrame(c.raw)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		p := DecodePacket(f, opts)
		if got := string(p.DecodedJSON()); got != c.decoded {
			t.Errorf("%s: decoded_json\n got  %s\n want %s", c.name, got, c.decoded)
		}
		if got := p.ChannelHash(); got != c.channelHash {
			t.Errorf("%s: channel_hash %+v, want %+v", c.name, got, c.channelHash)
		}
		if got := p.FromPubkey(); got != c.fromPubkey {
			t.Errorf("%s: from_pubkey %+v, want %+v", c.name, got, c.fromPubkey)
		}
		if got := f.PathJSON(); got != c.pathJSON {
			t.Errorf("%s: path_json %s, want %s", c.name, got, c.pathJSON)
		}
	}
}

func TestPacket_Node_RolesAndLocation(t *testing.T) {
	opts := corpusOptions(t, false)
	const synth = "110098BD2F189A932D99833B89A45C05277C8AEC1BA511DED8025D1EA19834161C1F0078E768"
	cases := []struct {
		name, raw, role, nodeName string
		lat, lon                  sql.NullFloat64
		valid                     bool
	}{
		{"no appdata: companion", synth + "5517687C51C1031C35B37AB136686DD7D933DD8DCB7D68BA22A44C9DA8F9268EAB6DE830E7727C8D9221532D158F74628ACB117CCF19C1C040FA8179AAFD030C", "companion", "", sql.NullFloat64{}, sql.NullFloat64{}, true},
		{"type 0: none", synth + "F9801577629C00CEB88532AD202B11CE53C42BBB17A16B4DC09D353DC2A57ED3E1530C485201E78AD4C3890B764E4C49DC51D0769DB5A491751994964BDF3F0B804E6F54797065", "none", "NoType", sql.NullFloat64{}, sql.NullFloat64{}, true},
		{"chat: companion", synth + "C61D5016ED481C1E4548AF1B7FAE9518EF08CCE40513780DFB32237ADF2533F55A571B196826C71CF8889C83073F1FC92297B6C488F1CF3708A801A5BB64A50581636F727075732D63686174", "companion", "corpus-chat", sql.NullFloat64{}, sql.NullFloat64{}, true},
		{"room with location", synth + "7742E2BF83ABA4B1E07CD4F10EB5EAAFE5C40CD239C78D644F922BD2E4A04F2C17046140678C7234B047B5A4F3FB90EA619E103FB091C8DAF9550D337FAF7D0B930034FBFD54450309436F7270757320526F6F6D", "room", "Corpus Room", num(-33.8688), num(151.2093), true},
		{"sensor NUL tail: no telemetry", synth + "817D252F8CB2944BF7AE48CF56E13361273FA073B2921CE7446299F9A32640470DACFFBA7383C592D6286F4AA3CD9A8E8B5673F059F31FB71D4C848E760209058454656D703100100EC409", "sensor", "Temp1", sql.NullFloat64{}, sql.NullFloat64{}, true},
		{"bad signature", synth + "AE8BF4B23958808A094C15650BB7758559C2B543B3D84A1884D18AC2FFA2B2AE744D997AD9CDDDE85D22999504DE1735094F95BAFD46C79A8220D1F2F2E1880492346640023807B4F8436F7271757320527074722031", "repeater", "Corqus Rptr 1", num(37.7749), num(-122.4194), false},
	}
	for _, c := range cases {
		f, err := DecodeFrame(c.raw)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		n, ok := DecodePacket(f, opts).Node()
		if !ok || n.Role != c.role || n.Name != c.nodeName || n.Lat != c.lat || n.Lon != c.lon || n.SignatureValid != c.valid ||
			n.PublicKey != "98bd2f189a932d99833b89a45c05277c8aec1ba511ded8025d1ea19834161c1f" {
			t.Errorf("%s: %+v", c.name, n)
		}
	}
	// With validation off every advert counts as valid and decoded_json has
	// no signatureValid.
	f, _ := DecodeFrame(cases[len(cases)-1].raw)
	p := DecodePacket(f, Options{})
	if n, _ := p.Node(); !n.SignatureValid {
		t.Error("unchecked advert counted invalid")
	}
	if s := string(p.DecodedJSON()); contains(s, "signatureValid") {
		t.Errorf("signatureValid without validation: %s", s)
	}
}

func TestKeyRing_Priority(t *testing.T) {
	testKey := HashtagKey("#test")
	ring, err := NewKeyRing(KeyRingConfig{
		ChannelKeys:  map[string]string{"public": PublicChannelKey, "#test": "00112233445566778899aabbccddeeff"},
		HashChannels: []string{"test", " "},
		Rainbow:      []byte(`{"#test":"` + hexLowerString(testKey[:]) + `","bad":"xyz","public":"8b3387e9c5cdea6ac9e5edbaa115cd72"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The explicit #test key beats the derived one: a real #test message no
	// longer decrypts.
	f, _ := DecodeFrame("1500D914083BF749E8F733242BA51DD59F8A40B732C235C9DE6B729A0A966E266B0F8881A6")
	if p := DecodePacket(f, Options{Keys: ring}); p.ChannelHash().String != "enc_D9" {
		t.Errorf("explicit key did not win: %+v", p.ChannelHash())
	}
	pub, _ := DecodeFrame("150011C3C1354D619BAE9590E4D177DB7EEAF982F5BDCF78005D75157D9535FA90178F785D")
	if p := DecodePacket(pub, Options{Keys: ring}); p.ChannelHash().String != "Public" {
		t.Errorf("public not normalised: %+v", p.ChannelHash())
	}
	if ring.Len() != 2 || len(ring.SkippedRainbow()) != 1 {
		t.Errorf("len %d skipped %v", ring.Len(), ring.SkippedRainbow())
	}
	if _, err := NewKeyRing(KeyRingConfig{ChannelKeys: map[string]string{"x": "abc"}}); err == nil {
		t.Error("bad explicit key accepted")
	}
	if _, err := NewKeyRing(KeyRingConfig{Rainbow: []byte(`["#a"]`)}); err == nil {
		t.Error("bad rainbow accepted")
	}
}

func TestKeyRing_RainbowDecryptsTransportVector(t *testing.T) {
	// meshcore-decoder's #ottawa transport packet is a #testing message;
	// only the rainbow file has that channel.
	f, err := DecodeFrame("14FA1A0000034E927D596EA23622BCB4D5945E49348165AF7DABA3F5DCEED85F430E0856DB5B591E86AB3363BC00E1BA30776698F72FC57C7168E66A4875CDB710F3C175FC2B3FE75A036EF14FA59A709062D3A9FF7014F2E7A8512C")
	if err != nil {
		t.Fatal(err)
	}
	p := DecodePacket(f, corpusOptions(t, true))
	if p.ChannelHash().String != "#testing" || p.Group.Sender != "MrAlders0n" || p.Scope != text("#ottawa") {
		t.Errorf("%+v %+v %+v", p.ChannelHash(), p.Group, p.Scope)
	}
	if p := DecodePacket(f, Options{}); p.Scope != text("") {
		t.Errorf("unmatched transport scope %+v, want empty string", p.Scope)
	}
	plain, _ := DecodeFrame("150011C3C1354D619BAE9590E4D177DB7EEAF982F5BDCF78005D75157D9535FA90178F785D")
	if p := DecodePacket(plain, Options{}); p.Scope.Valid {
		t.Errorf("flood scope %+v, want NULL", p.Scope)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// The stack-buffer HMACs agree with crypto/hmac, including for inputs
// longer than any valid payload.
func TestHMAC_MatchesCryptoHMAC(t *testing.T) {
	k := HashtagKey("#ottawa")
	for _, n := range []int{0, 1, 100, MaxPayloadBytes, MaxPayloadBytes + 1, 1000} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		h := hmac.New(sha256.New, k[:])
		h.Write([]byte{byte(TypeGrpTxt)})
		h.Write(payload)
		if got, want := TransportCode(k, TypeGrpTxt, payload), clampCode(h.Sum(nil)); got != want {
			t.Errorf("n=%d: transport code %d, want %d", n, got, want)
		}
		ring, _ := NewKeyRing(KeyRingConfig{HashChannels: []string{"#test"}})
		tk := HashtagKey("#test")
		key := ring.byHash[ChannelHash(tk[:])][0]
		var hk [32]byte
		copy(hk[:], key.secret)
		m := hmac.New(sha256.New, hk[:])
		m.Write(payload)
		sum := m.Sum(nil)
		if !key.macMatches(sum[:2], payload) || key.macMatches([]byte{sum[0] ^ 1, sum[1]}, payload) {
			t.Errorf("n=%d: channel MAC disagrees with crypto/hmac", n)
		}
	}
}
