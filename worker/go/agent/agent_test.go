package agent

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// gate is a handler that prints "started", then waits for release or cancellation.
type gate struct{ release chan struct{} }

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) handler(ctx context.Context, _ []any, _ map[string]any) (any, error) {
	_, _ = io.WriteString(runner.Output(ctx), "started\n")
	select {
	case <-g.release:
		_, _ = io.WriteString(runner.Output(ctx), "finished\n")
		return "done", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func handlers(g *gate) map[string]runner.Handler {
	return map[string]runner.Handler{
		"wait": g.handler,
		"add": func(_ context.Context, args []any, _ map[string]any) (any, error) {
			return args[0].(float64) + args[1].(float64), nil
		},
	}
}

func held(req *pb.HeartbeatRequest, key runner.Key) bool {
	return slices.ContainsFunc(req.GetRunning(), func(r *pb.LeaseRef) bool {
		return r.GetTaskId() == key.TaskID && r.GetAttempt() == key.Attempt
	})
}

func TestRegisterDeclaresFunctionsAndNoCommandCapabilityByDefault(t *testing.T) {
	f := startFake(t)
	startAgent(t, f, handlers(newGate()))
	f.waitUntil(t, "a registration", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.registers) > 0
	})
	f.with(func() {
		req := f.registers[0]
		if !slices.Equal(req.GetFunctions(), []string{"add", "wait"}) || req.GetLanguage() != "go" ||
			len(req.GetCapabilities()) != 0 || req.GetCapacity() != 2 || req.GetWorkerName() != "fake-w" {
			t.Errorf("register request %v", req)
		}
	})
}

func TestLiveOutputThenReportWithConsecutiveSeqs(t *testing.T) {
	f := startFake(t)
	g := newGate()
	startAgent(t, f, handlers(g))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "live output", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.chunks) > 0
	})
	f.waitUntil(t, "a heartbeat holding the lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.heartbeats) > 0 && held(f.heartbeats[len(f.heartbeats)-1], key)
	})
	close(g.release)
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	report := f.report(key)
	if report.GetStatus() != pb.RunStatus_RUN_STATUS_COMPLETED || report.GetResult() != `"done"` {
		t.Fatalf("report %v", report)
	}
	f.with(func() {
		all := append(slices.Clone(f.chunks), report.GetOutput()...)
		text := ""
		for i, c := range all {
			if c.GetSeq() != int64(i+1) || c.GetTaskId() != 1 || c.GetAttempt() != 1 {
				t.Errorf("chunk %d: %v", i, c)
			}
			text += c.GetData()
		}
		if text != "started\nfinished\n" {
			t.Errorf("output %q", text)
		}
	})
}

func TestStaleLeaseInAHeartbeatAnswerIsStoppedLoggedOnceAndNeverReported(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, _, logs := startAgentWith(t, f, handlers(g), nil)
	stale := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.stale[stale] = true }) // e.g. requeued after this worker looked dead
	f.waitUntil(t, "the stale run to be stopped", func() bool { return len(a.pool.ActiveKeys()) == 0 })
	// The worker goes on: a later task is reported, the stale one never is.
	fresh := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	f.waitUntil(t, "a heartbeat without the stale lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		last := f.heartbeats[len(f.heartbeats)-1]
		return !held(last, stale)
	})
	if f.report(stale) != nil {
		t.Fatal("a stale lease was reported")
	}
	if got := logs.matching("level=WARN", "no longer ours", "leases=1:1"); len(got) != 1 {
		t.Errorf("want one warning naming the stale lease, got %q", got)
	}
	if got := logs.matching("token-"); len(got) != 0 {
		t.Errorf("a session token was logged: %q", got)
	}
}

// An answer's stale list drops exactly those reports; everything else was
// applied, so nothing is sent again.
func TestStaleInAReportAnswerDropsExactlyThoseAndResendsNothing(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.beatsBlind = true; f.failReport = 1 }) // one failure: both reports then share a batch
	g := newGate()
	a, _, logs := startAgentWith(t, f, handlers(g), nil)
	stale := f.offer(1, "wait", "[]")
	fresh := f.offer(2, "wait", "[]")
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	f.with(func() { f.stale[stale] = true })
	close(g.release)
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	later := f.offer(3, "add", "[1, 1]")
	f.waitUntil(t, "a later report", func() bool { return f.report(later) != nil })
	if f.report(stale) != nil {
		t.Fatal("a stale report was accepted")
	}
	f.with(func() {
		if len(f.acceptedRep) < 1 || !slices.Contains(f.acceptedRep[0], stale) || !slices.Contains(f.acceptedRep[0], fresh) {
			t.Fatalf("the two reports did not share a batch: %v", f.acceptedRep)
		}
		for _, call := range f.acceptedRep[1:] {
			if slices.Contains(call, stale) || slices.Contains(call, fresh) {
				t.Errorf("a report was sent again: calls %v", f.acceptedRep)
			}
		}
	})
	if n := f.reportCount(fresh); n != 1 {
		t.Errorf("fresh reported %d times", n)
	}
	if got := logs.matching("level=WARN", "no longer ours", "leases=1:1"); len(got) != 1 {
		t.Errorf("want one warning naming the stale lease, got %q", got)
	}
}

func TestStaleInAnOutputAnswerStopsTheRunAndDropsItsOutput(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.beatsBlind = true })
	g := newGate()
	a, _ := startAgent(t, f, handlers(g))
	stale := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.stale[stale] = true })
	f.waitUntil(t, "the run to be stopped", func() bool { return len(a.pool.ActiveKeys()) == 0 })
	fresh := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	if f.report(stale) != nil || f.callsNaming(stale) != 0 {
		t.Fatal("the stale run was reported")
	}
	f.with(func() {
		for _, c := range f.chunks {
			if c.GetTaskId() == stale.TaskID {
				t.Errorf("stale output kept: %v", c)
			}
		}
	})
}

// Coordinators before stale lists: FAILED_PRECONDITION, the trailer naming
// the stale leases, nothing applied: the rest is sent again.
func TestOldStyleStaleReportIsDroppedAndTheRestOfTheBatchResent(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.beatsBlind = true; f.oldStyle = true })
	g := newGate()
	a, _ := startAgent(t, f, handlers(g))
	stale := f.offer(1, "wait", "[]")
	fresh := f.offer(2, "wait", "[]")
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	f.with(func() { f.stale[stale] = true })
	close(g.release) // both finish at once: their reports usually share one batch
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	if f.report(stale) != nil {
		t.Fatal("a stale report was accepted")
	}
}

func TestOldStyleStaleHeartbeatIsResentWithoutTheLease(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.oldStyle = true })
	a, _ := startAgent(t, f, handlers(newGate()))
	stale := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.stale[stale] = true })
	f.waitUntil(t, "the stale run to be stopped", func() bool { return len(a.pool.ActiveKeys()) == 0 })
	fresh := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	if f.report(stale) != nil {
		t.Fatal("a stale lease was reported")
	}
}

// A FAILED_PRECONDITION that names nothing drops the batch: it is not retried.
func TestOldStyleBareFailedPreconditionDropsTheBatchOnce(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.beatsBlind = true; f.oldStyle = true; f.bareFP = true })
	a, _ := startAgent(t, f, handlers(newGate()))
	bad := f.offer(1, "add", "[1, 1]")
	f.with(func() { f.stale[bad] = true })
	f.waitUntil(t, "the report call", func() bool { return f.callsNaming(bad) > 0 })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	fresh := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	if n := f.callsNaming(bad); n != 1 || f.report(bad) != nil {
		t.Fatalf("the rejected report was sent %d times", n)
	}
}

func fastRetries(a *Agent) {
	a.outbox.Retry = RetryPolicy{Tries: 5, Base: 5 * time.Millisecond, Cap: 20 * time.Millisecond}
}

// INTERNAL is retried: 5 calls in all, then the lease is handed back and
// dropped, logged as an ERROR naming it.
func TestInternalReportIsRetriedBoundedThenHandedBack(t *testing.T) {
	f := startFake(t)
	a, _, logs := startAgentWith(t, f, handlers(newGate()), fastRetries)
	poison := runner.Key{TaskID: 1, Attempt: 1}
	f.with(func() { f.poison[poison] = -1 })
	f.offer(1, "add", "[1, 1]")
	f.waitUntil(t, "the lease handed back", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.released) == 1 && key(f.released[0]) == poison
	})
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	if n := f.callsNaming(poison); n != 5 {
		t.Errorf("poisoned report sent %d times, want 5", n)
	}
	if got := logs.matching("level=ERROR", "giving up on reports", "leases=1:1", "code=Internal"); len(got) != 1 {
		t.Errorf("want one error naming the lease, got %q", got)
	}
	f.waitUntil(t, "a heartbeat without the lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return !held(f.heartbeats[len(f.heartbeats)-1], poison)
	})
	fresh := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "a later report", func() bool { return f.report(fresh) != nil })
	time.Sleep(100 * time.Millisecond)
	if n := f.callsNaming(poison); n != 5 {
		t.Errorf("poisoned report sent again after giving up: %d calls", n)
	}
}

func TestUnknownIsRetriedBoundedToo(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.poisonCode = codes.Unknown })
	a, _, _ := startAgentWith(t, f, handlers(newGate()), fastRetries)
	poison := runner.Key{TaskID: 1, Attempt: 1}
	f.with(func() { f.poison[poison] = -1 })
	f.offer(1, "add", "[1, 1]")
	f.waitUntil(t, "the lease handed back", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.released) == 1
	})
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	if n := f.callsNaming(poison); n != 5 {
		t.Errorf("sent %d times", n)
	}
}

// Reports that finish while a poisoned one is retried go on their own,
// at once, and are never dropped with it.
func TestAPoisonedReportDoesNotHoldBackLaterOnes(t *testing.T) {
	f := startFake(t)
	startAgentWith(t, f, handlers(newGate()), func(a *Agent) {
		a.outbox.Retry = RetryPolicy{Tries: 5, Base: 200 * time.Millisecond, Cap: time.Second}
	})
	poison := runner.Key{TaskID: 1, Attempt: 1}
	f.with(func() { f.poison[poison] = -1 })
	f.offer(1, "add", "[1, 1]")
	f.waitUntil(t, "the first failure", func() bool { return f.callsNaming(poison) > 0 })
	fresh := []runner.Key{f.offer(2, "add", "[1, 2]"), f.offer(3, "add", "[1, 3]")}
	f.waitUntil(t, "the later reports", func() bool { return f.report(fresh[0]) != nil && f.report(fresh[1]) != nil })
	f.with(func() {
		if len(f.released) != 0 {
			t.Errorf("the later reports waited for the poisoned one to be given up")
		}
		for _, call := range f.reportCalls {
			if slices.Contains(call, poison) && len(call) > 1 {
				t.Errorf("the poisoned report shared a call: %v", call)
			}
		}
	})
	f.waitUntil(t, "the poisoned lease handed back", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.released) == 1
	})
	if f.reportCount(fresh[0]) != 1 || f.reportCount(fresh[1]) != 1 {
		t.Error("a later report was lost or sent twice")
	}
}

func TestATransientInternalErrorIsRetriedAndDelivered(t *testing.T) {
	f := startFake(t)
	a, _, _ := startAgentWith(t, f, handlers(newGate()), fastRetries)
	key := runner.Key{TaskID: 1, Attempt: 1}
	f.with(func() { f.poison[key] = 2 })
	f.offer(1, "add", "[20, 22]")
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	if n := f.callsNaming(key); n != 3 {
		t.Errorf("sent %d times, want 3", n)
	}
	f.with(func() {
		if len(f.released) != 0 {
			t.Errorf("released %v", f.released)
		}
	})
}

// Live output the coordinator keeps failing on is dropped (ERROR); the
// run goes on and its report still goes.
func TestInternalOutputIsRetriedBoundedThenDroppedAndTheRunGoesOn(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, _, logs := startAgentWith(t, f, handlers(g), fastRetries)
	key := runner.Key{TaskID: 1, Attempt: 1}
	f.with(func() { f.poisonOut[key] = 5 })
	f.offer(1, "wait", "[]") // prints "started" at once; live output goes after about 1 s
	f.waitUntil(t, "the output given up", func() bool {
		return len(logs.matching("level=ERROR", "dropping live output", "leases=1:1")) == 1
	})
	f.with(func() {
		if f.outputCalls != 5 || len(f.chunks) != 0 {
			t.Errorf("output calls %d, chunks kept %d", f.outputCalls, len(f.chunks))
		}
	})
	if len(a.pool.ActiveKeys()) != 1 {
		t.Fatal("the run was stopped")
	}
	close(g.release)
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	r := f.report(key)
	if r.GetStatus() != pb.RunStatus_RUN_STATUS_COMPLETED || len(r.GetOutput()) != 1 ||
		r.GetOutput()[0].GetData() != "finished\n" || r.GetOutput()[0].GetSeq() != 2 {
		t.Fatalf("report %v", r)
	}
	f.with(func() {
		if len(f.released) != 0 {
			t.Errorf("released %v", f.released)
		}
	})
}

// A report the coordinator refuses for good (INVALID_ARGUMENT) is not
// retried: its lease is handed back.
func TestARefusedReportIsHandedBackAtOnce(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.poisonCode = codes.InvalidArgument })
	a, _, _ := startAgentWith(t, f, handlers(newGate()), fastRetries)
	bad := runner.Key{TaskID: 1, Attempt: 1}
	f.with(func() { f.poison[bad] = -1 })
	f.offer(1, "add", "[1, 1]")
	f.waitUntil(t, "the lease handed back", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.released) == 1 && key(f.released[0]) == bad
	})
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	if n := f.callsNaming(bad); n != 1 {
		t.Errorf("refused report sent %d times", n)
	}
}

// Heartbeat.running lists a finished run until its report is acknowledged.
func TestHeartbeatsListAFinishedRunUntilItsReportIsAcknowledged(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.failReport = 1 << 30 })
	a, _ := startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "add", "[1, 1]")
	f.waitUntil(t, "a failed report call", func() bool { return f.callsNaming(key) > 0 })
	if len(a.pool.ActiveKeys()) != 0 {
		t.Fatal("the run is still active")
	}
	f.with(func() { f.heartbeats = nil })
	f.waitUntil(t, "three more heartbeats", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.heartbeats) >= 3
	})
	f.with(func() {
		for _, beat := range f.heartbeats[1:] { // the first may have left before the lease came
			if !held(beat, key) {
				t.Errorf("a heartbeat left out the unacknowledged run: %v", beat.GetRunning())
			}
		}
		f.failReport = 0
	})
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	f.with(func() { f.heartbeats = nil })
	f.waitUntil(t, "a heartbeat without the reported run", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.heartbeats) > 0 && !held(f.heartbeats[len(f.heartbeats)-1], key)
	})
}

func TestRegisterRetriesATakenNameUntilItIsFree(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.nameTaken = 3 })
	startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "add", "[1, 1]")
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	f.with(func() {
		if len(f.nameRefusal) != 3 || len(f.registers) != 1 {
			t.Errorf("refusals %d registers %d", len(f.nameRefusal), len(f.registers))
		}
	})
}

// A name that stays taken ends the worker (ExitNameTaken) after about
// dead_after plus two heartbeats: 3 + 2 heartbeats of 200 ms here.
func TestRegisterGivesUpOnANameThatStaysTaken(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.nameTaken = -1 })
	_, exit, logs := startAgentWith(t, f, handlers(newGate()), nil)
	select {
	case code := <-exit:
		if code != ExitNameTaken {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not give up")
	}
	f.with(func() {
		waited := f.nameRefusal[len(f.nameRefusal)-1].Sub(f.nameRefusal[0])
		if waited < 900*time.Millisecond || waited > 3*time.Second || len(f.nameRefusal) < 3 {
			t.Errorf("retried %d times over %s", len(f.nameRefusal), waited)
		}
	})
	if got := logs.matching("level=ERROR", `worker name \"fake-w\" is already in use`); len(got) != 1 {
		t.Errorf("want one clear error naming the worker, got %q", got)
	}
}

func TestLostSessionStopsRunsDropsReportsAndRegistersAgain(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, _ := startAgent(t, f, handlers(g))
	lost := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.forget = true })
	f.waitUntil(t, "a second registration", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.registers) >= 3 // the first, the forgotten marker, the new one
	})
	f.waitUntil(t, "the run to be stopped", func() bool { return len(a.pool.ActiveKeys()) == 0 })
	fresh := f.offer(2, "add", "[2, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	if f.report(lost) != nil {
		t.Fatal("a run of the lost session was reported")
	}
}

func TestReportsWaitOutAnOutage(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.failReport = 3 })
	startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "add", "[20, 22]")
	f.waitUntil(t, "the report after the outage", func() bool { return f.report(key) != nil })
	if got := f.report(key).GetResult(); got != "42" {
		t.Fatalf("result %q", got)
	}
	f.with(func() {
		if f.failReport != 0 || len(f.reports) != 1 {
			t.Errorf("failReport=%d reports=%d", f.failReport, len(f.reports))
		}
	})
}

func TestStopFromHeartbeatReportsStopped(t *testing.T) {
	f := startFake(t)
	a, _ := startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.stopNext = []*pb.LeaseRef{ref(key)} })
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	if st := f.report(key).GetStatus(); st != pb.RunStatus_RUN_STATUS_STOPPED {
		t.Fatalf("status %v", st)
	}
}

func TestKillStopsRunsReportsThemAndExits(t *testing.T) {
	f := startFake(t)
	a, exit := startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.status = pb.WorkerStatus_WORKER_STATUS_KILL })
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not exit")
	}
	if r := f.report(key); r == nil || r.GetStatus() != pb.RunStatus_RUN_STATUS_STOPPED {
		t.Fatalf("report %v", r)
	}
}

func TestDrainFinishesRunsAndHandsBackLateLeases(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, exit := startAgent(t, f, handlers(g))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	// The next Lease goes out after the lease linger: drain while it is in flight.
	f.waitUntil(t, "a Lease for the free slot", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.leaseCalls >= 2
	})
	a.RequestDrain()
	f.waitUntil(t, "a draining heartbeat", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.heartbeats[len(f.heartbeats)-1].GetDraining()
	})
	late := f.offer(2, "add", "[1, 1]") // a lease racing the drain
	f.waitUntil(t, "the late lease handed back", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.released) == 1 && f.released[0].GetTaskId() == late.TaskID
	})
	close(g.release)
	if code := <-exit; code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if r := f.report(key); r == nil || r.GetStatus() != pb.RunStatus_RUN_STATUS_COMPLETED {
		t.Fatalf("report %v", r)
	}
	if f.report(late) != nil {
		t.Fatal("a handed-back lease was reported")
	}
}

func TestMaxEmptyRunsEndsAnIdleWorker(t *testing.T) {
	f := startFake(t)
	a, err := New(Config{Coordinator: f.addr, WorkerName: "idle", Heartbeat: 100 * time.Millisecond,
		MaxEmptyRuns: 2, Handlers: handlers(newGate())})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- a.Run() }()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		a.RequestExit()
		t.Fatal("the worker did not leave")
	}
}

func TestADisabledWorkerPollsLeaseAtHeartbeatsWhenTheCoordinatorAnswersAtOnce(t *testing.T) {
	// A DISABLED worker long-polls Lease so that resume reaches it at once; a coordinator
	// that answers that call at once (an older one) must not make it spin.
	f := startFake(t)
	f.with(func() { f.status, f.disabledAtOnce = pb.WorkerStatus_WORKER_STATUS_DISABLED, true })
	_, _, logs := startAgentWith(t, f, handlers(newGate()), nil)
	count := func() (beats, leases int) {
		f.with(func() { beats, leases = len(f.heartbeats), f.leaseCalls })
		return
	}
	f.waitUntil(t, "a DISABLED Lease answered at once", func() bool {
		return len(logs.matching("DISABLED Lease answered at once")) > 0
	})
	beats0, leases0 := count()
	f.waitUntil(t, "five more heartbeats", func() bool { beats, _ := count(); return beats >= beats0+5 })
	beats, leases := count()
	// about one Lease per heartbeat (0.2 s); a spinning worker would send hundreds
	if leases-leases0 > 2*(beats-beats0)+2 {
		t.Fatalf("%d Lease calls during %d heartbeats while DISABLED", leases-leases0, beats-beats0)
	}
	f.with(func() { f.status = pb.WorkerStatus_WORKER_STATUS_ACTIVE })
	key := f.offer(7, "add", `[2, 3]`)
	f.waitUntil(t, "the task run after resume", func() bool { return f.report(key) != nil })
}

func TestStaleKeysParsesTheTrailer(t *testing.T) {
	md := metadata.Pairs(StaleLeasesKey, "3:1, 4:2,bad,5:x")
	got := staleKeys(md)
	want := []runner.Key{{TaskID: 3, Attempt: 1}, {TaskID: 4, Attempt: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v", got)
	}
}

func TestTokenIsNotSentInPlainTextToAnotherMachine(t *testing.T) {
	if _, err := (Security{Token: "s3cret"}).DialOptions("10.1.2.3:50051"); err == nil {
		t.Fatal("plain-text token to another machine accepted")
	}
	if _, err := (Security{Token: "s3cret", Insecure: true}).DialOptions("10.1.2.3:50051"); err != nil {
		t.Fatal(err)
	}
	if _, err := (Security{Token: "s3cret"}).DialOptions("localhost:50051"); err != nil {
		t.Fatal(err)
	}
	if s := (Security{Token: "s3cret"}).String(); strings.Contains(s, "s3cret") {
		t.Fatalf("token printed: %s", s)
	}
	if _, err := (Security{CertFile: "c.pem"}).DialOptions("localhost:1"); err == nil {
		t.Fatal("a certificate without its key accepted")
	}
}

func TestIsLoopbackTarget(t *testing.T) {
	for target, want := range map[string]bool{
		"127.0.0.1:50051": true, "localhost:1": true, "[::1]:5": true, "unix:/tmp/s": true,
		"dns:///localhost:1": true, "10.0.0.1:1": false, "example.com:443": false,
	} {
		if got := IsLoopbackTarget(target); got != want {
			t.Errorf("IsLoopbackTarget(%q) = %v", target, got)
		}
	}
}
