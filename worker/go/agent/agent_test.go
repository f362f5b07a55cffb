package agent

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// gate is a handler that prints "started", then waits for release or cancellation.
type gate struct{ release chan struct{} }

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) handler(ctx context.Context, _ []any, _ map[string]any) (any, error) {
	_, _ = io.WriteString(runner.Output(ctx), "started\n")
	select {
	case <-g.release:
		_, _ = io.WriteString(runner.Output(ctx), "finished\n")
		return "done", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func handlers(g *gate) map[string]runner.Handler {
	return map[string]runner.Handler{
		"wait": g.handler,
		"add": func(_ context.Context, args []any, _ map[string]any) (any, error) {
			return args[0].(float64) + args[1].(float64), nil
		},
	}
}

func held(req *pb.HeartbeatRequest, key runner.Key) bool {
	return slices.ContainsFunc(req.GetRunning(), func(r *pb.LeaseRef) bool {
		return r.GetTaskId() == key.TaskID && r.GetAttempt() == key.Attempt
	})
}

func TestRegisterDeclaresFunctionsAndNoCommandCapabilityByDefault(t *testing.T) {
	f := startFake(t)
	startAgent(t, f, handlers(newGate()))
	f.waitUntil(t, "a registration", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.registers) > 0
	})
	f.with(func() {
		req := f.registers[0]
		if !slices.Equal(req.GetFunctions(), []string{"add", "wait"}) || req.GetLanguage() != "go" ||
			len(req.GetCapabilities()) != 0 || req.GetCapacity() != 2 || req.GetWorkerName() != "fake-w" {
			t.Errorf("register request %v", req)
		}
	})
}

func TestLiveOutputThenReportWithConsecutiveSeqs(t *testing.T) {
	f := startFake(t)
	g := newGate()
	startAgent(t, f, handlers(g))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "live output", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.chunks) > 0
	})
	f.waitUntil(t, "a heartbeat holding the lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.heartbeats) > 0 && held(f.heartbeats[len(f.heartbeats)-1], key)
	})
	close(g.release)
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	report := f.report(key)
	if report.GetStatus() != pb.RunStatus_RUN_STATUS_COMPLETED || report.GetResult() != `"done"` {
		t.Fatalf("report %v", report)
	}
	f.with(func() {
		all := append(slices.Clone(f.chunks), report.GetOutput()...)
		text := ""
		for i, c := range all {
			if c.GetSeq() != int64(i+1) || c.GetTaskId() != 1 || c.GetAttempt() != 1 {
				t.Errorf("chunk %d: %v", i, c)
			}
			text += c.GetData()
		}
		if text != "started\nfinished\n" {
			t.Errorf("output %q", text)
		}
	})
}

func TestStaleLeaseIsStoppedAndNeverReported(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, _ := startAgent(t, f, handlers(g))
	stale := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.stale[stale] = true }) // e.g. requeued after this worker looked dead
	f.waitUntil(t, "the stale run to be stopped", func() bool { return len(a.pool.ActiveKeys()) == 0 })
	// The worker goes on: a later task is reported, the stale one never is.
	fresh := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	f.waitUntil(t, "a heartbeat without the stale lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		last := f.heartbeats[len(f.heartbeats)-1]
		return !held(last, stale)
	})
	if f.report(stale) != nil {
		t.Fatal("a stale lease was reported")
	}
}

func TestStaleReportIsDroppedAndTheRestOfTheBatchResent(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.beatsBlind = true })
	g := newGate()
	a, _ := startAgent(t, f, handlers(g))
	stale := f.offer(1, "wait", "[]")
	fresh := f.offer(2, "wait", "[]")
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	f.with(func() { f.stale[stale] = true })
	close(g.release) // both finish at once: their reports usually share one batch
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	if f.report(stale) != nil {
		t.Fatal("a stale report was accepted")
	}
}

func TestLostSessionStopsRunsDropsReportsAndRegistersAgain(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, _ := startAgent(t, f, handlers(g))
	lost := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.forget = true })
	f.waitUntil(t, "a second registration", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.registers) >= 3 // the first, the forgotten marker, the new one
	})
	f.waitUntil(t, "the run to be stopped", func() bool { return len(a.pool.ActiveKeys()) == 0 })
	fresh := f.offer(2, "add", "[2, 2]")
	f.waitUntil(t, "the fresh report", func() bool { return f.report(fresh) != nil })
	if f.report(lost) != nil {
		t.Fatal("a run of the lost session was reported")
	}
}

func TestReportsWaitOutAnOutage(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.failReport = 3 })
	startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "add", "[20, 22]")
	f.waitUntil(t, "the report after the outage", func() bool { return f.report(key) != nil })
	if got := f.report(key).GetResult(); got != "42" {
		t.Fatalf("result %q", got)
	}
	f.with(func() {
		if f.failReport != 0 || len(f.reports) != 1 {
			t.Errorf("failReport=%d reports=%d", f.failReport, len(f.reports))
		}
	})
}

func TestStopFromHeartbeatReportsStopped(t *testing.T) {
	f := startFake(t)
	a, _ := startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.stopNext = []*pb.LeaseRef{ref(key)} })
	f.waitUntil(t, "the report", func() bool { return f.report(key) != nil })
	if st := f.report(key).GetStatus(); st != pb.RunStatus_RUN_STATUS_STOPPED {
		t.Fatalf("status %v", st)
	}
}

func TestKillStopsRunsReportsThemAndExits(t *testing.T) {
	f := startFake(t)
	a, exit := startAgent(t, f, handlers(newGate()))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	f.with(func() { f.status = pb.WorkerStatus_WORKER_STATUS_KILL })
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not exit")
	}
	if r := f.report(key); r == nil || r.GetStatus() != pb.RunStatus_RUN_STATUS_STOPPED {
		t.Fatalf("report %v", r)
	}
}

func TestDrainFinishesRunsAndHandsBackLateLeases(t *testing.T) {
	f := startFake(t)
	g := newGate()
	a, exit := startAgent(t, f, handlers(g))
	key := f.offer(1, "wait", "[]")
	f.waitUntil(t, "the run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	a.RequestDrain()
	f.waitUntil(t, "a draining heartbeat", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.heartbeats[len(f.heartbeats)-1].GetDraining()
	})
	late := f.offer(2, "add", "[1, 1]") // a lease racing the drain
	f.waitUntil(t, "the late lease handed back", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.released) == 1 && f.released[0].GetTaskId() == late.TaskID
	})
	close(g.release)
	if code := <-exit; code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if r := f.report(key); r == nil || r.GetStatus() != pb.RunStatus_RUN_STATUS_COMPLETED {
		t.Fatalf("report %v", r)
	}
	if f.report(late) != nil {
		t.Fatal("a handed-back lease was reported")
	}
}

func TestMaxEmptyRunsEndsAnIdleWorker(t *testing.T) {
	f := startFake(t)
	a, err := New(Config{Coordinator: f.addr, WorkerName: "idle", Heartbeat: 100 * time.Millisecond,
		MaxEmptyRuns: 2, Handlers: handlers(newGate())})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- a.Run() }()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		a.RequestExit()
		t.Fatal("the worker did not leave")
	}
}

func TestStaleKeysParsesTheTrailer(t *testing.T) {
	md := metadata.Pairs(StaleLeasesKey, "3:1, 4:2,bad,5:x")
	got := staleKeys(md)
	want := []runner.Key{{TaskID: 3, Attempt: 1}, {TaskID: 4, Attempt: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v", got)
	}
}

func TestTokenIsNotSentInPlainTextToAnotherMachine(t *testing.T) {
	if _, err := (Security{Token: "s3cret"}).DialOptions("10.1.2.3:50051"); err == nil {
		t.Fatal("plain-text token to another machine accepted")
	}
	if _, err := (Security{Token: "s3cret", Insecure: true}).DialOptions("10.1.2.3:50051"); err != nil {
		t.Fatal(err)
	}
	if _, err := (Security{Token: "s3cret"}).DialOptions("localhost:50051"); err != nil {
		t.Fatal(err)
	}
	if s := (Security{Token: "s3cret"}).String(); strings.Contains(s, "s3cret") {
		t.Fatalf("token printed: %s", s)
	}
	if _, err := (Security{CertFile: "c.pem"}).DialOptions("localhost:1"); err == nil {
		t.Fatal("a certificate without its key accepted")
	}
}

func TestIsLoopbackTarget(t *testing.T) {
	for target, want := range map[string]bool{
		"127.0.0.1:50051": true, "localhost:1": true, "[::1]:5": true, "unix:/tmp/s": true,
		"dns:///localhost:1": true, "10.0.0.1:1": false, "example.com:443": false,
	} {
		if got := IsLoopbackTarget(target); got != want {
			t.Errorf("IsLoopbackTarget(%q) = %v", target, got)
		}
	}
}
