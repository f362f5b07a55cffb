package agent

import (
	"context"
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

// delivery is what became of a batch handed to the coordinator.
type delivery int

const (
	sent  delivery = iota
	retry          // not delivered (coordinator away): keep the batch, back off
	drop           // not delivered and never will be (rejected, or the session is gone)
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
	if r.outbox.HasReports() || r.outbox.HasOutput() || dueNow {
		return now, true
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

func (r *reporter) sendOutput() bool {
	for batch := r.outbox.TakeOutput(); len(batch) > 0; batch = r.outbox.TakeOutput() {
		for {
			result, stale := r.a.sendOutput(batch)
			if len(stale) > 0 {
				for _, key := range stale {
					delete(batch, key)
				}
				if len(batch) > 0 {
					continue
				}
				break
			}
			if result == retry {
				r.outbox.RestoreOutput(batch)
				return false
			}
			break
		}
	}
	return true
}

func (r *reporter) sendReports() bool {
	for batch := r.outbox.TakeReports(); len(batch) > 0; batch = r.outbox.TakeReports() {
		for {
			result, stale := r.a.sendReports(batch)
			if len(stale) > 0 {
				batch = without(batch, stale) // dropLeases discarded the stale ones
				if len(batch) > 0 {
					continue
				}
				break
			}
			if result == retry {
				r.outbox.RestoreReports(batch)
				return false
			}
			r.outbox.SettleReports(batch)
			break
		}
	}
	return true
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

// ---- the calls ------------------------------------------------------------------

// sendOutput delivers live chunks in one SendOutput call; stale lists the
// leases the coordinator rejected (already dropped; resend the rest).
func (a *Agent) sendOutput(batch map[runner.Key][]capture.Chunk) (delivery, []runner.Key) {
	var chunks []*pb.OutputChunk
	for key, items := range batch {
		for _, c := range items {
			chunks = append(chunks, chunkPB(key, c))
		}
	}
	return a.deliver("SendOutput", func(ctx context.Context, session *pb.WorkerSession, opt grpc.CallOption) error {
		_, err := a.rpc.SendOutput(ctx, &pb.SendOutputRequest{Session: session, Chunks: chunks}, opt)
		return err
	})
}

// sendReports delivers finished runs in one Report call.
func (a *Agent) sendReports(batch []runner.Result) (delivery, []runner.Key) {
	reports := make([]*pb.RunReport, len(batch))
	for i, result := range batch {
		reports[i] = reportPB(result)
	}
	result, stale := a.deliver("Report", func(ctx context.Context, session *pb.WorkerSession, opt grpc.CallOption) error {
		_, err := a.rpc.Report(ctx, &pb.ReportRequest{Session: session, Reports: reports}, opt)
		return err
	})
	if result == sent {
		a.log.Debug("reported runs", "runs", len(batch))
	}
	return result, stale
}

func (a *Agent) deliver(method string, call func(context.Context, *pb.WorkerSession, grpc.CallOption) error) (delivery, []runner.Key) {
	session, generation := a.currentSession()
	if session == nil {
		return drop, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRPCTimeout)
	defer cancel()
	var trailer metadataMD
	err := call(ctx, session, grpc.Trailer(&trailer))
	if err == nil {
		a.noteSuccess()
		return sent, nil
	}
	stale := staleKeys(trailer)
	if a.failed(method, err, generation, trailer) && len(stale) > 0 {
		return drop, stale
	}
	switch code := status.Code(err); {
	case isSessionGone(code), code == codes.InvalidArgument, code == codes.FailedPrecondition:
		return drop, nil
	}
	return retry, nil
}
