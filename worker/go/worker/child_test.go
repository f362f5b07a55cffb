package worker

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"taskgrid.local/worker/capture"
	"taskgrid.local/worker/runner"
)

// TestMain registers a handler, then hands control to Run as a worker's main
// does: when a pool re-executes this binary as a handler process, Run serves.
func TestMain(m *testing.M) {
	Register("test_child_whoami", func(ctx context.Context, _ []any, _ map[string]any) (any, error) {
		info, ok := Current(ctx)
		fmt.Println("stdout of", info.ID)
		return []any{ok, info.ID, info.UUID, info.RunID, info.Attempt, InHandlerProcess()}, nil
	})
	if os.Getenv(runner.ChildEnv) == "1" {
		os.Exit(Run(nil, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestRunServesRegisteredHandlersInAHandlerProcess(t *testing.T) {
	exe, err := selfExecutable()
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan runner.Result, 1)
	pool := runner.New(runner.Config{Handlers: Handlers(), HandlerExecutable: exe}, func(r runner.Result) { results <- r })
	defer pool.Close(5 * time.Second)
	task := runner.Task{Key: runner.Key{TaskID: 7, Attempt: 2}, RunID: 9, UUID: "u-7", FunctionName: "test_child_whoami"}
	if err := pool.Submit(task); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		if r.Outcome != runner.Completed || *r.Result != `[true,7,"u-7",9,2,true]` {
			t.Fatalf("got %+v", r)
		}
		if out := capture.Join(r.Output); out != "stdout of 7\n" {
			t.Fatalf("output %q", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
	if InHandlerProcess() {
		t.Fatal("the worker itself is not a handler process")
	}
}

func TestInProcessHandlersFlag(t *testing.T) {
	if o, err := parseEnv(nil, io.Discard, noEnv); err != nil || o.inProcessHandlers {
		t.Fatalf("default: %+v %v", o, err)
	}
	if o, err := parseEnv([]string{"--in-process-handlers"}, io.Discard, noEnv); err != nil || !o.inProcessHandlers {
		t.Fatalf("flag: %+v %v", o, err)
	}
	env := func(name string) (string, bool) {
		return "true", name == "TASKGRID_IN_PROCESS_HANDLERS"
	}
	if o, err := parseEnv(nil, io.Discard, env); err != nil || !o.inProcessHandlers {
		t.Fatalf("env: %+v %v", o, err)
	}
	path := t.TempDir() + "/worker.toml"
	if err := os.WriteFile(path, []byte("[worker]\nin_process_handlers = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err := parseEnv([]string{"--config", path}, io.Discard, noEnv); err != nil || !o.inProcessHandlers {
		t.Fatalf("config: %+v %v", o, err)
	}
}

func noEnv(string) (string, bool) { return "", false }
