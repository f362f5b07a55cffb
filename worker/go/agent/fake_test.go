package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	addr string

	mu         sync.Mutex
	pending    []*pb.Lease
	registers  []*pb.RegisterRequest
	heartbeats []*pb.HeartbeatRequest
	reports    []*pb.RunReport
	chunks     []*pb.OutputChunk
	released   []*pb.LeaseRef
	stale      map[runner.Key]bool // writes naming these fail FAILED_PRECONDITION
	beatsBlind bool                // heartbeats do not check staleness (only reports and output do)
	stopNext   []*pb.LeaseRef      // sent in heartbeat replies until the run is reported
	status     pb.WorkerStatus
	forget     bool // the next heartbeat answers NOT_FOUND
	failReport int  // answer this many Report calls UNAVAILABLE
	changed    chan struct{}
}

func startFake(t *testing.T) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{stale: map[runner.Key]bool{}, status: pb.WorkerStatus_WORKER_STATUS_ACTIVE,
		changed: make(chan struct{}, 1)}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	pb.RegisterWorkerServiceServer(server, f)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	f.addr = listener.Addr().String()
	return f
}

func (f *fakeCoordinator) session(ctx context.Context, s *pb.WorkerSession) error {
	if s.GetSessionToken() != fmt.Sprintf("token-%d", len(f.registers)) {
		return status.Error(codes.NotFound, "unknown session")
	}
	return nil
}

// rejectStale fails the call when refs name a stale lease, as the coordinator does.
func (f *fakeCoordinator) rejectStale(ctx context.Context, refs []*pb.LeaseRef) error {
	var bad []string
	for _, r := range refs {
		if f.stale[runner.Key{TaskID: r.GetTaskId(), Attempt: r.GetAttempt()}] {
			bad = append(bad, fmt.Sprintf("%d:%d", r.GetTaskId(), r.GetAttempt()))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs(StaleLeasesKey, strings.Join(bad, ",")))
	return status.Error(codes.FailedPrecondition, "stale leases")
}

func (f *fakeCoordinator) Register(_ context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers = append(f.registers, req)
	n := len(f.registers)
	return &pb.RegisterResponse{
		Session:   &pb.WorkerSession{WorkerId: int64(n), SessionToken: fmt.Sprintf("token-%d", n)},
		Heartbeat: 0.2, Status: f.status, DeadAfter: 0.6,
	}, nil
}

func (f *fakeCoordinator) Lease(ctx context.Context, req *pb.LeaseRequest) (*pb.LeaseResponse, error) {
	deadline := time.Now().Add(seconds(req.GetWaitS()))
	for {
		f.mu.Lock()
		if err := f.session(ctx, req.GetSession()); err != nil {
			f.mu.Unlock()
			return nil, err
		}
		if len(f.pending) > 0 || !time.Now().Before(deadline) {
			n := min(int(req.GetMaxTasks()), len(f.pending))
			leases := f.pending[:n]
			f.pending = f.pending[n:]
			st := f.status
			f.mu.Unlock()
			return &pb.LeaseResponse{Leases: leases, Status: st}, nil
		}
		f.mu.Unlock()
		time.Sleep(10 * time.Millisecond) // a fake: a real coordinator wakes on new work
	}
}

func (f *fakeCoordinator) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	f.mu.Lock()
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
	if !f.beatsBlind {
		if err := f.rejectStale(ctx, req.GetRunning()); err != nil {
			return nil, err
		}
	}
	return &pb.HeartbeatResponse{Status: f.status, Stop: f.stopNext, Heartbeat: 0.2}, nil
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
	if err := f.rejectStale(ctx, refs); err != nil {
		return nil, err
	}
	f.chunks = append(f.chunks, req.GetChunks()...)
	return &pb.SendOutputResponse{}, nil
}

func (f *fakeCoordinator) Report(ctx context.Context, req *pb.ReportRequest) (*pb.ReportResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	if err := f.session(ctx, req.GetSession()); err != nil {
		return nil, err
	}
	if f.failReport > 0 {
		f.failReport--
		return nil, status.Error(codes.Unavailable, "coordinator restarting")
	}
	var refs []*pb.LeaseRef
	for _, r := range req.GetReports() {
		refs = append(refs, r.GetRef())
	}
	if err := f.rejectStale(ctx, refs); err != nil {
		return nil, err
	}
	f.reports = append(f.reports, req.GetReports()...)
	return &pb.ReportResponse{}, nil
}

func (f *fakeCoordinator) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	if err := f.session(ctx, req.GetSession()); err != nil {
		return nil, err
	}
	f.released = append(f.released, req.GetLeases()...)
	return &pb.ReleaseResponse{}, nil
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
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := New(Config{
		Coordinator: f.addr, WorkerName: "fake-w", Heartbeat: 200 * time.Millisecond,
		Concurrency: 2, KillGrace: time.Second, Handlers: handlers, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
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
	return a, exit
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
