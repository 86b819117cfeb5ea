package decoder

import "encoding/json"

// storedPayload is the decoded_json object CoreScope's server and frontend
// read (mqtt-formats.md §10). Field order, key names, types and omitempty
// follow CoreScope a06ac8a's ingestor exactly, so the stored text is what
// CoreScope would store (encoding/json, HTML escaping on) wherever the
// firmware and CoreScope agree; the values are the firmware's where they
// do not.
type storedPayload struct {
	Type             string       `json:"type"`
	DestHash         string       `json:"destHash,omitempty"`
	SrcHash          string       `json:"srcHash,omitempty"`
	MAC              string       `json:"mac,omitempty"`
	EncryptedData    string       `json:"encryptedData,omitempty"`
	ExtraHash        string       `json:"extraHash,omitempty"`
	AckLen           *int         `json:"ackLen,omitempty"`
	AckAttempt       *int         `json:"ackAttempt,omitempty"`
	AckRand          *int         `json:"ackRand,omitempty"`
	PubKey           string       `json:"pubKey,omitempty"`
	Timestamp        uint32       `json:"timestamp,omitempty"`
	TimestampISO     string       `json:"timestampISO,omitempty"`
	Signature        string       `json:"signature,omitempty"`
	SignatureValid   *bool        `json:"signatureValid,omitempty"`
	Flags            *advertFlags `json:"flags,omitempty"`
	Lat              *float64     `json:"lat,omitempty"`
	Lon              *float64     `json:"lon,omitempty"`
	Name             string       `json:"name,omitempty"`
	Feat1            *int         `json:"feat1,omitempty"`
	Feat2            *int         `json:"feat2,omitempty"`
	ChannelHash      int          `json:"channelHash,omitempty"`
	ChannelHashHex   string       `json:"channelHashHex,omitempty"`
	DecryptionStatus string       `json:"decryptionStatus,omitempty"`
	Channel          string       `json:"channel,omitempty"`
	DataType         *int         `json:"dataType,omitempty"`
	DataLen          *int         `json:"dataLen,omitempty"`
	DecryptedBlob    string       `json:"decryptedBlob,omitempty"`
	Text             string       `json:"text,omitempty"`
	Sender           string       `json:"sender,omitempty"`
	SenderTimestamp  uint32       `json:"sender_timestamp,omitempty"`
	TxtType          int          `json:"txtType,omitempty"`
	EphemeralPubKey  string       `json:"ephemeralPubKey,omitempty"`
	PathData         string       `json:"pathData,omitempty"`
	SNRValues        []float64    `json:"snrValues,omitempty"`
	Tag              uint32       `json:"tag,omitempty"`
	AuthCode         uint32       `json:"authCode,omitempty"`
	TraceFlags       *int         `json:"traceFlags,omitempty"`
	RawHex           string       `json:"raw,omitempty"`
	Error            string       `json:"error,omitempty"`
	Remaining        *int         `json:"remaining,omitempty"`
	InnerType        *int         `json:"innerType,omitempty"`
	InnerTypeName    string       `json:"innerTypeName,omitempty"`
	InnerAckCrc      string       `json:"innerAckCrc,omitempty"`
	InnerAckLen      *int         `json:"innerAckLen,omitempty"`
	InnerAckAttempt  *int         `json:"innerAckAttempt,omitempty"`
	InnerAckRand     *int         `json:"innerAckRand,omitempty"`
	InnerPayload     string       `json:"innerPayload,omitempty"`
	CtrlFlags        string       `json:"ctrlFlags,omitempty"`
	CtrlZeroHop      *bool        `json:"ctrlZeroHop,omitempty"`
	CtrlLength       *int         `json:"ctrlLength,omitempty"`
	CtrlSubtype      string       `json:"ctrlSubtype,omitempty"`
	CtrlFilter       *int         `json:"ctrlFilter,omitempty"`
	CtrlTag          *uint32      `json:"ctrlTag,omitempty"`
	CtrlSince        *uint32      `json:"ctrlSince,omitempty"`
	CtrlNodeType     *int         `json:"ctrlNodeType,omitempty"`
	CtrlSNR          *int         `json:"ctrlSNR,omitempty"`
	CtrlPubKey       string       `json:"ctrlPubKey,omitempty"`
	RawLength        *int         `json:"rawLength,omitempty"`
	FirstByteTag     string       `json:"firstByteTag,omitempty"`
}

// advertFlags is the ADVERT `flags` object.
type advertFlags struct {
	Raw         int  `json:"raw"`
	Type        int  `json:"type"`
	Chat        bool `json:"chat"`
	Repeater    bool `json:"repeater"`
	Room        bool `json:"room"`
	Sensor      bool `json:"sensor"`
	HasLocation bool `json:"hasLocation"`
	HasFeat1    bool `json:"hasFeat1"`
	HasFeat2    bool `json:"hasFeat2"`
	HasName     bool `json:"hasName"`
}

func marshalStored(p *storedPayload) []byte {
	b, err := json.Marshal(p)
	if err != nil {
		// Only NaN/Inf floats can fail, and none are produced (SNRs are
		// int8/4, lat/lon int32/1e6).
		return []byte(`{"type":"` + p.Type + `","error":"unencodable"}`)
	}
	return b
}

func intp(v int) *int         { return &v }
func u32p(v uint32) *uint32   { return &v }
func boolp(v bool) *bool      { return &v }
func f64p(v float64) *float64 { return &v }
