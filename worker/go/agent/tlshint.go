package agent

import "strings"

// tlsHint names the likely cause of a connection failure that TLS settings
// explain, or returns "". gRPC reports these as bare transport errors ("Socket
// closed", a handshake failure); the hint names the setting to look at. The
// Python worker and client give the same hints (client/_channel.py tls_hint).
func tlsHint(details string, tls, clientCert bool) string {
	text := strings.ToLower(details)
	switch {
	case strings.Contains(text, "certificate_verify_failed"),
		strings.Contains(text, "unable to get local issuer"),
		strings.Contains(text, "certificate signed by unknown authority"):
		return "the coordinator's certificate is not signed by a CA this worker trusts: " +
			"pass the CA that signed it with --tls-ca"
	case strings.Contains(text, "first record does not look like a tls handshake"),
		strings.Contains(text, "wrong version"):
		return "the coordinator does not speak TLS: leave out --tls/--tls-ca, or check the address"
	case strings.Contains(text, "certificate is valid for"),
		strings.Contains(text, "doesn't contain any ip sans"):
		return "the coordinator's certificate does not name this address: connect by a name " +
			"it lists, or set --tls-server-name"
	case strings.Contains(text, "socket closed"), strings.Contains(text, "connection reset"),
		strings.Contains(text, "error reading server preface"), strings.Contains(text, "eof"):
		if !tls {
			return "if the coordinator serves TLS, connect with --tls (or --tls-ca CA.pem): " +
				"it closes plain-text connections"
		}
		if !clientCert {
			return "if the coordinator requires client certificates (mTLS), pass --tls-cert " +
				"and --tls-key"
		}
		return "if the coordinator requires client certificates, check that --tls-cert is " +
			"signed by the CA it trusts (--tls-client-ca)"
	}
	return ""
}
