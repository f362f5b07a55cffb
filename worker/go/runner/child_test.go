package runner

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"taskgrid.local/worker/capture"
)

// TestMain makes the test binary a handler process when the pool under
// test re-executes it, as the worker's binary is (worker.Run).
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) == "1" {
		os.Exit(ServeChild(childHandlers()))
	}
	os.Exit(m.Run())
}

// childHandlers are testHandlers plus some that only make sense out of process.
func childHandlers() map[string]Handler {
	handlers := testHandlers()
	handlers["fds"] = func(ctx context.Context, args []any, _ map[string]any) (any, error) {
		tag := args[0].(string)
		fmt.Println("println", tag)
		_, _ = fmt.Fprintln(os.Stderr, "stderr", tag)
		log.Print("log ", tag)
		_, _ = fmt.Fprintln(Output(ctx), "output", tag)
		sub := exec.Command("/bin/sh", "-c", "echo sub-out $0; echo sub-err $0 >&2", tag)
		sub.Stdout, sub.Stderr = os.Stdout, os.Stderr
		return nil, sub.Run()
	}
	handlers["pid"] = func(context.Context, []any, map[string]any) (any, error) {
		return os.Getpid(), nil
	}
	handlers["token"] = func(context.Context, []any, map[string]any) (any, error) {
		return os.Getenv("TASKGRID_TOKEN"), nil
	}
	// deaf ignores its context and SIGTERM: only SIGKILL ends it.
	handlers["deaf"] = func(_ context.Context, args []any, _ map[string]any) (any, error) {
		signal.Ignore(syscall.SIGTERM)
		if err := os.WriteFile(args[0].(string), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return nil, err
		}
		time.Sleep(time.Hour)
		return nil, nil
	}
	handlers["live"] = func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
		fmt.Print("first !clear!second")
		<-ctx.Done()
		return nil, ctx.Err()
	}
	handlers["ignore_term"] = func(context.Context, []any, map[string]any) (any, error) {
		signal.Ignore(syscall.SIGTERM)
		return os.Getpid(), nil
	}
	handlers["exit"] = func(context.Context, []any, map[string]any) (any, error) {
		_, _ = fmt.Fprintln(os.Stderr, "bye")
		os.Exit(3)
		return nil, nil
	}
	return handlers
}

func childHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HandlerExecutable = exe
	if cfg.Handlers == nil {
		cfg.Handlers = childHandlers()
	}
	return newHarness(t, cfg)
}

func TestChildResultsErrorsAndPanics(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1})
	if r := h.run(Task{FunctionName: "add", Args: "[2, 3.5]"}); r.Outcome != Completed || *r.Result != "5.5" {
		t.Fatalf("add: got %+v", r)
	}
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
	if r := h.run(Task{FunctionName: "panic"}); !strings.Contains(r.Traceback, "goroutine") ||
		!strings.Contains(r.Traceback, "child_test.go") && !strings.Contains(r.Traceback, "pool_test.go") {
		t.Errorf("panic traceback has no stack: %q", r.Traceback)
	}
}

func TestChildOutputAndCurrent(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1})
	r := h.run(Task{FunctionName: "print"})
	if r.Outcome != Completed || *r.Result != `[1,"uuid-1",101,1]` {
		t.Fatalf("got %+v", r)
	}
	if got := capture.Join(r.Output); got != "100%\n" || !r.Output[0].Clear {
		t.Fatalf("output %+v", r.Output)
	}
}

func TestChildCapturesFdsAndSubprocessesPerRun(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1})
	var pids []string
	for _, tag := range []string{"one", "two"} {
		r := h.run(Task{FunctionName: "fds", Args: `["` + tag + `"]`})
		if r.Outcome != Completed {
			t.Fatalf("%s: got %+v", tag, r)
		}
		out := capture.Join(r.Output)
		for _, want := range []string{"println ", "stderr ", "log " /* after the log's timestamp */, "output ", "sub-out ", "sub-err "} {
			if !strings.Contains(out, want+tag+"\n") {
				t.Errorf("%s: no %q in %q", tag, want+tag, out)
			}
		}
		if strings.Contains(out, "one") && tag == "two" || strings.Contains(out, "taskgrid-run-end") {
			t.Errorf("%s: output of another run or a sentinel: %q", tag, out)
		}
		pids = append(pids, fmt.Sprint(h.pool.ChildPids()))
	}
	if pids[0] != pids[1] {
		t.Errorf("the slot's process changed between runs: %v", pids)
	}
}

func TestChildIgnoringContextAndSIGTERMIsKilledBeforeTheSlotRunsAgain(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	grace := 300 * time.Millisecond
	h := childHarness(t, Config{Concurrency: 1, KillGrace: grace})
	start := time.Now()
	h.submit(Task{FunctionName: "deaf", Args: "[" + strconv.Quote(pidFile) + "]", Timeout: 300 * time.Millisecond})
	old := readPid(t, pidFile)
	waitFor(t, "the timeout", 5*time.Second, func() bool { return time.Since(start) > 400*time.Millisecond })
	if !isAlive(old) || h.pool.FreeSlots() != 0 {
		t.Fatal("during the grace the process must live on and hold its slot")
	}
	r := h.result(5 * time.Second)
	elapsed := time.Since(start)
	if r.Outcome != Timeout {
		t.Fatalf("got %+v", r)
	}
	if elapsed < 600*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("ended after %s (timeout 0.3 s + grace 0.3 s)", elapsed)
	}
	if isAlive(old) { // reaped, not a zombie: /proc has no entry
		t.Fatalf("process %d still there when the run ended", old)
	}
	next := h.run(Task{FunctionName: "pid"})
	if next.Outcome != Completed || *next.Result == strconv.Itoa(old) {
		t.Fatalf("next run: %+v (old pid %d)", next, old)
	}
}

func TestChildCooperativeStopIsPrompt(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1, KillGrace: 10 * time.Second})
	key := h.submit(Task{FunctionName: "wait"})
	waitFor(t, "the handler process", 5*time.Second, func() bool { return len(h.pool.ChildPids()) == 1 })
	time.Sleep(50 * time.Millisecond) // let the request reach the handler
	start := time.Now()
	h.pool.Stop(key, Stopped)
	if r := h.result(5 * time.Second); r.Outcome != Stopped {
		t.Fatalf("got %+v", r)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the cancelled handler did not end the process: it waited for the grace")
	}
}

func TestChildOutputIsTakenLive(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1, KillGrace: time.Second})
	key := h.submit(Task{FunctionName: "live"})
	var live []capture.Chunk
	waitFor(t, "live output", 5*time.Second, func() bool {
		for _, a := range h.pool.Active() {
			live = append(live, a.Output.Take(false)...)
		}
		return capture.Join(live) == "second"
	})
	if !slices.ContainsFunc(live, func(c capture.Chunk) bool { return c.Clear }) {
		t.Fatalf("no clear in %+v", live)
	}
	h.pool.Stop(key, Stopped)
	if r := h.result(5 * time.Second); r.Outcome != Stopped || len(r.Output) != 0 {
		t.Fatalf("got %+v", r)
	}
}

func TestChildSIGTERMIsArmedAgainAfterAHandlerIgnoredIt(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1, KillGrace: 10 * time.Second})
	first := h.run(Task{FunctionName: "ignore_term"})
	key := h.submit(Task{FunctionName: "wait"})
	time.Sleep(100 * time.Millisecond) // let the request reach the handler
	start := time.Now()
	h.pool.Stop(key, Stopped)
	if r := h.result(5 * time.Second); r.Outcome != Stopped {
		t.Fatalf("got %+v", r)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("SIGTERM stayed ignored: the stop waited for the grace")
	}
	if r := h.run(Task{FunctionName: "pid"}); *r.Result == *first.Result {
		t.Fatal("the stopped process was not replaced")
	}
}

func TestChildExitFailsTheRunAndIsReplaced(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 1})
	r := h.run(Task{FunctionName: "exit"})
	if r.Outcome != Failed || !strings.Contains(r.Traceback, "exit code 3") || !strings.Contains(r.Traceback, "bye") {
		t.Fatalf("got %+v", r)
	}
	if r := h.run(Task{FunctionName: "add", Args: "[1, 1]"}); r.Outcome != Completed {
		t.Fatalf("after the exit: %+v", r)
	}
}

func TestChildPerSlotAndClosedWithThePool(t *testing.T) {
	h := childHarness(t, Config{Concurrency: 2})
	h.submit(Task{FunctionName: "wait"})
	h.submit(Task{FunctionName: "wait"})
	waitFor(t, "two handler processes", 5*time.Second, func() bool { return len(h.pool.ChildPids()) == 2 })
	pids := h.pool.ChildPids()
	h.pool.StopAll(Stopped)
	for range 2 {
		if r := h.result(5 * time.Second); r.Outcome != Stopped {
			t.Fatalf("got %+v", r)
		}
	}
	if r := h.run(Task{FunctionName: "pid"}); r.Outcome != Completed {
		t.Fatalf("got %+v", r)
	}
	if !h.pool.Close(5 * time.Second) {
		t.Fatal("close timed out")
	}
	if left := h.pool.ChildPids(); len(left) != 0 {
		t.Fatalf("processes left after Close: %v", left)
	}
	for _, pid := range pids {
		if isAlive(pid) {
			t.Errorf("process %d still there", pid)
		}
	}
}

// isAlive reports whether pid has an entry in /proc (a zombie counts: it was not reaped).
func isAlive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

func TestChildNeverSeesTheWorkersToken(t *testing.T) {
	t.Setenv("TASKGRID_TOKEN", "worker-secret-0123456789")
	h := childHarness(t, Config{})
	if r := h.run(Task{FunctionName: "token"}); r.Outcome != Completed || *r.Result != `""` {
		t.Fatalf("got %+v (result %v)", r, r.Result)
	}
}
