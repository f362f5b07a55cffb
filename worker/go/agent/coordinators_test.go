package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "taskgrid.local/worker/gen/taskgridv1"
)

// fakeResolver answers LookupHost from records, counting the lookups.
type fakeResolver struct {
	mu      sync.Mutex
	records map[string][]string
	lookups int
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	ips, ok := r.records[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return slices.Clone(ips), nil
}

func (r *fakeResolver) set(host string, ips ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records[host] = ips
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups
}

// testCoordinators makes a coordinators for list, plain text unless opts say otherwise.
func testCoordinators(t *testing.T, list string, resolver Resolver, opts ...grpc.DialOption) (*coordinators, *logLines) {
	t.Helper()
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	entries, err := parseCoordinators(list)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logLines{t: t}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := newCoordinators(entries, resolver, opts, false, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, logs
}

// deadAddress is a local address where nothing listens (connections are refused).
func deadAddress(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := listener.Addr().String()
	_ = listener.Close()
	return addr
}

func targets(addrs []address) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func TestParseCoordinatorsAcceptsListsAndIPv6Literals(t *testing.T) {
	for list, want := range map[string][]entry{
		"127.0.0.1:50051":                     {{host: "127.0.0.1", port: "50051"}},
		" a.example:1 ,b.example:2,  [::1]:3": {{host: "a.example", port: "1"}, {host: "b.example", port: "2"}, {host: "::1", port: "3"}},
		"[fe80::1%eth0]:50051":                {{host: "fe80::1%eth0", port: "50051"}},
		"unix:/run/tg.sock, 10.0.0.1:7":       {{target: "unix:/run/tg.sock"}, {host: "10.0.0.1", port: "7"}},
	} {
		got, err := parseCoordinators(list)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCoordinators(%q) = %v, %v; want %v", list, got, err, want)
		}
	}
}

func TestParseCoordinatorsRejectsBadInputClearly(t *testing.T) {
	for list, want := range map[string]string{
		"":                "empty address",
		" , ":             "empty address",
		"a:1,":            "empty address",
		"a:1,,b:2":        "empty address",
		"a.example":       `bad coordinator address "a.example": want HOST:PORT`,
		"a:1, b":          `bad coordinator address "b"`,
		"::1:50051":       "[ADDR]:PORT for IPv6",
		":50051":          `bad coordinator address ":50051"`,
		"a:":              "the port must be a number",
		"a:http":          "the port must be a number",
		"a:0":             "the port must be a number",
		"a:65536":         "the port must be a number",
		"[::1]:50051,[::": `bad coordinator address "[::"`,
	} {
		_, err := parseCoordinators(list)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseCoordinators(%q) error %v, want it to say %q", list, err, want)
		}
	}
}

func TestExpandMakesOneAddressPerRecordOfAName(t *testing.T) {
	resolver := &fakeResolver{records: map[string][]string{
		"coord.test": {"10.0.0.1", "10.0.0.2", "fd00::1"},
		"dup.test":   {"10.0.0.9"},
	}}
	entries, err := parseCoordinators("coord.test:50051, 127.0.0.1:7, [::1]:8, gone.test:9, dup.test:1,dup.test:1")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logLines{t: t}
	got := expand(entries, resolver, slog.New(slog.NewTextHandler(logs, nil)))
	want := []address{
		{target: "10.0.0.1:50051", name: "coord.test:50051"},
		{target: "10.0.0.2:50051", name: "coord.test:50051"},
		{target: "[fd00::1]:50051", name: "coord.test:50051"},
		{target: "127.0.0.1:7"}, // IP literals are never looked up
		{target: "[::1]:8"},
		{target: "gone.test:9"}, // unresolvable now: dialed as it is, tried again next round
		{target: "10.0.0.9:1", name: "dup.test:1"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("expand:\n got %v\nwant %v", targets(got), targets(want))
	}
	if resolver.count() != 4 {
		t.Errorf("%d lookups, want one per name entry (4)", resolver.count())
	}
	if len(logs.matching("level=WARN", "cannot resolve", "gone.test:9")) != 1 {
		t.Errorf("want a warning naming the unresolvable name, got %q", logs.matching("cannot resolve"))
	}
}

// A name is resolved at start and again each time every address has
// failed once in a row; records merely rotated are not a change.
func TestNamesAreResolvedAgainAfterEveryAddressFailed(t *testing.T) {
	resolver := &fakeResolver{records: map[string][]string{"coord.test": {"10.0.0.1", "10.0.0.2"}}}
	c, logs := testCoordinators(t, "coord.test:50051", resolver)
	if resolver.count() != 1 || c.addrs[0].target != "10.0.0.1:50051" {
		t.Fatalf("at start: %d lookups, addresses %v", resolver.count(), targets(c.addrs))
	}
	c.moveFrom(c.epoch, codes.Unavailable)
	if resolver.count() != 1 || c.index != 1 || c.epoch != 1 {
		t.Fatalf("after one failure: %d lookups, index %d, epoch %d", resolver.count(), c.index, c.epoch)
	}
	c.moveFrom(0, codes.Unavailable) // a late failure on the old connection moves nothing
	if c.index != 1 || c.epoch != 1 {
		t.Fatalf("a stale failure moved: index %d epoch %d", c.index, c.epoch)
	}
	resolver.set("coord.test", "10.0.0.2", "10.0.0.1") // rotated: the same set
	c.moveFrom(c.epoch, codes.DeadlineExceeded)
	if resolver.count() != 2 || c.index != 0 || c.addrs[0].target != "10.0.0.1:50051" {
		t.Fatalf("after a round: %d lookups, index %d, addresses %v", resolver.count(), c.index, targets(c.addrs))
	}
	resolver.set("coord.test", "10.0.0.3")
	c.moveFrom(c.epoch, codes.Unavailable)
	c.moveFrom(c.epoch, codes.Unavailable)
	if resolver.count() != 3 || !slices.Equal(targets(c.addrs), []string{"coord.test:50051 (10.0.0.3:50051)"}) ||
		c.index != 0 {
		t.Fatalf("after a DNS change: %d lookups, index %d, addresses %v", resolver.count(), c.index, targets(c.addrs))
	}
	if got := logs.matching("level=INFO", "moving to the next one", `from="coord.test:50051 (10.0.0.2:50051)"`,
		`to="coord.test:50051 (10.0.0.1:50051)"`, "code=DeadlineExceeded"); len(got) != 1 {
		t.Errorf("want one INFO line for the move back to the first address, got %q", got)
	}
	if len(logs.matching("level=INFO", "coordinator addresses changed", "10.0.0.3:50051")) != 1 {
		t.Errorf("the DNS change was not logged: %q", logs.matching("changed"))
	}
}

func TestOnlyAnAwayCoordinatorMovesTheWorkerOn(t *testing.T) {
	heartbeat, lease := pb.WorkerService_Heartbeat_FullMethodName, pb.WorkerService_Lease_FullMethodName
	for _, c := range []struct {
		method string
		code   codes.Code
		want   bool
	}{
		{heartbeat, codes.Unavailable, true}, {lease, codes.Unavailable, true},
		{heartbeat, codes.DeadlineExceeded, true}, {pb.WorkerService_Report_FullMethodName, codes.DeadlineExceeded, true},
		{lease, codes.DeadlineExceeded, false}, // a long poll waiting for work
		{heartbeat, codes.NotFound, false}, {heartbeat, codes.Unauthenticated, false},
		{heartbeat, codes.Internal, false}, {heartbeat, codes.OK, false},
	} {
		if got := movesOn(c.method, c.code); got != c.want {
			t.Errorf("movesOn(%s, %s) = %v", c.method, c.code, got)
		}
	}
}

// A call finding its coordinator away is retried at once on the next
// address; it fails back to its caller (who backs off) only when every
// address failed in a row. One address: the connection is kept, as before.
func TestACallTriesEveryAddressOnceBeforeFailing(t *testing.T) {
	dead1, dead2 := deadAddress(t), deadAddress(t)
	live := startFake(t)
	register := func(c *coordinators) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := pb.NewWorkerServiceClient(c).Register(ctx, &pb.RegisterRequest{WorkerName: "w"})
		return err
	}

	c, _ := testCoordinators(t, dead1+","+dead2+","+live.addr, nil)
	if err := register(c); err != nil {
		t.Fatal(err)
	}
	if c.index != 2 || c.epoch != 2 || c.misses != 0 {
		t.Errorf("index %d epoch %d misses %d, want 2 2 0", c.index, c.epoch, c.misses)
	}

	c, _ = testCoordinators(t, dead1+","+dead2, nil)
	if err := register(c); status.Code(err) != codes.Unavailable {
		t.Fatalf("every address away: %v", err)
	}
	if c.index != 0 || c.epoch != 2 {
		t.Errorf("index %d epoch %d: want a move to each address, back to the first", c.index, c.epoch)
	}

	c, _ = testCoordinators(t, dead1, nil)
	conn := c.conn
	if err := register(c); status.Code(err) != codes.Unavailable {
		t.Fatalf("one address away: %v", err)
	}
	if c.conn != conn || c.epoch != 0 {
		t.Error("a single address was dialed again")
	}
}

// Two coordinators on one database: when the first goes away, the worker
// sends its heartbeats and reports to the second with the same session,
// without registering again, and its running task goes on.
func TestFailoverKeepsTheSessionTheLeasesAndTheRuns(t *testing.T) {
	for _, away := range []string{"stopped", "unavailable", "silent"} {
		t.Run(away, func(t *testing.T) {
			first, second := startFake(t), startFake(t)
			second.database = first
			g := newGate()
			a, _, logs := startAgentOn(t, Config{Coordinator: first.addr + " , " + second.addr, Handlers: handlers(g)}, nil)
			key := first.offer(1, "wait", "[]")
			first.waitUntil(t, "a heartbeat holding the run", func() bool {
				first.mu.Lock()
				defer first.mu.Unlock()
				return len(first.heartbeats) > 0 && held(first.heartbeats[len(first.heartbeats)-1], key)
			})
			switch away {
			case "stopped":
				first.server.Stop()
			case "unavailable":
				first.with(func() { first.down = true })
			case "silent": // heartbeats time out (DEADLINE_EXCEEDED)
				first.with(func() { first.hangBeats = true })
			}
			second.waitUntil(t, "a heartbeat on the second coordinator holding the run", func() bool {
				second.mu.Lock()
				defer second.mu.Unlock()
				return len(second.heartbeats) > 0 && held(second.heartbeats[len(second.heartbeats)-1], key)
			})
			if !slices.Contains(a.pool.ActiveKeys(), key) {
				t.Fatal("the run was stopped")
			}
			close(g.release)
			second.waitUntil(t, "the report on the second coordinator", func() bool { return second.report(key) != nil })
			if r := second.report(key); r.GetStatus() != pb.RunStatus_RUN_STATUS_COMPLETED || r.GetResult() != `"done"` {
				t.Errorf("report %v", r)
			}
			first.with(func() {
				if len(first.registers) != 1 {
					t.Errorf("%d registrations on the first coordinator", len(first.registers))
				}
			})
			second.with(func() {
				if len(second.registers) != 0 {
					t.Errorf("the worker registered again with the second coordinator")
				}
				for _, s := range second.sessions {
					if s.GetWorkerId() != 1 || s.GetSessionToken() != "token-1" {
						t.Fatalf("a call to the second coordinator carried session %v", s)
					}
				}
			})
			if got := logs.matching("level=INFO", "moving to the next one", "from="+first.addr, "to="+second.addr); len(got) == 0 {
				t.Error("the move was not logged with both addresses")
			}
			if got := logs.matching("token-"); len(got) != 0 {
				t.Errorf("a session token was logged: %q", got)
			}
		})
	}
}

// selfSigned writes a CA file for a certificate naming only dnsName (no
// IP), and returns the server's TLS credentials.
func selfSigned(t *testing.T, dnsName string) (string, credentials.TransportCredentials) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	server := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	return caFile, server
}

// An address resolved from a name is dialed by IP, but TLS still checks
// the certificate against the name (or the server name, when given).
func TestTLSChecksTheNameAnAddressWasResolvedFrom(t *testing.T) {
	caFile, serverCreds := selfSigned(t, "coord.test")
	f := startFakeOn(t, "127.0.0.1:0", grpc.Creds(serverCreds))
	_, port, _ := net.SplitHostPort(f.addr)
	resolver := &fakeResolver{records: map[string][]string{"coord.test": {"127.0.0.1"}, "alias.test": {"127.0.0.1"}}}

	// By IP alone the certificate does not match: the checks below are real.
	opts, err := Security{CAFile: caFile}.DialOptions(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := testCoordinators(t, f.addr, nil, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewWorkerServiceClient(c).Register(ctx, &pb.RegisterRequest{}); status.Code(err) != codes.Unavailable ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("TLS by IP: %v", err)
	}

	for name, cfg := range map[string]Config{
		"the name":        {Coordinator: "coord.test:" + port, Security: Security{CAFile: caFile}},
		"the server name": {Coordinator: "alias.test:" + port, Security: Security{CAFile: caFile, ServerName: "coord.test"}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Resolver, cfg.Handlers = resolver, handlers(newGate())
			var registered int
			f.with(func() { registered = len(f.registers) })
			startAgentOn(t, cfg, nil)
			f.waitUntil(t, "a registration over TLS", func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				return len(f.registers) > registered
			})
		})
	}
}
