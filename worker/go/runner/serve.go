package runner

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

var inHandlerProcess atomic.Bool

// InHandlerProcess reports whether this process is a handler process
// (ServeChild): there a handler may change process-wide state, such as a
// signal's disposition, without touching the worker.
func InHandlerProcess() bool { return inHandlerProcess.Load() }

// ServeChild is the main loop of a handler process (the worker's binary
// started with ChildEnv=1): it runs the runs its parent pool sends on fd 3,
// one at a time, and answers each on fd 4. Fds 1 and 2 are the run's
// captured output, so whatever a handler or its subprocesses print is
// captured; Output(ctx) writes to fd 1. SIGTERM cancels the run's context
// and the process exits once the handler has returned. It returns the exit
// code: 0 when the parent closes the requests.
func ServeChild(handlers map[string]Handler) int {
	inHandlerProcess.Store(true)
	_ = os.Unsetenv(ChildEnv) // not for the handlers' subprocesses
	// Kept from subprocesses: one left running must not hold the pipes open.
	syscall.CloseOnExec(childRequestFD)
	syscall.CloseOnExec(childResultFD)
	requests := os.NewFile(childRequestFD, "taskgrid-requests")
	results := os.NewFile(childResultFD, "taskgrid-results")
	if requests == nil || results == nil {
		_, _ = fmt.Fprintln(os.Stderr, "taskgrid-worker: "+ChildEnv+" is set, but fds 3 and 4 are not open")
		return 2
	}
	term := make(chan os.Signal, 1)
	for {
		var req childRequest
		if err := readFrame(requests, &req); err != nil {
			return 0
		}
		// Armed again for every run: a handler may have ignored or reset SIGTERM.
		signal.Notify(term, syscall.SIGTERM)
		end := serveOne(handlers, req, term)
		_, _ = os.Stdout.WriteString(req.Sentinel)
		_, _ = os.Stderr.WriteString(req.Sentinel)
		res := childResult{Completed: end.outcome == Completed, Result: end.result, Traceback: end.traceback}
		if err := writeFrame(results, res); err != nil {
			return 1
		}
		select {
		case <-term: // stopped: the parent replaces this process
			return 0
		default:
		}
	}
}

// serveOne runs one request; a SIGTERM meanwhile cancels its context (and
// is put back in term, so the loop exits after answering).
func serveOne(handlers map[string]Handler, req childRequest, term chan os.Signal) ending {
	handler, args, vars, bad := prepare(handlers, req.Function, req.Args, req.Vars)
	if bad != nil {
		return *bad
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	returned := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case sig := <-term:
			cancel()
			select {
			case term <- sig:
			default:
			}
		case <-returned:
		}
	}()
	task := Task{Key: Key{TaskID: req.TaskID, Attempt: req.Attempt}, RunID: req.RunID, UUID: req.UUID}
	ctx = runContext(ctx, task, os.Stdout)
	done := make(chan ending, 1)
	callHandler(ctx, handler, args, vars, done)
	close(returned)
	<-watched
	return <-done
}
