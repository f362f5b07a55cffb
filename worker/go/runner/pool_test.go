package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"taskgrid.local/worker/capture"
)

// harness runs tasks on a pool and collects their results.
type harness struct {
	t       *testing.T
	pool    *Pool
	results chan Result
	nextID  int64
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, results: make(chan Result, 16)}
	if cfg.Handlers == nil {
		cfg.Handlers = testHandlers()
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 4
	}
	h.pool = New(cfg, func(r Result) { h.results <- r })
	t.Cleanup(func() { h.pool.Close(10 * time.Second) })
	return h
}

func (h *harness) submit(task Task) Key {
	h.t.Helper()
	h.nextID++
	task.Key = Key{TaskID: h.nextID, Attempt: 1}
	task.UUID = fmt.Sprintf("uuid-%d", h.nextID)
	task.RunID = 100 + h.nextID
	if err := h.pool.Submit(task); err != nil {
		h.t.Fatal(err)
	}
	return task.Key
}

func (h *harness) result(timeout time.Duration) Result {
	h.t.Helper()
	select {
	case r := <-h.results:
		return r
	case <-time.After(timeout):
		h.t.Fatalf("no result after %s", timeout)
		return Result{}
	}
}

func (h *harness) run(task Task) Result {
	h.t.Helper()
	h.submit(task)
	return h.result(10 * time.Second)
}

// waitFor polls cond (tests wait on conditions, never fixed sleeps).
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testHandlers() map[string]Handler {
	return map[string]Handler{
		"add": func(_ context.Context, args []any, _ map[string]any) (any, error) {
			return args[0].(float64) + args[1].(float64), nil
		},
		"fail": func(context.Context, []any, map[string]any) (any, error) {
			return nil, errors.New("RuntimeError: kaboom")
		},
		"panic": func(context.Context, []any, map[string]any) (any, error) {
			panic("oh no")
		},
		"chan": func(context.Context, []any, map[string]any) (any, error) {
			return make(chan int), nil
		},
		"print": func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
			_, _ = io.WriteString(Output(ctx), "50%\n")
			_, _ = io.WriteString(Output(ctx), "!clear!100%\n")
			info, _ := Current(ctx)
			return []any{info.ID, info.UUID, info.RunID, info.Attempt}, nil
		},
		"wait": func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"stubborn": func(context.Context, []any, map[string]any) (any, error) {
			time.Sleep(time.Hour) // ignores its context on purpose
			return nil, nil
		},
	}
}

func TestHandlerResultIsJSON(t *testing.T) {
	h := newHarness(t, Config{})
	r := h.run(Task{FunctionName: "add", Args: "[2, 3.5]"})
	if r.Outcome != Completed || r.Result == nil || *r.Result != "5.5" {
		t.Fatalf("got %+v", r)
	}
}

func TestHandlerErrorPanicAndBadResultFail(t *testing.T) {
	h := newHarness(t, Config{})
	cases := map[string]string{
		"fail":    "RuntimeError: kaboom",
		"panic":   "panic: oh no",
		"chan":    "cannot be encoded as JSON",
		"missing": `function "missing" is not registered`,
	}
	for name, want := range cases {
		r := h.run(Task{FunctionName: name})
		if r.Outcome != Failed || r.Result != nil || !strings.Contains(r.Traceback, want) {
			t.Errorf("%s: got %+v", name, r)
		}
	}
	if r := h.run(Task{FunctionName: "panic"}); !strings.Contains(r.Traceback, "goroutine") {
		t.Errorf("panic traceback has no stack: %q", r.Traceback)
	}
	if r := h.run(Task{FunctionName: "add", Args: "{"}); r.Outcome != Failed {
		t.Errorf("bad args: got %+v", r)
	}
}

func TestHandlerOutputAndCurrent(t *testing.T) {
	h := newHarness(t, Config{})
	r := h.run(Task{FunctionName: "print"})
	if r.Outcome != Completed || *r.Result != `[1,"uuid-1",101,1]` {
		t.Fatalf("got %+v", r)
	}
	if got := capture.Join(r.Output); got != "100%\n" || !r.Output[0].Clear {
		t.Fatalf("output %+v", r.Output)
	}
}

func TestHandlerTimeoutCancelsItsContext(t *testing.T) {
	h := newHarness(t, Config{KillGrace: time.Second})
	start := time.Now()
	r := h.run(Task{FunctionName: "wait", Timeout: 100 * time.Millisecond})
	if r.Outcome != Timeout || time.Since(start) > 900*time.Millisecond {
		t.Fatalf("got %+v after %s", r, time.Since(start))
	}
}

func TestHandlerIgnoringCancellationIsAbandonedAfterTheGrace(t *testing.T) {
	h := newHarness(t, Config{KillGrace: 100 * time.Millisecond})
	key := h.submit(Task{FunctionName: "stubborn"})
	waitFor(t, "the run to be active", time.Second, func() bool { return len(h.pool.ActiveKeys()) == 1 })
	if !h.pool.Stop(key, Stopped) || h.pool.Stop(key, Stopped) {
		t.Fatal("Stop must start the stop once")
	}
	if r := h.result(5 * time.Second); r.Outcome != Stopped {
		t.Fatalf("got %+v", r)
	}
	if h.pool.FreeSlots() != 4 {
		t.Fatal("the abandoned run still holds its slot")
	}
}

func TestFreeSlotsCountRuns(t *testing.T) {
	h := newHarness(t, Config{Concurrency: 2})
	h.submit(Task{FunctionName: "wait"})
	if h.pool.FreeSlots() != 1 {
		t.Fatalf("free slots %d", h.pool.FreeSlots())
	}
	if stopped := h.pool.StopAll(Stopped); len(stopped) != 1 {
		t.Fatalf("stopped %v", stopped)
	}
	if r := h.result(5 * time.Second); r.Outcome != Stopped {
		t.Fatalf("got %+v", r)
	}
}
