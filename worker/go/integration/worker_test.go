package integration

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"taskgrid.local/worker/agent"
	"taskgrid.local/worker/conformance"
	pb "taskgrid.local/worker/gen/taskgridv1"
	"taskgrid.local/worker/runner"
)

// startAgent runs an in-process Go worker with the conformance handlers
// and command tasks allowed.
func startAgent(t *testing.T, addr, name string) *agent.Agent {
	t.Helper()
	commands, err := runner.NewCommandPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a, err := agent.New(agent.Config{
		Coordinator: addr, WorkerName: name, Heartbeat: 300 * time.Millisecond, Concurrency: 2,
		KillGrace: time.Second, Handlers: conformance.Handlers(), Commands: commands, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- a.Run() }()
	t.Cleanup(func() {
		a.RequestExit()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("worker did not exit")
		}
	})
	return a
}

func TestGoHandlersAndCommandTasksEndToEnd(t *testing.T) {
	coord := startCoordinator(t, filepath.Join(t.TempDir(), "x.sqlite"), "127.0.0.1:0")
	c := dial(t, coord.addr)
	startAgent(t, coord.addr, "go-e2e")

	add := c.queueFunction("add", "[2, 3]", 60)
	progress := c.queueFunction("progress", "[]", 60)
	who := c.queueFunction("whoami", "[]", 60)
	fail := c.queueFunction("fail", `["kaboom"]`, 60)
	ok := c.queueCommand("/bin/sh", "-c", "echo first; echo '!clear!'last")
	bad := c.queueCommand("/bin/sh", "-c", "echo oops >&2; exit 3")

	if task, run := c.finished(add); task.GetStatus() != pb.TaskStatus_TASK_STATUS_COMPLETED || run.GetRunResult() != "5" {
		t.Errorf("add: %v %v", task.GetStatus(), run)
	}
	if _, run := c.finished(progress); run.GetRunOutput() != "100%\n" || run.GetRunResult() != "1" {
		t.Errorf("progress: %v", run)
	}
	task, run := c.finished(who)
	if want := sprintf(`[%d,%q,%d]`, task.GetId(), task.GetUuid(), run.GetId()); run.GetRunResult() != want {
		t.Errorf("whoami: %s, want %s", run.GetRunResult(), want)
	}
	if task, run := c.finished(fail); task.GetStatus() != pb.TaskStatus_TASK_STATUS_FAILED ||
		!strings.Contains(run.GetTraceback(), "kaboom") {
		t.Errorf("fail: %v %v", task.GetStatus(), run)
	}
	task, run = c.finished(ok)
	if task.GetStatus() != pb.TaskStatus_TASK_STATUS_COMPLETED || run.GetRunOutput() != "last\n" ||
		strings.ReplaceAll(run.GetRunResult(), " ", "") != `{"exit_code":0}` {
		t.Errorf("command: %v %v", task.GetStatus(), run)
	}
	task, run = c.finished(bad)
	if task.GetStatus() != pb.TaskStatus_TASK_STATUS_FAILED || !strings.Contains(run.GetTraceback(), "exit code 3") ||
		!strings.Contains(run.GetTraceback(), "oops") {
		t.Errorf("failing command: %v %v", task.GetStatus(), run)
	}
}

func TestTimeoutAndStopOnARealCoordinator(t *testing.T) {
	coord := startCoordinator(t, filepath.Join(t.TempDir(), "x.sqlite"), "127.0.0.1:0")
	c := dial(t, coord.addr)
	startAgent(t, coord.addr, "go-stop")

	slow := c.queueCommand("/bin/sleep", "30")
	sleeper := c.queueFunction("sleep_for", "[30]", 1)
	c.running(slow)
	ctx, cancel := ctx5()
	defer cancel()
	if _, err := c.tasks.StopTask(ctx, &pb.StopTaskRequest{Ref: &pb.TaskRef{Ref: &pb.TaskRef_Id{Id: slow}}}); err != nil {
		t.Fatal(err)
	}
	if task, _ := c.finished(slow); task.GetStatus() != pb.TaskStatus_TASK_STATUS_STOPPED {
		t.Errorf("stopped command: %v", task.GetStatus())
	}
	if task, _ := c.finished(sleeper); task.GetStatus() != pb.TaskStatus_TASK_STATUS_TIMEOUT {
		t.Errorf("timed-out handler: %v", task.GetStatus())
	}
}

func TestWorkerOutlivesACoordinatorRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "x.sqlite")
	first := startCoordinator(t, db, "127.0.0.1:0")
	addr := first.addr
	startAgent(t, addr, "go-restart")
	c := dial(t, addr)
	if _, run := c.finished(c.queueFunction("add", "[1, 1]", 60)); run.GetRunResult() != "2" {
		t.Fatalf("before the restart: %v", run)
	}
	first.stop()
	startCoordinator(t, db, addr) // same address and database
	if _, run := c.finished(c.queueFunction("add", "[2, 2]", 60)); run.GetRunResult() != "4" {
		t.Fatalf("after the restart: %v", run)
	}
}

func TestBinaryDrainsOnSIGTERMAndRunsGoOnly(t *testing.T) {
	coord := startCoordinator(t, filepath.Join(t.TempDir(), "x.sqlite"), "127.0.0.1:0")
	c := dial(t, coord.addr)
	bin := buildConformance(t)
	logPath := filepath.Join(t.TempDir(), "worker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(bin, "--coordinator", coord.addr, "--heartbeat", "0.3", "--name", "go-bin")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("worker log:\n%s", data)
		}
	}()
	if _, run := c.finished(c.queueFunction("go_only", "[]", 60)); run.GetRunResult() != `"go"` {
		t.Fatalf("go_only: %v", run)
	}
	slow := c.queueFunction("sleep_for", "[1]", 60)
	c.running(slow)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if task, _ := c.finished(slow); task.GetStatus() != pb.TaskStatus_TASK_STATUS_COMPLETED {
		t.Errorf("drained task: %v", task.GetStatus())
	}
	if code := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// startBinary starts the conformance worker binary; its log is shown when the test fails.
func startBinary(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "worker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("worker %v log:\n%s", args, data)
		}
	})
	return cmd
}

// alivePid is the pid of the live worker called name, 0 when there is none.
func (c *client) alivePid(name string) int32 {
	c.t.Helper()
	ctx, cancel := ctx5()
	defer cancel()
	resp, err := c.admin.ListWorkers(ctx, &pb.ListWorkersRequest{})
	if err != nil {
		c.t.Fatalf("ListWorkers: %v", err)
	}
	for _, w := range resp.GetWorkers() {
		if w.GetWorkerName() == name && w.GetAlive() {
			return w.GetPid()
		}
	}
	return 0
}

// A second worker with a live worker's name is refused (ALREADY_EXISTS):
// it retries for about dead_after plus two heartbeats, then exits
// ExitNameTaken; the first one is untouched.
func TestDuplicateNameExitsAfterWaitingAndLeavesTheFirstAlone(t *testing.T) {
	coord := startCoordinator(t, filepath.Join(t.TempDir(), "x.sqlite"), "127.0.0.1:0")
	c := dial(t, coord.addr)
	startAgent(t, coord.addr, "go-dup")
	if _, run := c.finished(c.queueFunction("add", "[1, 1]", 60)); run.GetRunResult() != "2" {
		t.Fatalf("first worker: %v", run)
	}
	started := time.Now()
	second := startBinary(t, buildConformance(t), "--coordinator", coord.addr, "--heartbeat", "0.3", "--name", "go-dup")
	if code := waitExit(t, second, 15*time.Second); code != agent.ExitNameTaken {
		t.Fatalf("exit code %d, want %d", code, agent.ExitNameTaken)
	}
	if waited := time.Since(started); waited < time.Second {
		t.Errorf("gave up after %s, before a predecessor could be declared dead", waited)
	}
	if pid := c.alivePid("go-dup"); pid != int32(os.Getpid()) {
		t.Errorf("the live go-dup is pid %d, want the first worker (%d)", pid, os.Getpid())
	}
	if _, run := c.finished(c.queueFunction("add", "[2, 2]", 60)); run.GetRunResult() != "4" {
		t.Fatalf("first worker afterwards: %v", run)
	}
}

// A worker restarted under the name of its crashed predecessor waits until
// the coordinator declares that one dead, then serves.
func TestRestartUnderACrashedWorkersNameWaitsThenServes(t *testing.T) {
	coord := startCoordinator(t, filepath.Join(t.TempDir(), "x.sqlite"), "127.0.0.1:0")
	c := dial(t, coord.addr)
	bin := buildConformance(t)
	args := []string{"--coordinator", coord.addr, "--heartbeat", "0.3", "--name", "go-crash"}
	first := startBinary(t, bin, args...)
	if _, run := c.finished(c.queueFunction("add", "[1, 1]", 60)); run.GetRunResult() != "2" {
		t.Fatalf("first process: %v", run)
	}
	_ = syscall.Kill(-first.Process.Pid, syscall.SIGKILL)
	_ = first.Wait()
	second := startBinary(t, bin, args...)
	if _, run := c.finished(c.queueFunction("add", "[2, 2]", 60)); run.GetRunResult() != "4" {
		t.Fatalf("restarted process: %v", run)
	}
	if pid := c.alivePid("go-crash"); pid != int32(second.Process.Pid) {
		t.Errorf("the live go-crash is pid %d, want the restarted one (%d)", pid, second.Process.Pid)
	}
}
