// Package runner owns the runs: Go handler functions in handler processes
// (child.go, serve.go) or on goroutines, and command tasks as child
// processes, each with its captured output, its timeout and its stop.
//
// It knows nothing about gRPC: the agent turns leases into Tasks and
// Results into reports. A run ends exactly once, through the callback
// given to New, with COMPLETED, FAILED, TIMEOUT or STOPPED.
package runner

import (
	"context"
	"fmt"
	"io"
	"time"

	"taskgrid.local/worker/capture"
)

// CommandFunction is the function_name of command tasks.
const CommandFunction = "@command"

// Key names one lease, and so one run: a task and the attempt it was leased with.
type Key struct {
	TaskID  int64
	Attempt int64
}

func (k Key) String() string { return fmt.Sprintf("%d:%d", k.TaskID, k.Attempt) }

// Outcome is how a run ended (the worker's side of RunStatus).
type Outcome int

// The four ways a run ends.
const (
	Completed Outcome = iota + 1
	Failed
	Timeout
	Stopped
)

func (o Outcome) String() string {
	switch o {
	case Completed:
		return "COMPLETED"
	case Failed:
		return "FAILED"
	case Timeout:
		return "TIMEOUT"
	case Stopped:
		return "STOPPED"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Command is an executable run as a child process instead of a handler.
type Command struct {
	Executable string // a path or a name looked up in PATH
	Args       []string
	Env        map[string]string // added to the worker's environment
	Cwd        string            // default: the worker's
}

// Task is a leased task to run.
type Task struct {
	Key
	RunID        int64 // 0 when the task discards its results
	UUID         string
	FunctionName string
	TaskName     string
	Args         string        // JSON text of a list
	Vars         string        // JSON text of an object
	Timeout      time.Duration // 0 or less: no limit
	SyncOutput   time.Duration // 0: the default cadence
	Command      *Command      // set for command tasks
}

// Result is the end of one run.
type Result struct {
	Task      Task
	Outcome   Outcome
	Result    *string // JSON text of the return value (COMPLETED only)
	Traceback string
	Output    []capture.Chunk // chunks not taken live; their seq continues the live ones
	Started   time.Time       // when the run began (Submit)
}

// Active is a run in progress, as the output flusher sees it.
type Active struct {
	Task    Task
	Output  *capture.Buffer
	Started time.Time
}

// Handler is a Go task function. args and vars are the task's JSON args
// and vars decoded with encoding/json (numbers are float64). The returned
// value is encoded with encoding/json as the run's result. The context is
// cancelled on timeout and stop; Output(ctx) is where it prints (in a
// handler process, fd 1).
type Handler func(ctx context.Context, args []any, vars map[string]any) (any, error)

// Info identifies the run in progress, as web2py's W2P_TASK did.
type Info struct {
	ID      int64  // the task id
	UUID    string // the task's uuid
	RunID   int64  // the run record id; 0 when results are discarded
	Attempt int64  // the lease attempt (the fencing token of this run)
}

type contextKey int

const (
	infoKey contextKey = iota
	outputKey
)

// Current returns the run a handler's context belongs to; false outside a run.
func Current(ctx context.Context) (Info, bool) {
	info, ok := ctx.Value(infoKey).(Info)
	return info, ok
}

// Output returns the writer a handler prints to: it is the run's captured
// output (with `!clear!` applied). Outside a run it discards everything.
func Output(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(outputKey).(io.Writer); ok {
		return w
	}
	return io.Discard
}

func runContext(parent context.Context, task Task, out io.Writer) context.Context {
	info := Info{ID: task.TaskID, UUID: task.UUID, RunID: task.RunID, Attempt: task.Attempt}
	return context.WithValue(context.WithValue(parent, infoKey, info), outputKey, out)
}
