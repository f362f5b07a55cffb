// Package conformance holds the Go twins of tests/conformance/handlers.py:
// handlers of the same names and behaviour, so one scenario set runs
// against the Python worker and the Go worker. go_only exists only here
// (python_only only in Python), to test routing between languages.
//
// It doubles as an example of writing handlers: arguments come as the
// task's args (positional) and vars (by name), numbers as float64.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"taskgrid.local/worker/worker"
)

// Register registers every conformance handler with package worker.
func Register() {
	for name, handler := range Handlers() {
		worker.Register(name, handler)
	}
}

// Handlers returns the conformance handlers by name.
func Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{
		"add":          add,
		"echo":         echo,
		"fail":         fail,
		"sleep_for":    sleepFor,
		"print_lines":  printLines,
		"progress":     progress,
		"clear_many":   clearMany,
		"whoami":       whoami,
		"write_stderr": writeStderr,
		"go_only":      goOnly,
		"stubborn":     stubborn,
	}
}

// param returns positional argument i, else vars[name], else fallback.
func param(args []any, vars map[string]any, i int, name string, fallback any) any {
	if i < len(args) {
		return args[i]
	}
	if v, ok := vars[name]; ok {
		return v
	}
	return fallback
}

func number(v any, name string) (float64, error) {
	f, ok := v.(float64)
	if !ok {
		return 0, fmt.Errorf("TypeError: %s must be a number, not %T", name, v)
	}
	return f, nil
}

// pause sleeps for d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// add returns a + b for numbers, strings or lists, like Python's +.
func add(_ context.Context, args []any, vars map[string]any) (any, error) {
	a, b := param(args, vars, 0, "a", nil), param(args, vars, 1, "b", nil)
	switch x := a.(type) {
	case float64:
		if y, ok := b.(float64); ok {
			return x + y, nil
		}
	case string:
		if y, ok := b.(string); ok {
			return x + y, nil
		}
	case []any:
		if y, ok := b.([]any); ok {
			return append(append([]any{}, x...), y...), nil
		}
	}
	return nil, fmt.Errorf("TypeError: cannot add %T and %T", a, b)
}

// echo returns [args, vars].
func echo(_ context.Context, args []any, vars map[string]any) (any, error) {
	return []any{args, vars}, nil
}

// fail fails with msg (default "boom").
func fail(_ context.Context, args []any, vars map[string]any) (any, error) {
	return nil, fmt.Errorf("RuntimeError: %v", param(args, vars, 0, "msg", "boom"))
}

// sleepFor sleeps (until cancelled), then returns the seconds slept.
func sleepFor(ctx context.Context, args []any, vars map[string]any) (any, error) {
	s, err := number(param(args, vars, 0, "seconds", nil), "seconds")
	if err != nil {
		return nil, err
	}
	if err := pause(ctx, seconds(s)); err != nil {
		return nil, err
	}
	return s, nil
}

// printLines prints "line i" n times, delay seconds apart, and returns n.
func printLines(ctx context.Context, args []any, vars map[string]any) (any, error) {
	n, err := number(param(args, vars, 0, "n", nil), "n")
	if err != nil {
		return nil, err
	}
	delay, err := number(param(args, vars, 1, "delay", 0.0), "delay")
	if err != nil {
		return nil, err
	}
	out := worker.Output(ctx)
	for i := 0; i < int(n); i++ {
		_, _ = fmt.Fprintf(out, "line %d\n", i)
		if err := pause(ctx, seconds(delay)); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// progress prints 50%, then !clear!100%: the output ends as "100%".
func progress(ctx context.Context, args []any, vars map[string]any) (any, error) {
	delay, err := number(param(args, vars, 0, "delay", 0.0), "delay")
	if err != nil {
		return nil, err
	}
	out := worker.Output(ctx)
	_, _ = io.WriteString(out, "50%\n")
	if err := pause(ctx, seconds(delay)); err != nil {
		return nil, err
	}
	_, _ = io.WriteString(out, "!clear!100%\n")
	return 1, nil
}

// clearMany prints several markers: the output ends as "d\n".
func clearMany(ctx context.Context, _ []any, _ map[string]any) (any, error) {
	out := worker.Output(ctx)
	for _, line := range []string{"a\n", "!clear!b\n", "c!clear!d\n"} {
		_, _ = io.WriteString(out, line)
	}
	return nil, nil
}

// whoami returns [task id, uuid, run id] as the worker tells the handler.
func whoami(ctx context.Context, _ []any, _ map[string]any) (any, error) {
	info, ok := worker.Current(ctx)
	if !ok {
		return nil, errors.New("not inside a run")
	}
	return []any{info.ID, info.UUID, info.RunID}, nil
}

// writeStderr writes text to the run's output (a Go handler has one stream).
func writeStderr(ctx context.Context, args []any, vars map[string]any) (any, error) {
	_, _ = fmt.Fprint(worker.Output(ctx), param(args, vars, 0, "text", ""))
	return nil, nil
}

// goOnly is offered by the Go worker alone.
func goOnly(context.Context, []any, map[string]any) (any, error) {
	return "go", nil
}

// stubborn ignores cancellation and SIGTERM, so only SIGKILL ends it early:
// it appends "PID start T" to the file at path, then "PID tick T" every
// 50 ms for seconds seconds (T in Unix seconds), and returns seconds.
// SIGTERM is ignored only in a handler process (the default), whose
// disposition the worker sets again before its next run; in-process it
// would take the worker's own SIGTERM handling away.
func stubborn(_ context.Context, args []any, vars map[string]any) (any, error) {
	path, ok := param(args, vars, 0, "path", nil).(string)
	if !ok {
		return nil, errors.New("TypeError: path must be a string")
	}
	s, err := number(param(args, vars, 1, "seconds", nil), "seconds")
	if err != nil {
		return nil, err
	}
	if worker.InHandlerProcess() {
		signal.Ignore(syscall.SIGTERM)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	now := func() float64 { return float64(time.Now().UnixNano()) / 1e9 }
	if _, err := fmt.Fprintf(f, "%d start %f\n", os.Getpid(), now()); err != nil {
		return nil, err
	}
	for end := time.Now().Add(seconds(s)); time.Now().Before(end); {
		time.Sleep(min(50*time.Millisecond, time.Until(end)))
		if _, err := fmt.Fprintf(f, "%d tick %f\n", os.Getpid(), now()); err != nil {
			return nil, err
		}
	}
	return s, nil
}
