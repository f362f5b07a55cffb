package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"taskgrid.local/worker/capture"
	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// DefaultOutputInterval is the live output cadence of a run whose
// sync_output is 0 (web2py: about 1 s).
const DefaultOutputInterval = time.Second

// ReportLinger is how long finished runs wait for the runs still going on
// before their Report leaves (docs/protocol.md §7), so runs ending close
// together share one call. A run that ends while nothing else runs is
// reported at once.
const ReportLinger = 2 * time.Millisecond

// CarryWait bounds how long finished runs wait for a Lease being prepared
// to carry them (ACK+FETCH) before they go by Report after all.
const CarryWait = 50 * time.Millisecond

// delivery is what became of a batch handed to the coordinator.
type delivery int

const (
	sent     delivery = iota // applied, except for the leases the answer names stale
	retry                    // not delivered (coordinator away): keep the batch, back off, no limit
	failed                   // the coordinator failed on it (INTERNAL, UNKNOWN...): retry, a bounded number of times
	refused                  // never applicable (INVALID_ARGUMENT, PERMISSION_DENIED, an unnamed FAILED_PRECONDITION)
	rejected                 // old-style FAILED_PRECONDITION naming stale leases: nothing applied
	drop                     // the session is gone, and every lease with it
)

// reporter decides when live output and finished runs are sent, and in
// what batches. Each cycle takes the due output of every run (each every
// sync_output seconds, or about every second when that is 0) into one
// SendOutput call, then every finished run into one Report call, so the
// number of calls grows with time, not with tasks. It is the only goroutine
// that sends output, so a run's live chunks always reach the outbox before
// its report leaves it. Nothing is polled: it sleeps until the next output
// is due or a run finishes.
type reporter struct {
	a      *Agent
	outbox *Outbox
	wakeCh chan struct{}

	mu        sync.Mutex
	idle      *sync.Cond
	outputDue map[runner.Key]time.Time
	flushing  bool
}

func newReporter(a *Agent) *reporter {
	r := &reporter{a: a, outbox: a.outbox, wakeCh: make(chan struct{}, 1), outputDue: map[runner.Key]time.Time{}}
	r.idle = sync.NewCond(&r.mu)
	return r
}

func outputInterval(task runner.Task) time.Duration {
	if task.SyncOutput > 0 {
		return task.SyncOutput
	}
	return DefaultOutputInterval
}

func (r *reporter) wake() { notify(r.wakeCh) }

// addReport queues a finished run and wakes the loop to send it now.
func (r *reporter) addReport(result runner.Result) {
	r.outbox.AddReport(result)
	r.mu.Lock()
	delete(r.outputDue, result.Task.Key)
	r.mu.Unlock()
	r.wake()
}

// runStarted wakes the loop so that it schedules the new run's output.
func (r *reporter) runStarted(runner.Task) { r.wake() }

// waitIdle waits until nothing is left to send and no call is in flight; false on timeout.
func (r *reporter) waitIdle(timeout time.Duration) bool {
	expired := false
	timer := time.AfterFunc(timeout, func() {
		r.mu.Lock()
		expired = true
		r.mu.Unlock()
		r.idle.Broadcast()
	})
	defer timer.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.flushing || !r.outbox.IsEmpty() {
		if expired {
			return false
		}
		r.idle.Wait()
	}
	return true
}

func (r *reporter) loop() {
	backoff := NewBackoff()
	for {
		due, ok := r.nextDue()
		for !ok {
			wait := time.Until(due)
			if due.IsZero() {
				wait = -1
			}
			select {
			case <-r.a.stopping:
				return
			default:
			}
			sleepOr(r.wakeCh, r.a.stopping, wait)
			due, ok = r.nextDue()
		}
		r.gatherReports()
		r.setFlushing(true)
		delivered := r.flushOnce()
		r.setFlushing(false)
		if delivered {
			backoff.Reset()
			continue
		}
		select {
		case <-r.a.stopping:
			return
		default:
		}
		sleepOr(r.wakeCh, r.a.stopping, backoff.Next())
	}
}

// takeForLease takes the queued reports for a Lease to carry, unless a
// flush is under way: it may hold live chunks of a run that has just
// ended, which must reach the outbox (and that run's report) first.
func (r *reporter) takeForLease() []runner.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flushing {
		return nil
	}
	return r.outbox.TakeCarriable()
}

// gatherReports waits up to reportLinger while reports are queued and
// other runs are still going on (or ending: their report is not queued
// yet), so that their reports join the same call. addReport wakes it.
// Then, while the main loop prepares a Lease that will carry them, it
// leaves them to that call (it wakes us once it took them; CarryWait
// only guards against a wake-up that never comes).
func (r *reporter) gatherReports() {
	r.waitWhile(r.a.reportLinger, r.outbox.HasReports, r.a.othersRunning)
	r.waitWhile(CarryWait, r.outbox.HasCarriable, r.a.isCarrying)
}

// waitWhile waits up to d while reports wait (queued()) and cond holds.
func (r *reporter) waitWhile(d time.Duration, queued, cond func() bool) {
	deadline := time.Now().Add(d)
	for queued() && cond() {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		sleepOr(r.wakeCh, r.a.stopping, left)
		select {
		case <-r.a.stopping:
			return
		default:
		}
	}
}

// othersRunning: some submitted run's outcome is not queued yet.
func (a *Agent) othersRunning() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.unfinished) > 0
}

// sleepOr waits for d (forever when d < 0), a wake-up, or stop.
func sleepOr(wake, stop <-chan struct{}, d time.Duration) {
	var timeout <-chan time.Time
	if d >= 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-wake:
	case <-stop:
	case <-timeout:
	}
}

func (r *reporter) setFlushing(on bool) {
	r.mu.Lock()
	r.flushing = on
	r.mu.Unlock()
	r.idle.Broadcast()
}

// nextDue refreshes the output schedule; ok when a send is due now,
// otherwise the time of the next due output (zero: nothing scheduled).
func (r *reporter) nextDue() (time.Time, bool) {
	active := r.a.pool.Active()
	session, _ := r.a.currentSession()
	r.mu.Lock()
	defer r.mu.Unlock()
	live := map[runner.Key]bool{}
	for _, run := range active {
		live[run.Task.Key] = true
		if _, ok := r.outputDue[run.Task.Key]; !ok {
			r.outputDue[run.Task.Key] = run.Started.Add(outputInterval(run.Task))
		}
	}
	var next time.Time
	now := time.Now()
	dueNow := false
	for key, due := range r.outputDue {
		if !live[key] {
			delete(r.outputDue, key)
			continue
		}
		dueNow = dueNow || !due.After(now)
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	if session == nil {
		r.idle.Broadcast()
		return time.Time{}, false // registration wakes us
	}
	waiting, retryAt := r.outbox.Due(now)
	if waiting || dueNow {
		return now, true
	}
	if !retryAt.IsZero() && (next.IsZero() || retryAt.Before(next)) {
		next = retryAt // a troubled lease's next try
	}
	r.idle.Broadcast()
	return next, false
}

// flushOnce sends due live output, then every finished run; false when a
// batch must wait for the coordinator.
func (r *reporter) flushOnce() bool {
	now := time.Now()
	for _, run := range r.a.pool.Active() {
		key := run.Task.Key
		if r.a.isDropped(key) {
			continue // fenced off: its output is never sent again
		}
		r.mu.Lock()
		due, ok := r.outputDue[key]
		if ok && due.After(now) {
			r.mu.Unlock()
			continue
		}
		r.outputDue[key] = now.Add(outputInterval(run.Task))
		r.mu.Unlock()
		r.outbox.AddChunks(key, run.Output.Take(false))
	}
	return r.sendOutput() && r.sendReports()
}

// sendOutput sends the regular output batches, then the output of each
// troubled lease due for a retry, alone; false when the coordinator is away.
func (r *reporter) sendOutput() bool {
	for batch := r.outbox.TakeOutput(); len(batch) > 0; batch = r.outbox.TakeOutput() {
		if !r.deliverOutput(batch) {
			return false
		}
	}
	now := time.Now()
	for batch := r.outbox.TakeTroubledOutput(now); batch != nil; batch = r.outbox.TakeTroubledOutput(now) {
		if !r.deliverOutput(batch) {
			return false
		}
	}
	return true
}

// DefaultMaxResends bounds how many times a batch rejected the old way
// (FAILED_PRECONDITION naming stale leases: nothing applied) is sent again
// without the leases named.
const DefaultMaxResends = 3

// deliverOutput sends one output batch and settles it; false when it must
// wait for the coordinator (it is back in the outbox).
func (r *reporter) deliverOutput(batch map[runner.Key][]capture.Chunk) bool {
	for round := 0; ; round++ {
		answer := r.a.sendOutput(batch)
		switch answer.delivery {
		case sent: // applied, but for the stale leases, already dropped: nothing is sent again
			r.outbox.Delivered(mapKeys(batch))
			return true
		case rejected: // the old way: nothing applied; send the rest again, a few times at most
			n := len(batch)
			for _, key := range answer.stale {
				delete(batch, key)
			}
			if len(batch) == 0 {
				return true
			}
			if len(batch) == n || round >= DefaultMaxResends {
				r.a.dropOutput(mapKeys(batch), "SendOutput refused as stale", answer.err)
				return true
			}
		case failed:
			r.a.dropOutput(r.outbox.FailOutput(batch, time.Now()), "the coordinator kept failing on it", answer.err)
			return true
		case retry:
			r.outbox.RestoreOutput(batch)
			return false
		case refused:
			r.a.dropOutput(mapKeys(batch), "SendOutput refused", answer.err)
			return true
		default: // drop: the session is gone
			return true
		}
	}
}

// sendReports sends the regular report batches, then the report of each
// troubled lease due for a retry, alone; false when the coordinator is away.
func (r *reporter) sendReports() bool {
	for batch := r.outbox.TakeReports(); len(batch) > 0; batch = r.outbox.TakeReports() {
		if !r.deliverReports(batch) {
			return false
		}
	}
	now := time.Now()
	for batch := r.outbox.TakeTroubledReport(now); batch != nil; batch = r.outbox.TakeTroubledReport(now) {
		if !r.deliverReports(batch) {
			return false
		}
	}
	return true
}

// deliverReports sends one report batch and settles it; false when it must
// wait for the coordinator (it is back in the outbox).
func (r *reporter) deliverReports(batch []runner.Result) bool {
	for round := 0; ; round++ {
		answer := r.a.sendReports(batch)
		switch answer.delivery {
		case sent: // applied, but for the stale leases, already dropped: nothing is sent again
			r.outbox.SettleReports(batch)
			r.outbox.Delivered(resultKeys(batch))
			return true
		case rejected: // the old way: nothing applied; send the rest again, a few times at most
			n := len(batch)
			batch = without(batch, answer.stale) // dropLeases discarded the stale ones
			if len(batch) == 0 {
				return true
			}
			if len(batch) == n || round >= DefaultMaxResends {
				r.a.abandonReports(resultKeys(batch), "Report refused as stale", answer.err)
				return true
			}
		case failed:
			given := r.outbox.FailReports(batch, time.Now())
			r.a.abandonReports(given, fmt.Sprintf("the coordinator failed on them %d times", r.outbox.Retry.Tries), answer.err)
			return true
		case retry:
			r.outbox.RestoreReports(batch)
			return false
		case refused:
			r.a.abandonReports(resultKeys(batch), "Report refused", answer.err)
			return true
		default: // drop: the session is gone
			r.outbox.SettleReports(batch)
			return true
		}
	}
}

func without(batch []runner.Result, keys []runner.Key) []runner.Result {
	gone := map[runner.Key]bool{}
	for _, key := range keys {
		gone[key] = true
	}
	var kept []runner.Result
	for _, result := range batch {
		if !gone[result.Task.Key] {
			kept = append(kept, result)
		}
	}
	return kept
}

func mapKeys(batch map[runner.Key][]capture.Chunk) []runner.Key {
	keys := make([]runner.Key, 0, len(batch))
	for key := range batch {
		keys = append(keys, key)
	}
	return keys
}

func resultKeys(batch []runner.Result) []runner.Key {
	keys := make([]runner.Key, len(batch))
	for i, result := range batch {
		keys[i] = result.Task.Key
	}
	return keys
}

// ---- the calls ------------------------------------------------------------------

// sendOutput delivers live chunks in one SendOutput call.
func (a *Agent) sendOutput(batch map[runner.Key][]capture.Chunk) answer {
	var chunks []*pb.OutputChunk
	for key, items := range batch {
		for _, c := range items {
			chunks = append(chunks, chunkPB(key, c))
		}
	}
	return a.deliver("SendOutput", func(ctx context.Context, session *pb.WorkerSession, opt grpc.CallOption) ([]*pb.LeaseRef, error) {
		response, err := a.rpc.SendOutput(ctx, &pb.SendOutputRequest{Session: session, Chunks: chunks}, opt)
		return response.GetStale(), err
	})
}

// sendReports delivers finished runs in one Report call.
func (a *Agent) sendReports(batch []runner.Result) answer {
	reports := make([]*pb.RunReport, len(batch))
	for i, result := range batch {
		reports[i] = reportPB(result)
	}
	answer := a.deliver("Report", func(ctx context.Context, session *pb.WorkerSession, opt grpc.CallOption) ([]*pb.LeaseRef, error) {
		response, err := a.rpc.Report(ctx, &pb.ReportRequest{Session: session, Reports: reports}, opt)
		return response.GetStale(), err
	})
	if answer.delivery == sent {
		a.log.Debug("reported runs", "runs", len(batch), "stale", len(answer.stale))
	}
	return answer
}

// answer is what became of a batch handed to the coordinator.
type answer struct {
	delivery
	stale []runner.Key // sent: the response's stale leases; rejected: the trailer's (both dropped)
	err   error
}

// deliver makes one call carrying a batch and says what became of it. Stale
// leases, in the response (the call succeeded, the rest was applied) or in
// the old trailer of a FAILED_PRECONDITION (nothing was applied), are
// dropped here.
func (a *Agent) deliver(method string, call func(context.Context, *pb.WorkerSession, grpc.CallOption) ([]*pb.LeaseRef, error)) answer {
	session, generation := a.currentSession()
	if session == nil {
		return answer{delivery: drop}
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRPCTimeout)
	defer cancel()
	var trailer metadataMD
	staleRefs, err := call(ctx, session, grpc.Trailer(&trailer))
	if err == nil {
		a.noteSuccess()
		stale := keysOf(staleRefs)
		if len(stale) > 0 {
			a.dropLeases(stale, method)
		}
		return answer{delivery: sent, stale: stale}
	}
	code := status.Code(err)
	if stale := staleKeys(trailer); code == codes.FailedPrecondition && len(stale) > 0 {
		a.dropLeases(stale, method)
		return answer{delivery: rejected, stale: stale, err: err}
	}
	switch {
	case isSessionGone(code):
		a.loseSession(generation, code)
		return answer{delivery: drop, err: err}
	case code == codes.FailedPrecondition || isRefusal(code):
		return answer{delivery: refused, err: err}
	case isOutage(code):
		a.logFailure(method, err)
		return answer{delivery: retry, err: err}
	}
	a.logFailure(method, err)
	return answer{delivery: failed, err: err}
}
