package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"taskgrid.local/worker/capture"
)

// DefaultKillGrace is the time between SIGTERM and SIGKILL when a command
// or a handler process is stopped or times out, and how long a cancelled
// in-process handler may take to return before it is abandoned.
const DefaultKillGrace = 5 * time.Second

// Config says what a Pool may run.
type Config struct {
	Handlers    map[string]Handler
	Concurrency int
	KillGrace   time.Duration
	Commands    *CommandPolicy // nil: command tasks are refused
	Logger      *slog.Logger
	// HandlerExecutable, when set, runs handlers out of process: in one
	// long-lived child per slot, this executable started with ChildEnv=1
	// (the worker's own binary, whose main serves its handlers, ServeChild),
	// so a handler that ignores its context can be killed. "": handlers run
	// on goroutines of this process and are abandoned, not killed.
	HandlerExecutable string
}

// Pool runs up to Concurrency tasks at once, each on its own goroutine
// (handlers in a handler process per slot when HandlerExecutable is set).
// Every method is safe from any goroutine; onFinish is called once per run,
// from that run's goroutine, after the run left the pool.
type Pool struct {
	cfg      Config
	onFinish func(Result)
	log      *slog.Logger

	mu       sync.Mutex
	runs     map[Key]*run
	slots    chan *slot   // free handler slots (HandlerExecutable only)
	children map[int]bool // live handler processes; under mu
	closing  bool
	wg       sync.WaitGroup
}

type run struct {
	task    Task
	output  *capture.Buffer
	started time.Time
	reason  Outcome       // why it is being ended early (0: it is not); under mu
	stop    chan struct{} // closed once reason is set
	pid     int           // a command's process (and process group) id; under mu
}

// New returns a pool that calls onFinish with the end of every run.
func New(cfg Config, onFinish func(Result)) *Pool {
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Pool{cfg: cfg, onFinish: onFinish, log: cfg.Logger, runs: map[Key]*run{}, children: map[int]bool{}}
	if cfg.HandlerExecutable != "" {
		p.slots = make(chan *slot, cfg.Concurrency)
		for range cfg.Concurrency {
			p.slots <- &slot{}
		}
	}
	return p
}

// ErrClosing is returned by Submit once Close was called.
var ErrClosing = errors.New("runner: pool is closing")

// Submit starts task now; it never waits for the task.
func (p *Pool) Submit(task Task) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return ErrClosing
	}
	if _, ok := p.runs[task.Key]; ok {
		return fmt.Errorf("runner: lease %s is already running", task.Key)
	}
	r := &run{task: task, output: capture.NewBuffer(), started: time.Now(), stop: make(chan struct{})}
	p.runs[task.Key] = r
	p.wg.Add(1)
	go p.execute(r)
	return nil
}

// Stop ends the run of lease key early with outcome (STOPPED or TIMEOUT).
// It returns true when this call started the stop, false when the run is
// unknown or already ending (stop commands are re-sent until the run ends).
func (p *Pool) Stop(key Key, outcome Outcome) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.runs[key]
	return r != nil && p.beginStopLocked(r, outcome)
}

// StopAll stops every run and returns their keys.
func (p *Pool) StopAll(outcome Outcome) []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]Key, 0, len(p.runs))
	for key, r := range p.runs {
		p.beginStopLocked(r, outcome)
		keys = append(keys, key)
	}
	return keys
}

func (p *Pool) beginStopLocked(r *run, outcome Outcome) bool {
	if r.reason != 0 {
		return false
	}
	r.reason = outcome
	close(r.stop)
	p.log.Debug("stopping task", "task", r.task.TaskID, "attempt", r.task.Attempt, "reason", outcome)
	return true
}

// FreeSlots is how many tasks can be submitted now.
func (p *Pool) FreeSlots() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return 0
	}
	return max(0, p.cfg.Concurrency-len(p.runs))
}

// ActiveKeys lists the leases of every run not finished yet.
func (p *Pool) ActiveKeys() []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]Key, 0, len(p.runs))
	for key := range p.runs {
		keys = append(keys, key)
	}
	return keys
}

// Active is a snapshot of the runs in progress, for the output flusher.
func (p *Pool) Active() []Active {
	p.mu.Lock()
	defer p.mu.Unlock()
	active := make([]Active, 0, len(p.runs))
	for _, r := range p.runs {
		active = append(active, Active{Task: r.task, Output: r.output, Started: r.started})
	}
	return active
}

// ChildPids lists the processes of running command tasks and the handler
// processes (for RSS).
func (p *Pool) ChildPids() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pids []int
	for _, r := range p.runs {
		if r.pid > 0 {
			pids = append(pids, r.pid)
		}
	}
	for pid := range p.children {
		pids = append(pids, pid)
	}
	return pids
}

// Close refuses new tasks, stops every run (STOPPED) and waits up to
// timeout for them to end; false when some did not end in time. Then it
// ends the idle handler processes.
func (p *Pool) Close(timeout time.Duration) bool {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.StopAll(Stopped)
	ok := p.Wait(timeout)
	p.closeChildren()
	return ok
}

// Wait waits up to timeout for every run to end; false on timeout.
func (p *Pool) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (p *Pool) execute(r *run) {
	defer p.wg.Done()
	if r.task.Timeout > 0 {
		timer := time.AfterFunc(r.task.Timeout, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.beginStopLocked(r, Timeout) {
				p.log.Debug("task timed out", "task", r.task.TaskID, "attempt", r.task.Attempt)
			}
		})
		defer timer.Stop()
	}
	var end ending
	if r.task.Command != nil || r.task.FunctionName == CommandFunction {
		end = p.runCommand(r)
	} else if p.slots != nil {
		end = p.runInChild(r)
	} else {
		end = p.runHandler(r)
	}
	p.mu.Lock()
	if r.reason != 0 {
		end = ending{outcome: r.reason} // stopped or timed out: whatever it returned meanwhile
	}
	delete(p.runs, r.task.Key)
	p.mu.Unlock()
	r.output.Close()
	p.onFinish(Result{
		Task: r.task, Outcome: end.outcome, Result: end.result, Traceback: end.traceback,
		Output: r.output.Take(true), Started: r.started,
	})
}

// ending is how a run's body ended.
type ending struct {
	outcome   Outcome
	result    *string
	traceback string
}

func failed(format string, args ...any) ending {
	return ending{outcome: Failed, traceback: fmt.Sprintf(format, args...)}
}

// prepare finds the handler and decodes the task's args and vars; a
// non-nil ending says why the run fails instead.
func prepare(handlers map[string]Handler, name, argsText, varsText string) (Handler, []any, map[string]any, *ending) {
	handler := handlers[name]
	if handler == nil {
		end := failed("NameError: function %q is not registered in this worker", name)
		return nil, nil, nil, &end
	}
	var args []any
	if err := decodeJSON(argsText, "[]", &args); err != nil {
		end := failed("cannot decode the task's args as a JSON list: %v", err)
		return nil, nil, nil, &end
	}
	var vars map[string]any
	if err := decodeJSON(varsText, "{}", &vars); err != nil {
		end := failed("cannot decode the task's vars as a JSON object: %v", err)
		return nil, nil, nil, &end
	}
	if args == nil {
		args = []any{}
	}
	if vars == nil {
		vars = map[string]any{}
	}
	return handler, args, vars, nil
}

func (p *Pool) runHandler(r *run) ending {
	name := r.task.FunctionName
	handler, args, vars, bad := prepare(p.cfg.Handlers, name, r.task.Args, r.task.Vars)
	if bad != nil {
		return *bad
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = runContext(ctx, r.task, r.output)
	done := make(chan ending, 1)
	go callHandler(ctx, handler, args, vars, done)
	select {
	case end := <-done:
		return end
	case <-r.stop:
	}
	cancel()
	grace := time.NewTimer(p.cfg.KillGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		// A goroutine cannot be killed: it is left running and its output dropped.
		p.log.Warn("handler ignored cancellation; abandoning its goroutine",
			"task", r.task.TaskID, "attempt", r.task.Attempt, "function", name)
	}
	return ending{} // execute fills in the stop reason
}

func callHandler(ctx context.Context, handler Handler, args []any, vars map[string]any, done chan<- ending) {
	defer func() {
		if v := recover(); v != nil {
			done <- failed("panic: %v\n\n%s", v, debug.Stack())
		}
	}()
	value, err := handler(ctx, args, vars)
	if err != nil {
		done <- failed("%s", err.Error())
		return
	}
	data, err := json.Marshal(value)
	if err != nil {
		done <- failed("TypeError: the result cannot be encoded as JSON: %v", err)
		return
	}
	text := string(data)
	done <- ending{outcome: Completed, result: &text}
}

func decodeJSON(text, empty string, into any) error {
	if text == "" {
		text = empty
	}
	return json.Unmarshal([]byte(text), into)
}
