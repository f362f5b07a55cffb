package agent

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// Obeying the coordinator: worker statuses and stop lists from Lease and
// Heartbeat replies, the end of runs, and handing back unwanted leases.

// applyStatus obeys the worker status the coordinator sent (or a signal asked for).
func (a *Agent) applyStatus(s pb.WorkerStatus) {
	stopAll := false
	a.mu.Lock()
	switch {
	case s == pb.WorkerStatus_WORKER_STATUS_KILL && !a.killing:
		a.log.Info("KILL: stopping running tasks, then leaving")
		if a.leaving == "" {
			a.leaving = "KILL"
		}
		a.killing, stopAll = true, true
	case s == pb.WorkerStatus_WORKER_STATUS_TERMINATE && a.leaving == "":
		a.log.Info("TERMINATE: finishing running tasks, then leaving")
		a.leaving = "TERMINATE"
	case s == pb.WorkerStatus_WORKER_STATUS_ACTIVE || s == pb.WorkerStatus_WORKER_STATUS_DISABLED:
		if s != a.status && a.leaving == "" {
			a.log.Info("worker status changed", "status", statusName(s))
			a.status = s
		}
	}
	notify(a.wakeMain)
	a.mu.Unlock()
	if stopAll {
		a.pool.StopAll(runner.Stopped)
	}
}

func (a *Agent) applyStops(stops []*pb.LeaseRef) {
	for _, ref := range stops {
		key := runner.Key{TaskID: ref.GetTaskId(), Attempt: ref.GetAttempt()}
		if a.pool.Stop(key, runner.Stopped) { // the first time only: stops are re-sent
			a.log.Info("stopping task on request", "task", key.TaskID, "attempt", key.Attempt)
		}
	}
}

// onFinish is the pool's callback: queue the report (unless the lease was
// dropped) and free the slot.
func (a *Agent) onFinish(result runner.Result) {
	key := result.Task.Key
	a.log.Debug("run ended", "task", key.TaskID, "attempt", key.Attempt, "outcome", result.Outcome)
	a.metrics.finished(result)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.takesReports && !a.leaseInFlight && a.leaving == "" && a.session != nil {
		a.carrying = true // the main loop leases next: the report rides along
	}
	if a.dropped[key] {
		delete(a.dropped, key)
	} else {
		a.reporter.addReport(result)
	}
	// Only now may the main loop see this run as over: its report is queued,
	// so a leaving worker waits for it to be delivered.
	delete(a.unfinished, key)
	a.holdUntil = time.Time{}
	notify(a.wakeMain)
}

// releaseOnce hands back leases the worker will not run, or whose reports
// it gave up on; false when the call failed and should be retried after a
// backoff. Leases the answer names stale were gone already. It is best
// effort: after DefaultServerErrorTries failed calls in a row (whatever
// the reason) the leases are forgotten, and the coordinator takes them
// back itself once the heartbeats stop listing them.
func (a *Agent) releaseOnce() bool {
	a.mu.Lock()
	session, generation := a.session, a.generation
	keys := make([]runner.Key, 0, len(a.toRelease))
	for key := range a.toRelease {
		keys = append(keys, key)
	}
	a.mu.Unlock()
	if session == nil || len(keys) == 0 {
		return true
	}
	slices.SortFunc(keys, compareKeys)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRPCTimeout)
	defer cancel()
	var trailer metadataMD
	response, err := a.rpc.Release(ctx, &pb.ReleaseRequest{Session: session, Leases: refs(keys)}, grpc.Trailer(&trailer))
	if err != nil {
		code := status.Code(err)
		a.releaseFailures++
		final := isRefusal(code) || (code == codes.FailedPrecondition && len(staleKeys(trailer)) == 0)
		if final || (!isSessionGone(code) && a.releaseFailures >= DefaultServerErrorTries) {
			a.log.Warn("Release failed; the coordinator will take these leases back itself",
				"leases", keyList(keys), "code", code.String(), "details", status.Convert(err).Message(),
				"calls", a.releaseFailures)
			a.releaseFailures = 0
			a.forgetRelease(keys)
			return true
		}
		return a.failed("Release", err, generation, trailer)
	}
	a.releaseFailures = 0
	a.noteSuccess()
	if stale := keysOf(response.GetStale()); len(stale) > 0 {
		a.log.Debug("Release: leases already gone", "leases", keyList(stale))
	}
	a.log.Info("handed back leases", "leases", keyList(keys))
	a.forgetRelease(keys)
	return true
}

func (a *Agent) forgetRelease(keys []runner.Key) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, key := range keys {
		delete(a.toRelease, key)
	}
	notify(a.wakeMain)
}
