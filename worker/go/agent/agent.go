// Package agent owns the worker's side of the protocol: register, lease
// (long-poll), heartbeat, commands, delivery of output and reports.
//
// An Agent runs a runner.Pool and three loops, each a *Once step inside a
// thin loop:
//
//   - the calling goroutine (Run): register, then long-poll Lease for
//     exactly the free slots (wait_s = heartbeat) and start what comes back;
//     while DISABLED too, so that resume reaches it at once;
//   - the heartbeat goroutine: Heartbeat every `heartbeat` seconds with every
//     held lease and the RSS; it never waits on a task, so a hung task
//     cannot stop it;
//   - the reporter goroutine (reporter.go), which batches live output and
//     finished runs into SendOutput and Report calls.
//
// Commands (DISABLED, TERMINATE, KILL, stop lease X) arrive in Lease and
// Heartbeat replies and are obeyed by whichever goroutine got them. Every
// call goes through coordinators (coordinators.go): given several
// coordinator addresses, a call that finds its coordinator away moves on
// to the next one, keeping the session. While every coordinator is away
// (UNAVAILABLE, DEADLINE_EXCEEDED), tasks keep running and every call is
// retried with a jittered exponential backoff.
// A coordinator error (INTERNAL, UNKNOWN) is retried a bounded number of
// times per lease, each troubled lease alone (so it holds back no other),
// then a report's lease is handed back (Release) and dropped, and live
// output is dropped.
// NOT_FOUND means the coordinator forgot this worker: its runs are stopped
// and dropped, and it registers again. ALREADY_EXISTS at Register means
// another live worker has this name: retried until a crashed predecessor
// would be declared dead, then the worker exits. The `stale` list of an
// answer names leases that are no longer ours (the rest of the call was
// applied): their runs are stopped and nothing more is ever sent about
// them (fencing); the older FAILED_PRECONDITION with the
// `taskgrid-stale-leases` trailer is still understood. This is the only
// package that imports the generated stubs besides the tests.
package agent

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// Version is sent in RegisterRequest.version.
const Version = "0.1.0"

// Defaults shared with the Python worker.
const (
	DefaultCoordinator = "127.0.0.1:50051"
	DefaultGroup       = "main"
	DefaultHeartbeat   = 3 * time.Second
	DefaultRPCTimeout  = 10 * time.Second
	// LeaseLinger is how long a busy worker waits for more slots to free
	// before it leases (docs/protocol.md §3): every call costs the
	// coordinator far more than a task in it does.
	LeaseLinger = 2 * time.Millisecond
	// DefaultExitFlush is how long a leaving worker keeps trying to deliver its last reports.
	DefaultExitFlush = 10 * time.Second
	// DefaultAuthAttempts is how many registrations refused for bad credentials
	// in a row end the worker (ExitAuth).
	DefaultAuthAttempts = 5
	// ExitRejected is the exit code when the coordinator rejects the registration as invalid.
	ExitRejected = 1
	// ExitAuth is the exit code when the coordinator keeps rejecting the credentials.
	ExitAuth = 5
	// ExitNameTaken is the exit code when another live worker keeps this
	// worker's name (Register answers ALREADY_EXISTS), as the Python worker's.
	ExitNameTaken = 6
	// StaleLeasesKey is the trailer listing rejected leases as "task:attempt,..."
	// (coordinators before stale lists in answers).
	StaleLeasesKey = "taskgrid-stale-leases"
)

// Capability names declared at Register.
const CapabilityCommand = "command"

// Config is everything the worker's flags decide.
type Config struct {
	// Coordinator is one coordinator address (HOST:PORT, [ADDR]:PORT for
	// IPv6) or several, comma-separated; a name stands for every address it
	// resolves to. Calls fail over between them (coordinators.go).
	Coordinator  string
	Resolver     Resolver // looks up the coordinator names; nil: net.DefaultResolver
	Security     Security
	GroupNames   []string
	WorkerName   string
	Heartbeat    time.Duration
	MaxEmptyRuns int
	Concurrency  int
	KillGrace    time.Duration
	Handlers     map[string]runner.Handler
	// HandlerExecutable runs handlers out of process (runner.Config); "": on goroutines.
	HandlerExecutable string
	Commands          *runner.CommandPolicy // nil: no command tasks, no "command" capability
	Logger            *slog.Logger
	// MetricsListen is where Prometheus metrics are served (HOST:PORT, port 0
	// picks a free one; metrics.go); "": nothing is collected or served. New
	// binds it, Run serves it until the worker exits.
	MetricsListen string
}

// Agent is one worker: a session with the coordinator and a pool of runs.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	pool     *runner.Pool
	outbox   *Outbox
	reporter *reporter
	metrics  *workerMetrics         // nil without Config.MetricsListen
	rpc      pb.WorkerServiceClient // through coord: the calls fail over between coordinators
	coord    *coordinators

	mu           sync.Mutex
	session      *pb.WorkerSession
	generation   int // bumped when a session is lost: late errors of old calls are moot
	status       pb.WorkerStatus
	leaving      string // why the worker exits once its runs are over; "" while serving
	killing      bool
	heartbeat    time.Duration
	emptyRuns    int
	holdUntil    time.Time               // Lease answers at once while a stop is pending: pause
	quietUntil   time.Time               // DISABLED: no Lease before then (disabledPollLocked)
	dropped      map[runner.Key]bool     // runs whose outcome must never be reported
	unfinished   map[runner.Key]bool     // submitted runs whose outcome is not queued yet
	toRelease    map[runner.Key]struct{} // leases received while leaving, to hand back
	failedCalls  int                     // consecutive failed calls, so an outage is logged once
	authFailures int
	exitCode     int
	deadAfter    time.Duration // the coordinator's, from the last registration (0: not known yet)
	nameTakenAt  time.Time     // first ALREADY_EXISTS of the current registration attempts

	releaseFailures int // consecutive failed Release calls (main loop only)

	// ACK+FETCH (docs/protocol.md §7): finished runs ride on the next Lease
	// when the coordinator said lease_takes_reports.
	takesReports  bool // from the last RegisterResponse
	carrying      bool // the main loop leases next: the reporter leaves the reports to it
	leaseInFlight bool // runs ending now go by Report: no Lease will carry them soon

	// How long a Lease waits for more free slots and a Report for more
	// finished runs (LeaseLinger, ReportLinger; tests lengthen them).
	leaseLinger, reportLinger time.Duration

	wakeMain      chan struct{}
	wakeHeartbeat chan struct{}
	stopping      chan struct{}
}

// New builds an agent; nothing talks to the coordinator before Run.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if len(cfg.GroupNames) == 0 {
		cfg.GroupNames = []string{DefaultGroup}
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	entries, err := parseCoordinators(cfg.Coordinator)
	if err != nil {
		return nil, err
	}
	opts, err := cfg.Security.DialOptions(cfg.Coordinator)
	if err != nil {
		return nil, err
	}
	pinned := cfg.Security.usesTLS() && cfg.Security.ServerName != ""
	coord, err := newCoordinators(entries, cfg.Resolver, opts, pinned, cfg.Logger)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger, outbox: NewOutbox(), coord: coord,
		rpc:    pb.NewWorkerServiceClient(coord),
		status: pb.WorkerStatus_WORKER_STATUS_ACTIVE, heartbeat: cfg.Heartbeat,
		dropped: map[runner.Key]bool{}, unfinished: map[runner.Key]bool{},
		toRelease: map[runner.Key]struct{}{},
		wakeMain:  make(chan struct{}, 1), wakeHeartbeat: make(chan struct{}, 1),
		stopping: make(chan struct{}), leaseLinger: LeaseLinger, reportLinger: ReportLinger,
	}
	a.pool = runner.New(runner.Config{
		Handlers: cfg.Handlers, Concurrency: cfg.Concurrency, KillGrace: cfg.KillGrace,
		Commands: cfg.Commands, Logger: cfg.Logger, HandlerExecutable: cfg.HandlerExecutable,
	}, a.onFinish)
	a.reporter = newReporter(a)
	if cfg.MetricsListen != "" {
		if a.metrics, err = newMetrics(cfg.MetricsListen, max(1, cfg.Concurrency), a.pool.FreeSlots); err != nil {
			_ = coord.Close()
			return nil, err
		}
	}
	return a, nil
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sleep waits for d (forever when d < 0) or a wake-up on ch.
func sleep(ch <-chan struct{}, d time.Duration) {
	if d < 0 {
		<-ch
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	}
}

// Run serves until told to leave and returns the exit code: 0 after
// TERMINATE, KILL, a signal or max_empty_runs; ExitRejected when the
// coordinator rejected the registration as invalid; ExitAuth when it kept
// rejecting the credentials; ExitNameTaken when another live worker kept
// this worker's name.
func (a *Agent) Run() int {
	a.metrics.serve(a.log)
	defer a.metrics.close()
	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); a.heartbeatLoop() }()
	go func() { defer loops.Done(); a.reporter.loop() }()
	a.mainLoop()
	if a.reporter.waitIdle(DefaultExitFlush) {
		a.sayLeaving()
	} else {
		a.log.Error("exiting with undelivered reports", "leases", len(a.outbox.HeldKeys()))
	}
	close(a.stopping)
	a.reporter.wake()
	done := make(chan struct{})
	go func() { loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(DefaultRPCTimeout):
	}
	a.pool.Close(a.cfg.KillGrace + 5*time.Second)
	_ = a.coord.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Info("worker exiting", "reason", a.leaving)
	return a.exitCode
}

// sayLeaving sends one last heartbeat so the coordinator marks this worker
// gone at once instead of after dead_after (best effort).
func (a *Agent) sayLeaving() {
	a.mu.Lock()
	session := a.session
	a.mu.Unlock()
	if session == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.rpc.Heartbeat(ctx, &pb.HeartbeatRequest{Session: session, Leaving: true}); err != nil {
		a.log.Debug("leaving heartbeat failed", "error", err)
	}
}

// RequestDrain leaves like TERMINATE: no more leases, running tasks finish
// and are reported, exit 0. A heartbeat saying so (draining) goes out at
// once, so the coordinator answers the pending long-poll with no task.
func (a *Agent) RequestDrain() {
	a.applyStatus(pb.WorkerStatus_WORKER_STATUS_TERMINATE)
	notify(a.wakeHeartbeat)
}

// RequestExit leaves like KILL: running tasks are stopped and reported
// STOPPED, exit 0.
func (a *Agent) RequestExit() {
	a.applyStatus(pb.WorkerStatus_WORKER_STATUS_KILL)
}

// ---- main loop: register and lease ----------------------------------------

func (a *Agent) mainLoop() {
	backoff := NewBackoff()
	for {
		a.mu.Lock()
		if a.session == nil || len(a.toRelease) > 0 || !a.mayLeaseLocked() {
			a.stopCarryingLocked() // no Lease comes next: the reporter sends them
		}
		if a.leaving != "" && len(a.pool.ActiveKeys()) == 0 && len(a.unfinished) == 0 &&
			(len(a.toRelease) == 0 || a.session == nil) {
			a.mu.Unlock()
			return
		}
		if a.leaving != "" && a.session == nil {
			a.mu.Unlock() // no session, nothing to send: wait for the runs to end
			sleep(a.wakeMain, -1)
			continue
		}
		if a.session != nil && len(a.toRelease) == 0 && !a.mayLeaseLocked() {
			wakeAt := a.holdUntil
			if a.status == pb.WorkerStatus_WORKER_STATUS_DISABLED && a.quietUntil.After(wakeAt) {
				wakeAt = a.quietUntil
			}
			hold := time.Until(wakeAt)
			if hold <= 0 {
				hold = -1
			}
			a.mu.Unlock()
			sleep(a.wakeMain, hold)
			continue
		}
		hasSession := a.session != nil
		release := len(a.toRelease) > 0
		a.mu.Unlock()
		var ok bool
		switch {
		case !hasSession:
			ok = a.registerOnce()
		case release:
			ok = a.releaseOnce()
		default:
			ok = a.leaseOnce()
		}
		switch {
		case ok:
			backoff.Reset()
		case !hasSession:
			sleep(a.wakeMain, a.registerRetryCap(backoff.Next()))
		default:
			sleep(a.wakeMain, backoff.Next())
		}
	}
}

// mayLeaseLocked says whether the main loop calls Lease now. A DISABLED worker
// calls it too (it leases nothing): the coordinator holds the call open until the
// worker is resumed, so resume reaches it at once.
func (a *Agent) mayLeaseLocked() bool {
	now := time.Now()
	wanted := a.status == pb.WorkerStatus_WORKER_STATUS_ACTIVE ||
		(a.status == pb.WorkerStatus_WORKER_STATUS_DISABLED && !now.Before(a.quietUntil))
	return a.leaving == "" && wanted && !now.Before(a.holdUntil) && a.pool.FreeSlots() > 0
}

// disabledPollLocked runs after a Lease sent while DISABLED. A coordinator holds
// such a call until the worker's status changes (or a stop comes, or wait_s
// passes); one that answered at once, still DISABLED, with nothing to say, does
// not (an older one): ask again only after a heartbeat, whose answer brings
// resume as before, rather than spin.
func (a *Agent) disabledPollLocked(response *pb.LeaseResponse, took time.Duration) {
	if took < a.heartbeat/2 && response.GetStatus() == pb.WorkerStatus_WORKER_STATUS_DISABLED &&
		len(response.GetLeases()) == 0 && len(response.GetStop()) == 0 {
		a.quietUntil = time.Now().Add(a.heartbeat)
		a.log.Debug("DISABLED Lease answered at once: polling at heartbeats")
	}
}

// gatherFreeSlots lets a busy worker's slots free before it leases: runs
// of a busy worker end within moments of each other, so waiting up to
// leaseLinger (or until no run is left, each ending one's report queued,
// so the Lease may carry it) makes one Lease ask for several tasks. An
// idle worker leases at once. False when the main loop must look again
// first (a command, a lease to hand back, no session).
func (a *Agent) gatherFreeSlots() bool {
	deadline := time.Now().Add(a.leaseLinger)
	waited := false
	for a.othersRunning() {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		sleep(a.wakeMain, left) // onFinish wakes it
		waited = true
	}
	if !waited {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.session != nil && len(a.toRelease) == 0 && a.mayLeaseLocked()
}

// stopCarryingLocked hands finished runs left for a Lease back to the reporter.
func (a *Agent) stopCarryingLocked() {
	if a.carrying {
		a.carrying = false
		a.reporter.wake()
	}
}

// isCarrying: the main loop is about to lease and takes the queued reports along.
func (a *Agent) isCarrying() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.carrying
}

// leaseOnce makes one long-poll Lease for the free slots; false when the call failed.
// Finished runs in the outbox ride along when the coordinator takes reports
// on Lease: one call instead of a Report and a Lease.
func (a *Agent) leaseOnce() bool {
	a.mu.Lock()
	a.carrying = a.takesReports
	a.mu.Unlock()
	if !a.gatherFreeSlots() {
		a.mu.Lock()
		a.stopCarryingLocked()
		a.mu.Unlock()
		return true // the wake-up it took may have been for something else
	}
	a.mu.Lock()
	session, generation := a.session, a.generation
	free := a.pool.FreeSlots()
	wasBusy := len(a.pool.ActiveKeys()) > 0
	interval := a.heartbeat
	disabled := a.status == pb.WorkerStatus_WORKER_STATUS_DISABLED
	calling := session != nil && free > 0
	var carried []runner.Result
	if a.carrying && calling {
		carried = a.reporter.takeForLease() // in flight, so still held, until settled
	}
	a.carrying = false
	a.leaseInFlight = calling
	a.reporter.wake() // it may have left reports to this call
	a.mu.Unlock()
	if !calling {
		return true
	}
	defer func() {
		a.mu.Lock()
		a.leaseInFlight = false
		a.mu.Unlock()
	}()
	request := &pb.LeaseRequest{Session: session, MaxTasks: int32(free), WaitS: interval.Seconds()}
	for _, result := range carried {
		request.Reports = append(request.Reports, reportPB(result))
	}
	ctx, cancel := context.WithTimeout(context.Background(), interval+DefaultRPCTimeout)
	defer cancel()
	var trailer metadataMD
	sent := time.Now()
	response, err := a.rpc.Lease(ctx, request, grpc.Trailer(&trailer))
	if err != nil {
		ok := a.failed("Lease", err, generation, trailer)
		a.restoreCarried(carried, generation, staleKeys(trailer))
		return ok
	}
	a.noteSuccess()
	if len(carried) > 0 {
		if stale := keysOf(response.GetStale()); len(stale) > 0 {
			a.dropLeases(stale, "Lease")
		}
		a.outbox.SettleReports(carried)
		a.outbox.Delivered(resultKeys(carried))
		a.log.Debug("reported on Lease", "runs", len(carried), "stale", len(response.GetStale()))
	}
	a.log.Debug("lease answered", "asked", free, "got", len(response.GetLeases()), "stop", len(response.GetStop()))
	a.applyStatus(response.GetStatus())
	a.applyStops(response.GetStop())
	a.mu.Lock()
	defer a.mu.Unlock()
	if disabled {
		a.disabledPollLocked(response, time.Since(sent))
	}
	if generation != a.generation {
		return true // the session was lost meanwhile, and these leases with it
	}
	for _, lease := range response.GetLeases() {
		a.startLocked(taskFromLease(lease))
	}
	if len(response.GetStop()) > 0 && len(response.GetLeases()) == 0 {
		a.holdUntil = time.Now().Add(a.heartbeat)
	}
	a.countEmptyRunLocked(len(response.GetLeases()) > 0 || wasBusy)
	return true
}

// restoreCarried puts back the reports of a failed Lease: the worker cannot
// know whether they were applied, so the reporter sends them again with
// Report, which lists those already applied as stale. Nothing goes back
// when the session was lost meanwhile, nor the leases the old trailer
// named stale (dropped already).
func (a *Agent) restoreCarried(carried []runner.Result, generation int, stale []runner.Key) {
	if len(carried) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.outbox.SettleReports(carried)
	if generation == a.generation {
		a.outbox.RestoreByReport(without(carried, stale))
		a.reporter.wake()
	}
}

// startLocked runs a fresh lease, or keeps it to hand back when leaving.
func (a *Agent) startLocked(task runner.Task) {
	key := task.Key
	a.log.Debug("leased", "task", key.TaskID, "attempt", key.Attempt, "function", task.FunctionName)
	if a.leaving != "" {
		a.toRelease[key] = struct{}{}
		return
	}
	if a.unfinished[key] {
		a.log.Warn("lease received twice", "task", key.TaskID, "attempt", key.Attempt)
		return
	}
	if err := a.pool.Submit(task); err != nil {
		a.log.Warn("cannot start a lease, handing it back", "task", key.TaskID, "attempt", key.Attempt, "error", err)
		a.toRelease[key] = struct{}{}
		return
	}
	a.unfinished[key] = true
	a.reporter.runStarted(task)
	a.metrics.started(task)
}

// countEmptyRunLocked applies web2py's max_empty_runs: consecutive empty
// leases while idle end the worker.
func (a *Agent) countEmptyRunLocked(hadWork bool) {
	if hadWork {
		a.emptyRuns = 0
		return
	}
	if a.status != pb.WorkerStatus_WORKER_STATUS_ACTIVE {
		return // DISABLED passes are not counted
	}
	a.emptyRuns++
	if limit := a.cfg.MaxEmptyRuns; limit > 0 && a.emptyRuns >= limit && a.leaving == "" {
		a.log.Info("no work after empty lease calls, leaving", "empty_runs", a.emptyRuns)
		a.leaving = "max_empty_runs"
	}
}
