package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// fakeCoordinator is a scriptable WorkerService: tests queue leases, make
// calls fail, and read back what the worker sent.
type fakeCoordinator struct {
	pb.UnimplementedWorkerServiceServer
	addr   string
	server *grpc.Server
	// database is the fake whose sessions this one serves, as a second
	// coordinator on the same database would; nil: its own.
	database *fakeCoordinator

	mu         sync.Mutex
	pending    []*pb.Lease
	registers  []*pb.RegisterRequest
	heartbeats []*pb.HeartbeatRequest
	reports    []*pb.RunReport
	chunks     []*pb.OutputChunk
	released   []*pb.LeaseRef
	stale      map[runner.Key]bool // writes naming these are answered stale
	oldStyle   bool                // stale: FAILED_PRECONDITION + trailer, nothing applied (the old protocol)
	bareFP     bool                // with oldStyle: FAILED_PRECONDITION without the trailer
	beatsBlind bool                // heartbeats do not check staleness (only reports and output do)
	stopNext   []*pb.LeaseRef      // sent in heartbeat replies until the run is reported
	status     pb.WorkerStatus
	forget     bool // the next heartbeat answers NOT_FOUND
	failReport int  // answer this many Report calls UNAVAILABLE
	// poison (Report) and poisonOut (SendOutput): calls naming these leases
	// answer poisonCode (INTERNAL by default) this many more times (-1: always).
	poison      map[runner.Key]int
	poisonOut   map[runner.Key]int
	outputCalls int // SendOutput calls, failed ones too
	poisonCode  codes.Code
	reportCalls [][]runner.Key // the leases of every Report call, failed ones too
	acceptedRep [][]runner.Key // the leases of every Report call that succeeded
	nameTaken   int            // answer this many Register calls ALREADY_EXISTS (-1: always)
	nameRefusal []time.Time    // when each ALREADY_EXISTS was sent
	down        bool           // every call answers UNAVAILABLE
	hangBeats   bool           // heartbeats get no answer (until the caller gives up)
	leaseCalls  int            // Lease calls received
	leaseAsks   []int32        // the max_tasks of every Lease call
	// takesReports: RegisterResponse.lease_takes_reports, and Lease applies
	// its reports as Report does (ACK+FETCH)
	takesReports bool
	leaseReports [][]runner.Key      // the reports carried by every Lease call, failed ones too
	failLease    int                 // answer this many Lease calls carrying reports UNAVAILABLE (nothing applied)
	sessions     []*pb.WorkerSession // the session of every call that passed the check
	changed      chan struct{}
	// disabledAtOnce: a Lease of a DISABLED worker is answered at once, as coordinators
	// did before they held it open until resume
	disabledAtOnce bool
}

func startFake(t *testing.T) *fakeCoordinator {
	t.Helper()
	return startFakeOn(t, "127.0.0.1:0")
}

// startFakeOn starts a fake listening on listen, with the server options (e.g. TLS).
func startFakeOn(t *testing.T, listen string, opts ...grpc.ServerOption) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{stale: map[runner.Key]bool{}, status: pb.WorkerStatus_WORKER_STATUS_ACTIVE,
		poison: map[runner.Key]int{}, poisonOut: map[runner.Key]int{}, poisonCode: codes.Internal, changed: make(chan struct{}, 1)}
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	f.server = grpc.NewServer(opts...)
	pb.RegisterWorkerServiceServer(f.server, f)
	go func() { _ = f.server.Serve(listener) }()
	t.Cleanup(f.server.Stop)
	f.addr = listener.Addr().String()
	return f
}

// session checks the session of a call (f.mu held), as the coordinator
// does against its database: the token of the latest registration.
func (f *fakeCoordinator) session(ctx context.Context, s *pb.WorkerSession) error {
	if f.down {
		return status.Error(codes.Unavailable, "coordinator going away")
	}
	registers := len(f.registers)
	if f.database != nil {
		f.database.with(func() { registers = len(f.database.registers) })
	}
	if s.GetSessionToken() != fmt.Sprintf("token-%d", registers) {
		return status.Error(codes.NotFound, "unknown session")
	}
	f.sessions = append(f.sessions, s)
	return nil
}

func key(r *pb.LeaseRef) runner.Key {
	return runner.Key{TaskID: r.GetTaskId(), Attempt: r.GetAttempt()}
}

// staleOf splits refs as the coordinator does: the stale ones (answered in
// the response's stale list) and the rest (applied). The old protocol
// (oldStyle) fails the whole call instead: FAILED_PRECONDITION, the stale
// leases in the trailer (unless bareFP), nothing applied.
func (f *fakeCoordinator) staleOf(ctx context.Context, refs []*pb.LeaseRef) ([]*pb.LeaseRef, error) {
	var stale []*pb.LeaseRef
	var bad []string
	seen := map[runner.Key]bool{}
	for _, r := range refs {
		if k := key(r); f.stale[k] && !seen[k] {
			seen[k] = true
			stale = append(stale, &pb.LeaseRef{TaskId: k.TaskID, Attempt: k.Attempt})
			bad = append(bad, fmt.Sprintf("%d:%d", k.TaskID, k.Attempt))
		}
	}
	if len(stale) == 0 || !f.oldStyle {
		return stale, nil
	}
	if !f.bareFP {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(StaleLeasesKey, strings.Join(bad, ",")))
	}
	return nil, status.Error(codes.FailedPrecondition, "stale leases")
}

// poisoned fails a call naming a lease of poison.
func (f *fakeCoordinator) poisoned(poison map[runner.Key]int, refs []*pb.LeaseRef) error {
	for _, r := range refs {
		if n, ok := poison[key(r)]; ok && n != 0 {
			if n > 0 {
				poison[key(r)] = n - 1
			}
			return status.Error(f.poisonCode, "Exception calling application: boom")
		}
	}
	return nil
}

func isStale(stale []*pb.LeaseRef, r *pb.LeaseRef) bool {
	return slices.ContainsFunc(stale, func(s *pb.LeaseRef) bool { return key(s) == key(r) })
}

func (f *fakeCoordinator) Register(_ context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "coordinator going away")
	}
	if f.nameTaken != 0 {
		if f.nameTaken > 0 {
			f.nameTaken--
		}
		f.nameRefusal = append(f.nameRefusal, time.Now())
		return nil, status.Errorf(codes.AlreadyExists, "worker name %q is used by a live worker", req.GetWorkerName())
	}
	f.registers = append(f.registers, req)
	n := len(f.registers)
	return &pb.RegisterResponse{
		Session:   &pb.WorkerSession{WorkerId: int64(n), SessionToken: fmt.Sprintf("token-%d", n)},
		Heartbeat: 0.2, Status: f.status, DeadAfter: 0.6, LeaseTakesReports: f.takesReports,
	}, nil
}

func (f *fakeCoordinator) Lease(ctx context.Context, req *pb.LeaseRequest) (*pb.LeaseResponse, error) {
	deadline := time.Now().Add(seconds(req.GetWaitS()))
	f.mu.Lock()
	f.leaseCalls++
	f.leaseAsks = append(f.leaseAsks, req.GetMaxTasks())
	f.mu.Unlock()
	defer f.notify()
	var staleReports []*pb.LeaseRef
	if len(req.GetReports()) > 0 {
		f.mu.Lock()
		var refs []*pb.LeaseRef
		var keys []runner.Key
		for _, r := range req.GetReports() {
			refs = append(refs, r.GetRef())
			keys = append(keys, key(r.GetRef()))
		}
		f.leaseReports = append(f.leaseReports, keys)
		err := f.session(ctx, req.GetSession())
		if err == nil && f.failLease > 0 {
			f.failLease--
			err = status.Error(codes.Unavailable, "coordinator restarting")
		}
		if err == nil {
			staleReports, err = f.staleOf(ctx, refs)
		}
		if err != nil {
			f.mu.Unlock()
			return nil, err
		}
		for _, r := range req.GetReports() {
			if !isStale(staleReports, r.GetRef()) {
				f.reports = append(f.reports, r)
			}
		}
		f.mu.Unlock()
	}
	for {
		f.mu.Lock()
		if err := f.session(ctx, req.GetSession()); err != nil {
			f.mu.Unlock()
			return nil, err
		}
		if f.disabledAtOnce && f.status == pb.WorkerStatus_WORKER_STATUS_DISABLED {
			f.mu.Unlock()
			return &pb.LeaseResponse{Status: pb.WorkerStatus_WORKER_STATUS_DISABLED, Stale: staleReports}, nil
		}
		if len(f.pending) > 0 || !time.Now().Before(deadline) {
			n := min(int(req.GetMaxTasks()), len(f.pending))
			leases := f.pending[:n]
			f.pending = f.pending[n:]
			st := f.status
			f.mu.Unlock()
			return &pb.LeaseResponse{Leases: leases, Status: st, Stale: staleReports}, nil
		}
		f.mu.Unlock()
		time.Sleep(10 * time.Millisecond) // a fake: a real coordinator wakes on new work
	}
}

func (f *fakeCoordinator) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	f.mu.Lock()
	if f.hangBeats {
		f.mu.Unlock()
		f.notify()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	defer f.mu.Unlock()
	defer f.notify()
	if err := f.session(ctx, req.GetSession()); err != nil {
		return nil, err
	}
	f.heartbeats = append(f.heartbeats, req)
	if f.forget {
		f.forget = false
		f.registers = append(f.registers, nil) // invalidates the current token
		return nil, status.Error(codes.NotFound, "worker declared dead")
	}
	var stale []*pb.LeaseRef
	if !f.beatsBlind {
		var err error
		if stale, err = f.staleOf(ctx, req.GetRunning()); err != nil {
			return nil, err
		}
	}
	return &pb.HeartbeatResponse{Status: f.status, Stop: f.stopNext, Heartbeat: 0.2, Stale: stale}, nil
}

func (f *fakeCoordinator) SendOutput(ctx context.Context, req *pb.SendOutputRequest) (*pb.SendOutputResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	if err := f.session(ctx, req.GetSession()); err != nil {
		return nil, err
	}
	var refs []*pb.LeaseRef
	for _, c := range req.GetChunks() {
		refs = append(refs, &pb.LeaseRef{TaskId: c.GetTaskId(), Attempt: c.GetAttempt()})
	}
	f.outputCalls++
	if err := f.poisoned(f.poisonOut, refs); err != nil {
		return nil, err
	}
	stale, err := f.staleOf(ctx, refs)
	if err != nil {
		return nil, err
	}
	for i, c := range req.GetChunks() {
		if !isStale(stale, refs[i]) {
			f.chunks = append(f.chunks, c)
		}
	}
	return &pb.SendOutputResponse{Stale: stale}, nil
}

func (f *fakeCoordinator) Report(ctx context.Context, req *pb.ReportRequest) (*pb.ReportResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	if err := f.session(ctx, req.GetSession()); err != nil {
		return nil, err
	}
	var refs []*pb.LeaseRef
	var keys []runner.Key
	for _, r := range req.GetReports() {
		refs = append(refs, r.GetRef())
		keys = append(keys, key(r.GetRef()))
	}
	f.reportCalls = append(f.reportCalls, keys)
	if f.failReport > 0 {
		f.failReport--
		return nil, status.Error(codes.Unavailable, "coordinator restarting")
	}
	if err := f.poisoned(f.poison, refs); err != nil {
		return nil, err
	}
	stale, err := f.staleOf(ctx, refs)
	if err != nil {
		return nil, err
	}
	f.acceptedRep = append(f.acceptedRep, keys)
	for _, r := range req.GetReports() {
		if !isStale(stale, r.GetRef()) {
			f.reports = append(f.reports, r)
		}
	}
	return &pb.ReportResponse{Stale: stale}, nil
}

func (f *fakeCoordinator) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	if err := f.session(ctx, req.GetSession()); err != nil {
		return nil, err
	}
	stale, err := f.staleOf(ctx, req.GetLeases())
	if err != nil {
		return nil, err
	}
	for _, r := range req.GetLeases() {
		if !isStale(stale, r) {
			f.released = append(f.released, r)
		}
	}
	return &pb.ReleaseResponse{Stale: stale}, nil
}

func (f *fakeCoordinator) notify() { notify(f.changed) }

// offer queues a lease for the next Lease call.
func (f *fakeCoordinator) offer(taskID int64, function string, args string) runner.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(f.pending, &pb.Lease{
		Ref: &pb.LeaseRef{TaskId: taskID, Attempt: 1}, RunId: taskID * 10, Uuid: fmt.Sprintf("u%d", taskID),
		FunctionName: function, Args: args, Vars: "{}", Timeout: 60, Started: true,
	})
	return runner.Key{TaskID: taskID, Attempt: 1}
}

// with runs fn under the fake's lock.
func (f *fakeCoordinator) with(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// report returns the report of key, or nil.
func (f *fakeCoordinator) report(key runner.Key) *pb.RunReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reports {
		if r.GetRef().GetTaskId() == key.TaskID && r.GetRef().GetAttempt() == key.Attempt {
			return r
		}
	}
	return nil
}

// reportCount is how many times key was reported (accepted).
func (f *fakeCoordinator) reportCount(key runner.Key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.reports {
		if r.GetRef().GetTaskId() == key.TaskID && r.GetRef().GetAttempt() == key.Attempt {
			n++
		}
	}
	return n
}

// callsNaming is how many Report calls (failed ones too) carried key.
func (f *fakeCoordinator) callsNaming(key runner.Key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, call := range f.reportCalls {
		if slices.Contains(call, key) {
			n++
		}
	}
	return n
}

// waitUntil waits for cond, re-checked whenever the fake is called (and every 50 ms).
func (f *fakeCoordinator) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-f.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// startAgent runs an agent against the fake; the returned channel yields its exit code.
func startAgent(t *testing.T, f *fakeCoordinator, handlers map[string]runner.Handler) (*Agent, chan int) {
	t.Helper()
	a, exit, _ := startAgentWith(t, f, handlers, nil)
	return a, exit
}

// startAgentWith is startAgent with a hook run before Run (to change
// settings such as a.outbox.Retry) and the agent's log lines.
func startAgentWith(t *testing.T, f *fakeCoordinator, handlers map[string]runner.Handler,
	before func(*Agent)) (*Agent, chan int, *logLines) {
	t.Helper()
	return startAgentOn(t, Config{Coordinator: f.addr, Handlers: handlers}, before)
}

// startAgentOn is startAgentWith for any coordinator list and settings:
// cfg's name, heartbeat, concurrency, kill grace and logger are the tests'.
func startAgentOn(t *testing.T, cfg Config, before func(*Agent)) (*Agent, chan int, *logLines) {
	t.Helper()
	logs := &logLines{t: t}
	cfg.WorkerName, cfg.Heartbeat, cfg.Concurrency, cfg.KillGrace = "fake-w", 200*time.Millisecond, 2, time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(a)
	}
	exit := make(chan int, 1)
	done := make(chan struct{})
	go func() { exit <- a.Run(); close(done) }()
	t.Cleanup(func() {
		a.RequestExit()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("agent did not exit")
		}
	})
	return a, exit, logs
}

// logLines keeps an agent's log lines (and shows them with -v).
type logLines struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		l.lines = append(l.lines, line)
	}
	if testing.Verbose() {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// matching returns the lines containing every part.
func (l *logLines) matching(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []string
	for _, line := range l.lines {
		ok := true
		for _, part := range parts {
			ok = ok && strings.Contains(line, part)
		}
		if ok {
			found = append(found, line)
		}
	}
	return found
}
