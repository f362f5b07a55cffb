package agent

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"taskgrid.local/worker/capture"
	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// What a failed call means for the session and its leases, and the
// conversions between the stubs and the runner's plain records.

type metadataMD = metadata.MD

// staleKeys parses the `taskgrid-stale-leases` trailer ("task:attempt,...").
func staleKeys(trailer metadata.MD) []runner.Key {
	var keys []runner.Key
	for _, value := range trailer.Get(StaleLeasesKey) {
		for _, item := range strings.Split(value, ",") {
			task, attempt, ok := strings.Cut(strings.TrimSpace(item), ":")
			id, err1 := strconv.ParseInt(task, 10, 64)
			n, err2 := strconv.ParseInt(attempt, 10, 64)
			if ok && err1 == nil && err2 == nil {
				keys = append(keys, runner.Key{TaskID: id, Attempt: n})
			}
		}
	}
	return keys
}

// keysOf converts the stale lists of responses.
func keysOf(refs []*pb.LeaseRef) []runner.Key {
	var keys []runner.Key
	for _, r := range refs {
		keys = append(keys, runner.Key{TaskID: r.GetTaskId(), Attempt: r.GetAttempt()})
	}
	return keys
}

func isSessionGone(code codes.Code) bool {
	return code == codes.NotFound || code == codes.Unauthenticated
}

// isOutage: the coordinator (or its database) is away; retried without limit.
func isOutage(code codes.Code) bool {
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// isRefusal: the call can never succeed as it is; never retried.
func isRefusal(code codes.Code) bool {
	return code == codes.InvalidArgument || code == codes.PermissionDenied
}

// failed reacts to a failed call; true when the caller may go on without a
// backoff (the session was lost, or stale leases were dropped).
func (a *Agent) failed(method string, err error, generation int, trailer metadata.MD) bool {
	code := status.Code(err)
	if isSessionGone(code) {
		a.loseSession(generation, code)
		return true
	}
	if stale := staleKeys(trailer); code == codes.FailedPrecondition && len(stale) > 0 {
		a.dropLeases(stale, method)
		return true
	}
	a.logFailure(method, err)
	return false
}

// logFailure logs a failed call; an outage is logged once, then only counted.
func (a *Agent) logFailure(method string, err error) {
	st := status.Convert(err)
	if st.Code() == codes.InvalidArgument {
		a.log.Error("call rejected as invalid", "method", method, "details", st.Message())
		return
	}
	a.mu.Lock()
	a.failedCalls++
	first := a.failedCalls == 1
	a.mu.Unlock()
	if first {
		a.log.Warn("call failed, retrying with backoff", "method", method, "code", st.Code().String(),
			"details", st.Message())
	} else {
		a.log.Debug("call failed again", "method", method, "code", st.Code().String())
	}
}

func (a *Agent) noteSuccess() {
	a.mu.Lock()
	failed := a.failedCalls
	a.failedCalls = 0
	a.mu.Unlock()
	if failed > 0 {
		a.log.Info("coordinator answering again", "failed_calls", failed)
	}
}

// dropLeases obeys the coordinator saying these leases are no longer ours:
// their runs are stopped and nothing about them is ever sent again. Each
// lease is logged once, when it is dropped: a later answer naming it again
// (a heartbeat that crossed the report) finds nothing left to drop.
func (a *Agent) dropLeases(keys []runner.Key, method string) {
	a.mu.Lock()
	held := map[runner.Key]bool{}
	for _, key := range a.heldKeysLocked() {
		held[key] = true
	}
	var running, fresh []runner.Key
	active := a.pool.ActiveKeys()
	for _, key := range keys {
		if held[key] {
			fresh = append(fresh, key)
		}
		if !a.dropped[key] && (a.unfinished[key] || slices.Contains(active, key)) {
			a.dropped[key] = true
			running = append(running, key)
		}
		delete(a.toRelease, key)
	}
	a.outbox.Discard(keys)
	a.mu.Unlock()
	if len(fresh) > 0 {
		a.log.Warn("coordinator says these leases are no longer ours: dropping them",
			"method", method, "leases", keyList(fresh))
	}
	if len(fresh) < len(keys) {
		a.log.Debug("stale leases already dropped", "method", method, "leases", len(keys)-len(fresh))
	}
	for _, key := range running {
		a.pool.Stop(key, runner.Stopped)
	}
}

// abandonReports gives up on the reports of these leases (the coordinator
// kept failing on them, or refused them for good): whatever they owe is
// dropped, and Release hands them back, so the coordinator queues their
// tasks again (best effort: it takes back a lease the heartbeats stop
// listing by itself anyway). They move from the outbox to the leases to
// hand back in one step, so no heartbeat misses them meanwhile.
func (a *Agent) abandonReports(keys []runner.Key, why string, err error) {
	if len(keys) == 0 {
		return
	}
	st := status.Convert(err)
	a.log.Error("giving up on reports ("+why+"): handing their leases back",
		"leases", keyList(keys), "code", st.Code().String(), "details", st.Message())
	a.mu.Lock()
	defer a.mu.Unlock()
	a.outbox.Discard(keys)
	if a.session != nil {
		for _, key := range keys {
			a.toRelease[key] = struct{}{} // held (listed) until Release answers
		}
		notify(a.wakeMain)
	}
}

// loseSession handles NOT_FOUND: the coordinator forgot this worker (or
// declared it dead), so every lease is gone. Runs are stopped, their
// reports dropped, and the main loop registers again.
func (a *Agent) loseSession(generation int, code codes.Code) {
	a.mu.Lock()
	if generation != a.generation || a.session == nil {
		a.mu.Unlock()
		return
	}
	a.log.Warn("session lost: stopping runs, registering again", "code", code.String())
	a.session = nil
	a.generation++
	running := a.pool.ActiveKeys()
	for _, key := range running {
		a.dropped[key] = true
	}
	for key := range a.unfinished {
		a.dropped[key] = true
	}
	clear(a.toRelease)
	a.outbox.Clear()
	notify(a.wakeMain)
	a.mu.Unlock()
	for _, key := range running {
		a.pool.Stop(key, runner.Stopped)
	}
}

// dropOutput logs live output given up on; the runs go on, and their
// reports still go.
func (a *Agent) dropOutput(keys []runner.Key, why string, err error) {
	if len(keys) == 0 {
		return
	}
	st := status.Convert(err)
	a.log.Error("dropping live output ("+why+"); the runs go on",
		"leases", keyList(keys), "code", st.Code().String(), "details", st.Message())
}

func (a *Agent) isDropped(key runner.Key) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped[key]
}

func (a *Agent) currentSession() (*pb.WorkerSession, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.session, a.generation
}

// heldKeysLocked lists every lease the worker holds: running, finishing,
// with something unsent, or waiting to be handed back; minus dropped ones.
func (a *Agent) heldKeysLocked() []runner.Key {
	held := map[runner.Key]bool{}
	for _, key := range a.pool.ActiveKeys() {
		held[key] = true
	}
	for key := range a.unfinished {
		held[key] = true
	}
	for _, key := range a.outbox.HeldKeys() {
		held[key] = true
	}
	for key := range a.toRelease {
		held[key] = true
	}
	keys := make([]runner.Key, 0, len(held))
	for key := range held {
		if !a.dropped[key] {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

func compareKeys(x, y runner.Key) int {
	if x.TaskID != y.TaskID {
		return cmpInt(x.TaskID, y.TaskID)
	}
	return cmpInt(x.Attempt, y.Attempt)
}

func cmpInt(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func keyList(keys []runner.Key) string {
	parts := make([]string, len(keys))
	for i, key := range keys {
		parts[i] = key.String()
	}
	return strings.Join(parts, ",")
}

// ---- conversions --------------------------------------------------------------

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func statusName(s pb.WorkerStatus) string {
	return strings.TrimPrefix(s.String(), "WORKER_STATUS_")
}

func ref(key runner.Key) *pb.LeaseRef {
	return &pb.LeaseRef{TaskId: key.TaskID, Attempt: key.Attempt}
}

func refs(keys []runner.Key) []*pb.LeaseRef {
	out := make([]*pb.LeaseRef, len(keys))
	for i, key := range keys {
		out[i] = ref(key)
	}
	return out
}

// taskFromLease converts a Lease message into the runner's Task.
func taskFromLease(lease *pb.Lease) runner.Task {
	task := runner.Task{
		Key:          runner.Key{TaskID: lease.GetRef().GetTaskId(), Attempt: lease.GetRef().GetAttempt()},
		RunID:        lease.GetRunId(),
		UUID:         lease.GetUuid(),
		FunctionName: lease.GetFunctionName(),
		TaskName:     lease.GetTaskName(),
		Args:         lease.GetArgs(),
		Vars:         lease.GetVars(),
		Timeout:      time.Duration(lease.GetTimeout()) * time.Second,
		SyncOutput:   time.Duration(lease.GetSyncOutput()) * time.Second,
	}
	if c := lease.GetCommand(); c != nil {
		task.Command = &runner.Command{Executable: c.GetExecutable(), Args: c.GetArgs(), Env: c.GetEnv(), Cwd: c.GetCwd()}
	}
	return task
}

func chunkPB(key runner.Key, c capture.Chunk) *pb.OutputChunk {
	return &pb.OutputChunk{TaskId: key.TaskID, Attempt: key.Attempt, Seq: c.Seq, Data: c.Data, Clear: c.Clear}
}

var runStatus = map[runner.Outcome]pb.RunStatus{
	runner.Completed: pb.RunStatus_RUN_STATUS_COMPLETED,
	runner.Failed:    pb.RunStatus_RUN_STATUS_FAILED,
	runner.Timeout:   pb.RunStatus_RUN_STATUS_TIMEOUT,
	runner.Stopped:   pb.RunStatus_RUN_STATUS_STOPPED,
}

// reportPB converts a finished run into a RunReport message.
func reportPB(r runner.Result) *pb.RunReport {
	report := &pb.RunReport{
		Ref: ref(r.Task.Key), Status: runStatus[r.Outcome], Result: r.Result,
		Traceback: strings.ToValidUTF8(r.Traceback, "\uFFFD"), // protobuf strings must be UTF-8
	}
	for _, c := range r.Output {
		report.Output = append(report.Output, chunkPB(r.Task.Key, c))
	}
	return report
}
