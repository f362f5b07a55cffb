package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

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
			a.leave("registration rejected", ExitRejected)
		case codes.AlreadyExists:
			a.nameTaken(err)
		default:
			sec := a.cfg.Security
			hint := tlsHint(status.Convert(err).Message(), sec.usesTLS(), sec.CertFile != "")
			if hint != "" && (code == codes.Unavailable || code == codes.Unknown) {
				a.credentialsRejectedBecause(err, "a TLS setting, likely: "+hint)
			} else {
				a.logFailure("Register", err)
			}
		}
		return false
	}
	a.noteSuccess()
	a.mu.Lock()
	if !a.nameTakenAt.IsZero() {
		a.log.Info("worker name free again", "name", cfg.WorkerName,
			"waited", time.Since(a.nameTakenAt).Round(time.Millisecond).String())
	}
	a.nameTakenAt = time.Time{}
	if d := response.GetDeadAfter(); d > 0 {
		a.deadAfter = seconds(d)
	}
	a.authFailures = 0
	a.session = response.GetSession()
	a.takesReports = response.GetLeaseTakesReports()
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
	a.credentialsRejectedBecause(err, "give a worker or admin token with --token or $TASKGRID_TOKEN")
}

// credentialsRejectedBecause counts a registration refused for this worker's
// credentials (a token, or a TLS setting: fix says which) and leaves after a few.
func (a *Agent) credentialsRejectedBecause(err error, fix string) {
	a.mu.Lock()
	a.authFailures++
	failures := a.authFailures
	a.mu.Unlock()
	if failures == 1 {
		a.log.Error("coordinator rejected this worker's credentials: "+fix,
			"coordinator", a.cfg.Coordinator,
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

// nameTakenBudget is how long Register is retried while another live
// session holds this worker's name: a crashed previous process of the same
// name goes silent within a heartbeat and is declared dead dead_after
// later, so dead_after plus two heartbeats of margin (15 s at the defaults:
// heartbeat 3 s, dead_after 9 s). Before any registration dead_after is
// not known: the coordinator's default, 3 heartbeats, is assumed.
func (a *Agent) nameTakenBudgetLocked() time.Duration {
	deadAfter := a.deadAfter
	if deadAfter <= 0 {
		deadAfter = 3 * a.heartbeat
	}
	return deadAfter + 2*a.heartbeat
}

// nameTaken handles ALREADY_EXISTS: another live session uses this
// worker_name. Wait for it to be declared dead (if it is a crashed earlier
// incarnation of this worker), then give up with ExitNameTaken.
func (a *Agent) nameTaken(err error) {
	a.mu.Lock()
	now := time.Now()
	first := a.nameTakenAt.IsZero()
	if first {
		a.nameTakenAt = now
	}
	waited, budget := now.Sub(a.nameTakenAt), a.nameTakenBudgetLocked()
	a.mu.Unlock()
	name := a.cfg.WorkerName
	if first {
		a.log.Warn("another live worker uses this worker name; retrying until it is declared dead",
			"name", name, "for", budget.String(), "details", status.Convert(err).Message())
	}
	if waited >= budget {
		a.log.Error(fmt.Sprintf("worker name %q is already in use by another live worker: "+
			"give each worker a unique --name (or stop the other one)", name),
			"name", name, "waited", waited.Round(time.Millisecond).String())
		a.leave("worker name taken", ExitNameTaken)
	}
}

// registerRetryCap bounds the delay before the next Register: while the
// name is taken, retry at least every heartbeat, and once more right at
// the end of the budget.
func (a *Agent) registerRetryCap(delay time.Duration) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nameTakenAt.IsZero() {
		return delay
	}
	left := time.Until(a.nameTakenAt.Add(a.nameTakenBudgetLocked()))
	return max(0, min(delay, a.heartbeat, left))
}
