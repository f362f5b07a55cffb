package agent

import (
	"context"
	"os"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "taskgrid.local/worker/gen/taskgridv1"
)

// Registration: who this worker is, and what a refusal means.

// registerOnce registers (again); true on success, false to retry after a backoff.
func (a *Agent) registerOnce() bool {
	cfg := a.cfg
	functions := make([]string, 0, len(cfg.Handlers))
	for name := range cfg.Handlers {
		functions = append(functions, name)
	}
	slices.Sort(functions)
	var capabilities []string
	if cfg.Commands != nil {
		capabilities = append(capabilities, CapabilityCommand)
	}
	hostname, _ := os.Hostname()
	request := &pb.RegisterRequest{
		WorkerName: cfg.WorkerName, GroupNames: cfg.GroupNames, Functions: functions,
		Capacity: int32(max(cfg.Concurrency, 1)), Language: "go", Capabilities: capabilities,
		Heartbeat: cfg.Heartbeat.Seconds(), Hostname: hostname, Pid: int32(os.Getpid()),
		Version: Version,
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRPCTimeout)
	defer cancel()
	response, err := a.rpc.Register(ctx, request)
	if err != nil {
		code := status.Code(err)
		switch code {
		case codes.Unauthenticated, codes.PermissionDenied:
			a.credentialsRejected(err)
		case codes.InvalidArgument: // our flags are wrong
			a.logFailure("Register", err)
			a.leave("registration rejected", 1)
		default:
			a.logFailure("Register", err)
		}
		return false
	}
	a.noteSuccess()
	a.mu.Lock()
	a.authFailures = 0
	a.session = response.GetSession()
	a.heartbeat = cfg.Heartbeat
	if response.GetHeartbeat() > 0 {
		a.heartbeat = seconds(response.GetHeartbeat())
	}
	a.emptyRuns = 0
	a.mu.Unlock()
	a.log.Info("worker registered", "name", cfg.WorkerName, "id", response.GetSession().GetWorkerId(),
		"groups", cfg.GroupNames, "functions", len(functions), "commands", cfg.Commands != nil)
	a.applyStatus(response.GetStatus())
	notify(a.wakeHeartbeat)
	a.reporter.wake()
	return true
}

func (a *Agent) credentialsRejected(err error) {
	a.mu.Lock()
	a.authFailures++
	failures := a.authFailures
	a.mu.Unlock()
	if failures == 1 {
		a.log.Error("coordinator rejected this worker's credentials: give a worker or admin token "+
			"with --token or $TASKGRID_TOKEN", "coordinator", a.cfg.Coordinator,
			"code", status.Code(err).String(), "details", status.Convert(err).Message(),
			"attempts", DefaultAuthAttempts)
	}
	if failures >= DefaultAuthAttempts {
		a.log.Error("credentials rejected too many times in a row: leaving", "failures", failures)
		a.leave("credentials rejected", ExitAuth)
	}
}

func (a *Agent) leave(reason string, code int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leaving == "" {
		a.leaving = reason
		a.exitCode = code
	}
	notify(a.wakeMain)
}
