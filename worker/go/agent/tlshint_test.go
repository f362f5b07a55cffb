package agent

import (
	"strings"
	"testing"
)

func TestTLSHintNamesTheSettingToLookAt(t *testing.T) {
	cases := []struct {
		details    string
		tls, cert  bool
		want, none string
	}{
		{"connection error: desc = \"error reading server preface: EOF\"", false, false, "connect with --tls", ""},
		{"tls: failed to verify certificate: x509: certificate signed by unknown authority", true, false, "--tls-ca", ""},
		{"connection error: desc = \"error reading server preface: EOF\"", true, false, "--tls-cert and --tls-key", ""},
		{"x509: certificate is valid for localhost, not example.org", true, true, "--tls-server-name", ""},
		{"tls: first record does not look like a TLS handshake", true, false, "does not speak TLS", ""},
		{"connect: connection refused", false, false, "", "refused"},
	}
	for _, c := range cases {
		got := tlsHint(c.details, c.tls, c.cert)
		if c.want == "" {
			if got != "" {
				t.Errorf("tlsHint(%q) = %q, want no hint (an outage, not TLS)", c.details, got)
			}
			continue
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("tlsHint(%q, tls=%v, cert=%v) = %q, want it to mention %q", c.details, c.tls, c.cert, got, c.want)
		}
	}
}
