package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "taskgrid.local/worker/gen/taskgridv1"
)

// Several coordinators share one database, so any of them can serve this
// worker's session: the session (worker id and token) rides in every
// request, and whichever coordinator gets it reads it from the database.
// Failing over is therefore only a matter of sending the next call
// elsewhere; registering again is left to the "session lost" rule
// (NOT_FOUND, UNAUTHENTICATED) as before.

// Resolver looks up the addresses of a host name; *net.Resolver is one.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// lookupTimeout bounds one resolution of a coordinator name.
const lookupTimeout = 5 * time.Second

// grpcSchemes are the gRPC target schemes an entry may start with; such an
// entry is dialed as it is, never expanded (as a single address always was).
var grpcSchemes = []string{"unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "passthrough:"}

// entry is one item of the coordinator list, as given.
type entry struct {
	host, port string // HOST:PORT; a host that is not an IP literal is resolved
	target     string // an entry with a gRPC scheme, dialed as it is
}

// parseCoordinators splits a coordinator list: HOST:PORT entries
// ([ADDR]:PORT for IPv6) separated by commas, spaces around them ignored.
func parseCoordinators(list string) ([]entry, error) {
	var entries []entry
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("coordinator list %q has an empty address: "+
				"give HOST:PORT addresses separated by commas", list)
		}
		if slices.ContainsFunc(grpcSchemes, func(s string) bool { return strings.HasPrefix(item, s) }) {
			entries = append(entries, entry{target: item})
			continue
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil || host == "" {
			return nil, fmt.Errorf("bad coordinator address %q: want HOST:PORT ([ADDR]:PORT for IPv6)", item)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("bad coordinator address %q: the port must be a number from 1 to 65535", item)
		}
		entries = append(entries, entry{host: host, port: port})
	}
	return entries, nil
}

// address is one coordinator to dial.
type address struct {
	target string // HOST:PORT (an IP when resolved from a name), or a gRPC target
	name   string // the NAME:PORT it was resolved from, for TLS and :authority; "" if given as is
}

func (a address) String() string {
	if a.name == "" {
		return a.target
	}
	return a.name + " (" + a.target + ")"
}

func addressList(addrs []address) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

func compareAddresses(x, y address) int {
	return cmp.Or(cmp.Compare(x.target, y.target), cmp.Compare(x.name, y.name))
}

// expand turns the entries into addresses, one per record of each name,
// in the resolver's order. A name that cannot be resolved now stays as it
// is (gRPC resolves it when dialing, as with a single address before), so
// a DNS hiccup does not stop the worker; the next round tries again.
func expand(entries []entry, resolver Resolver, log *slog.Logger) []address {
	var out []address
	add := func(a address) {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, e := range entries {
		if e.target != "" {
			add(address{target: e.target})
			continue
		}
		hostPort := net.JoinHostPort(e.host, e.port)
		if _, err := netip.ParseAddr(e.host); err == nil {
			add(address{target: hostPort})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		ips, err := resolver.LookupHost(ctx, e.host)
		cancel()
		if err != nil || len(ips) == 0 {
			log.Warn("cannot resolve a coordinator name; dialing it as it is", "name", hostPort, "error", err)
			add(address{target: hostPort})
			continue
		}
		for _, ip := range ips {
			add(address{target: net.JoinHostPort(ip, e.port), name: hostPort})
		}
	}
	return out
}

// sameSet reports whether x and y hold the same addresses in any order, so
// a DNS server rotating its records does not count as a change.
func sameSet(x, y []address) bool {
	x, y = slices.Clone(x), slices.Clone(y)
	slices.SortFunc(x, compareAddresses)
	slices.SortFunc(y, compareAddresses)
	return slices.Equal(x, y)
}

// coordinators is the worker's channel to its coordinators: one gRPC
// connection to the current address of the list, moved to the next address
// when a call finds the current one away, the call then retried there at
// once. It is a grpc.ClientConnInterface, so the calls made through
// pb.WorkerServiceClient neither know nor care which coordinator answers;
// the session, the leases and the runs live in the Agent and are kept.
// A call fails back to its caller (who backs off) only once it has found
// every address away in a row.
type coordinators struct {
	entries  []entry
	resolver Resolver
	opts     []grpc.DialOption
	pinned   bool // the TLS server name is set: the credentials own the authority
	log      *slog.Logger

	mu     sync.Mutex
	addrs  []address
	index  int // of the current address
	conn   *grpc.ClientConn
	epoch  int // bumped by each move: a failure seen on an older connection moves nothing
	misses int // consecutive failures that moved on; a full round resolves the names again
	closed bool
}

// newCoordinators resolves the entries and makes the connection to the first address (lazily:
// grpc.NewClient connects on the first call).
func newCoordinators(entries []entry, resolver Resolver, opts []grpc.DialOption, pinned bool,
	log *slog.Logger) (*coordinators, error) {
	c := &coordinators{entries: entries, resolver: resolver, opts: opts, pinned: pinned, log: log}
	c.addrs = expand(entries, resolver, log)
	conn, err := c.dial(c.addrs[0])
	if err != nil {
		return nil, err
	}
	c.conn = conn
	if len(c.addrs) > 1 {
		log.Info("coordinator addresses", "addresses", addressList(c.addrs))
	}
	return c, nil
}

// dial makes a connection to a. An address resolved from a name keeps the
// name as its authority, so TLS checks the certificate against the name
// (not the IP) unless the server name was set explicitly.
func (c *coordinators) dial(a address) (*grpc.ClientConn, error) {
	opts := c.opts
	if a.name != "" && !c.pinned {
		opts = append(slices.Clip(opts), grpc.WithAuthority(a.name))
	}
	return grpc.NewClient(a.target, opts...)
}

func (c *coordinators) current() (*grpc.ClientConn, int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn, c.epoch, len(c.addrs)
}

// movesOn says whether a failed call means the coordinator is away: the
// connection cannot be made or was lost (UNAVAILABLE), or a call got no
// answer in time. A Lease that times out is not a sign of that: it
// long-polls, waiting for work.
func movesOn(method string, code codes.Code) bool {
	return code == codes.Unavailable ||
		(code == codes.DeadlineExceeded && method != pb.WorkerService_Lease_FullMethodName)
}

// Invoke makes a unary call on the current coordinator; when that one is
// away it moves to the next address and retries there at once, until the
// call succeeds or every address has failed once.
func (c *coordinators) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	var budget time.Duration
	if deadline, ok := ctx.Deadline(); ok {
		budget = time.Until(deadline)
	}
	for failures := 0; ; {
		conn, epoch, size := c.current()
		err := invoke(ctx, budget, conn, method, args, reply, opts)
		code := status.Code(err)
		switch {
		case errors.Is(ctx.Err(), context.Canceled):
			return err // the caller gave up
		case code == codes.Canceled && c.movedSince(epoch):
			// Another call moved on and closed the connection under this one: go on on the new one.
		case movesOn(method, code):
			c.moveFrom(epoch, code)
			if failures++; failures >= size {
				return err // every address failed in a row: the caller backs off
			}
		default:
			if code != codes.Canceled && code != codes.DeadlineExceeded {
				c.answered()
			}
			return err
		}
	}
}

// invoke makes one attempt of a call. When an earlier attempt timed out,
// it spent the caller's deadline: this one gets the caller's budget anew.
func invoke(ctx context.Context, budget time.Duration, conn *grpc.ClientConn, method string, args, reply any,
	opts []grpc.CallOption) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return conn.Invoke(ctx, method, args, reply, opts...)
	}
	fresh, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	return conn.Invoke(fresh, method, args, reply, opts...)
}

// NewStream opens a stream on the current coordinator. The worker protocol
// has no streaming calls; this completes grpc.ClientConnInterface.
func (c *coordinators) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string,
	opts ...grpc.CallOption) (grpc.ClientStream, error) {
	conn, _, _ := c.current()
	return conn.NewStream(ctx, desc, method, opts...)
}

func (c *coordinators) movedSince(epoch int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch != epoch
}

// answered notes that a coordinator answered: a new round of failures starts from zero.
func (c *coordinators) answered() {
	c.mu.Lock()
	c.misses = 0
	c.mu.Unlock()
}

// moveFrom moves to the next address after a call on the connection of
// epoch failed; a failure on an older connection moves nothing (another
// call moved on already). Once every address has failed in a row, the
// names are resolved again, so that DNS changes are picked up. With a
// single address the connection is kept: gRPC reconnects it by itself.
func (c *coordinators) moveFrom(epoch int, code codes.Code) {
	c.mu.Lock()
	if epoch != c.epoch || c.closed {
		c.mu.Unlock()
		return
	}
	from := c.addrs[c.index]
	next := (c.index + 1) % len(c.addrs)
	if c.misses++; c.misses >= len(c.addrs) {
		c.misses = 0
		// Resolving under the lock holds back the other calls meanwhile, and
		// they would only find the same coordinators away.
		if fresh := expand(c.entries, c.resolver, c.log); !sameSet(fresh, c.addrs) {
			c.log.Info("coordinator addresses changed", "addresses", addressList(fresh))
			c.addrs, next = fresh, 0
		}
	}
	to := c.addrs[next]
	if to == from {
		c.index = next
		c.mu.Unlock()
		return
	}
	conn, err := c.dial(to)
	if err != nil { // only a malformed target: stay on the connection we have
		c.log.Error("cannot dial a coordinator", "address", to.String(), "error", err)
		c.mu.Unlock()
		return
	}
	old := c.conn
	c.conn, c.index = conn, next
	c.epoch++
	c.mu.Unlock()
	c.log.Info("coordinator away, moving to the next one", "from", from.String(), "to", to.String(),
		"code", code.String())
	_ = old.Close()
}

// Close closes the current connection; no call may follow.
func (c *coordinators) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return c.conn.Close()
}
