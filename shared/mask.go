package shared

import (
	"net/url"
	"regexp"
)

// userinfoPassword matches the password part of scheme://user:pass@host for
// every scheme CoreScope accepts; CoreScope's server applies the same mask.
var userinfoPassword = regexp.MustCompile(`(?i)\b((?:mqtts?|tcp|ssl|tls|wss?)://[^:/@\s]*:)[^@\s]*@`)

// MaskBrokerURL returns the URL with any password replaced by ****, so it can
// be logged and published in stats files.
func MaskBrokerURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return MaskPasswords(raw)
	}
	if _, has := u.User.Password(); !has {
		return raw
	}
	u.User = url.UserPassword(u.User.Username(), "****")
	// url.String escapes the asterisks; put them back so the result reads
	// the way CoreScope's masking does.
	return userinfoPassword.ReplaceAllString(u.String(), "${1}****@")
}

// MaskPasswords masks every broker URL password inside free text, such as an
// error message from an MQTT library that quotes the URL it failed on.
func MaskPasswords(text string) string {
	return userinfoPassword.ReplaceAllString(text, "${1}****@")
}
