package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Security says how the worker reaches its coordinator. The rules are the
// Python client's and worker's: the token rides on every call as
// `authorization: Bearer <token>` metadata, over TLS or plain text alike;
// it is never sent in plain text to another machine unless Insecure is
// set; it never appears in a log line (Security hides it when printed).
type Security struct {
	Token      string
	TLS        bool   // TLS with the system's roots (implied by the file options and ServerName)
	CAFile     string // PEM CA bundle that signed the coordinator's certificate
	CertFile   string // PEM client certificate chain (mTLS), with KeyFile
	KeyFile    string
	ServerName string // name to check the certificate against instead of the host
	Insecure   bool   // allow the token in plain text beyond loopback
}

// String hides the token.
func (s Security) String() string {
	return fmt.Sprintf("Security{token:%t tls:%t ca:%q cert:%q insecure:%t}",
		s.Token != "", s.usesTLS(), s.CAFile, s.CertFile, s.Insecure)
}

func (s Security) usesTLS() bool {
	return s.TLS || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != ""
}

// DialOptions checks the settings against target and reads the PEM files
// now, so a bad setting is reported before the worker starts.
func (s Security) DialOptions(target string) ([]grpc.DialOption, error) {
	if s.Token != "" && !isPrintableToken(s.Token) {
		return nil, errors.New("the token must be printable ASCII without spaces")
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return nil, errors.New("a TLS client certificate and its key go together (--tls-cert and --tls-key)")
	}
	var opts []grpc.DialOption
	if s.usesTLS() {
		config := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cannot read the TLS CA file: %w", err)
			}
			config.RootCAs = x509.NewCertPool()
			if !config.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no PEM certificate in the TLS CA file %s", s.CAFile)
			}
		}
		if s.CertFile != "" {
			pair, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("cannot load the TLS client certificate: %w", err)
			}
			config.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	} else {
		if s.Token != "" && !s.Insecure && !IsLoopbackTarget(target) {
			return nil, fmt.Errorf("refusing to send a token in plain text to %s: use TLS "+
				"(--tls-ca or --tls) or, on a trusted network, --insecure", target)
		}
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if s.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(s.Token)))
	}
	opts = append(opts,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		// gRPC's own reconnect backoff grows to 2 minutes; a restarted coordinator
		// must hear from us well within its dead-worker limit (3 heartbeats).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	return opts, nil
}

// bearer adds the token to every call. It does not require TLS itself:
// DialOptions already refused plain text beyond loopback.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (b bearer) RequireTransportSecurity() bool { return false }

func isPrintableToken(token string) bool {
	for _, r := range token {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}

// IsLoopbackTarget reports whether a gRPC target (HOST:PORT, dns:, ipv4:,
// unix:) is this machine.
func IsLoopbackTarget(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	for _, scheme := range []string{"dns:", "ipv4:", "ipv6:", "passthrough:"} {
		if rest, ok := strings.CutPrefix(target, scheme); ok {
			target = rest[strings.LastIndex(rest, "/")+1:] // dns://resolver/host:port
			break
		}
	}
	var hosts []string
	for _, address := range strings.Split(target, ",") {
		address = strings.TrimSpace(address)
		if host, _, err := net.SplitHostPort(address); err == nil {
			hosts = append(hosts, host)
		} else {
			hosts = append(hosts, strings.Trim(address, "[]"))
		}
	}
	for _, host := range hosts {
		if !isLoopbackHost(host) {
			return false
		}
	}
	return len(hosts) > 0
}

func isLoopbackHost(host string) bool {
	host = strings.ToLower(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
