// Package worker is the public API of the taskgrid Go worker: register Go
// handler functions, then hand control to Main.
//
//	func main() {
//		worker.Register("add", func(ctx context.Context, args []any, vars map[string]any) (any, error) {
//			return args[0].(float64) + args[1].(float64), nil
//		})
//		worker.Main()
//	}
//
// Handlers must be registered before Main (or Run): by default each runs
// in a handler process, the worker's own binary re-executed (one long-lived
// process per --concurrency slot), which looks the handler up by name. Its
// fds 1 and 2 are the run's captured output (with web2py's `!clear!` rule):
// Output(ctx), fmt.Println, the log package and subprocesses all land there.
// Current(ctx) says which run it is. Timeouts and stop commands cancel ctx
// (SIGTERM to the process group) and the process group is killed after the
// kill grace, then replaced before the slot takes another run: a handler
// that ignores its context cannot outlive its run.
//
// With --in-process-handlers handlers run on goroutines of the worker
// instead. Go cannot kill a goroutine, so one that ignores its context is
// reported TIMEOUT or STOPPED after the kill grace and left running,
// abandoned (its output dropped, its slot freed); only Output(ctx) is
// captured; a panic on another goroutine or an os.Exit ends the worker.
//
// Args and vars are the task's JSON decoded with encoding/json (numbers
// are float64, objects map[string]any); the returned value is encoded with
// encoding/json as the run's result, and one it cannot encode fails the
// run. A returned error fails the run with its text as the traceback; a
// panic fails it with the panic value and the goroutine's stack; a handler
// process that dies (os.Exit, a panic on another goroutine) fails the run
// with its exit status and the last lines of its stderr.
//
// Nothing else of the worker's machinery (agent, runner, capture) is
// needed to write handlers.
package worker

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"taskgrid.local/worker/runner"
)

// Handler is a Go task function.
type Handler = runner.Handler

// Info identifies the run in progress: task id, uuid, run id and attempt.
type Info = runner.Info

var (
	registryMu sync.Mutex
	registry   = map[string]Handler{}
)

// Register makes handler available as the task function name. It panics
// on an empty name, a name starting with "@" (reserved, e.g. "@command"),
// or a name registered twice, as http.HandleFunc does: these are
// programming errors found at start-up.
func Register(name string, handler Handler) {
	registryMu.Lock()
	defer registryMu.Unlock()
	switch {
	case strings.TrimSpace(name) == "" || name != strings.TrimSpace(name):
		panic(fmt.Sprintf("worker.Register: invalid function name %q", name))
	case strings.HasPrefix(name, "@"):
		panic(fmt.Sprintf("worker.Register: function names starting with @ are reserved: %q", name))
	case handler == nil:
		panic(fmt.Sprintf("worker.Register: nil handler for %q", name))
	}
	if _, ok := registry[name]; ok {
		panic(fmt.Sprintf("worker.Register: function %q registered twice", name))
	}
	registry[name] = handler
}

// Handlers returns a copy of the registered handlers, by name.
func Handlers() map[string]Handler {
	registryMu.Lock()
	defer registryMu.Unlock()
	out := make(map[string]Handler, len(registry))
	for name, handler := range registry {
		out[name] = handler
	}
	return out
}

// Output returns where a handler prints: the run's captured output.
// Outside a run it discards what is written.
func Output(ctx context.Context) io.Writer { return runner.Output(ctx) }

// Current returns the run a handler's context belongs to; false outside a run.
func Current(ctx context.Context) (Info, bool) { return runner.Current(ctx) }

// InHandlerProcess reports whether handlers run in a handler process (the
// default) rather than in the worker (--in-process-handlers): only there may
// a handler change process-wide state, such as signal dispositions, safely.
func InHandlerProcess() bool { return runner.InHandlerProcess() }
