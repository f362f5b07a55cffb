// Package integration runs the Go worker against a real coordinator (the
// Python one, from the repository's virtualenv) and checks the results
// through the generated client stubs. It is skipped when the virtualenv is
// missing (set TASKGRID_PYTHON to use another interpreter).
package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "taskgrid.local/worker/gen/taskgridv1"
)

const readyPrefix = "taskgrid coordinator listening on "

// python finds the interpreter with taskgrid installed, or skips the test.
func python(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TASKGRID_PYTHON"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "..", "..", ".venv", "bin", "python"))
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	t.Skipf("no taskgrid virtualenv (%v); set TASKGRID_PYTHON", err)
	return ""
}

// coordinator is a `taskgrid coordinator` child process.
type coordinator struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	log  string
	done chan struct{}
}

// startCoordinator starts a coordinator on listen ("127.0.0.1:0" for any
// port) with the SQLite file db, and waits for its "listening" line.
func startCoordinator(t *testing.T, db, listen string) *coordinator {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "coordinator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(python(t), "-m", "taskgrid", "coordinator",
		"--db", "sqlite:///"+db, "--listen", listen, "--heartbeat", "0.5")
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &coordinator{t: t, cmd: cmd, log: logPath, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if strings.HasPrefix(scanner.Text(), readyPrefix) {
				lines <- strings.TrimPrefix(scanner.Text(), readyPrefix)
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	select {
	case c.addr = <-lines:
	case <-c.done:
		t.Fatalf("coordinator exited before listening:\n%s", c.tail())
	case <-time.After(30 * time.Second):
		t.Fatalf("coordinator not listening after 30 s:\n%s", c.tail())
	}
	return c
}

// stop ends the coordinator: SIGTERM, then SIGKILL to its group after 10 s.
func (c *coordinator) stop() {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	if c.t.Failed() {
		c.t.Logf("coordinator log tail:\n%s", c.tail())
	}
}

func (c *coordinator) tail() string {
	data, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// client talks to the coordinator as a client and an admin.
type client struct {
	t     *testing.T
	tasks pb.ClientServiceClient
	admin pb.AdminServiceClient
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{t: t, tasks: pb.NewClientServiceClient(conn), admin: pb.NewAdminServiceClient(conn)}
}

func ctx5() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

func (c *client) queue(spec *pb.TaskSpec) int64 {
	c.t.Helper()
	ctx, cancel := ctx5()
	defer cancel()
	resp, err := c.tasks.QueueTask(ctx, &pb.QueueTaskRequest{Task: spec})
	if err != nil || len(resp.GetErrors()) > 0 {
		c.t.Fatalf("queue %v: %v %v", spec, err, resp.GetErrors())
	}
	return resp.GetId()
}

func (c *client) queueFunction(name, args string, timeout int64) int64 {
	return c.queue(&pb.TaskSpec{FunctionName: name, Args: &args, Timeout: &timeout})
}

func (c *client) queueCommand(argv ...string) int64 {
	return c.queue(&pb.TaskSpec{FunctionName: "@command",
		Command: &pb.Command{Executable: argv[0], Args: argv[1:]}})
}

func (c *client) get(id int64) *pb.GetTaskResponse {
	c.t.Helper()
	ctx, cancel := ctx5()
	defer cancel()
	resp, err := c.tasks.GetTask(ctx, &pb.GetTaskRequest{Ref: &pb.TaskRef{Ref: &pb.TaskRef_Id{Id: id}}})
	if err != nil {
		c.t.Fatalf("GetTask %d: %v", id, err)
	}
	return resp
}

var terminal = map[pb.TaskStatus]bool{
	pb.TaskStatus_TASK_STATUS_COMPLETED: true, pb.TaskStatus_TASK_STATUS_FAILED: true,
	pb.TaskStatus_TASK_STATUS_TIMEOUT: true, pb.TaskStatus_TASK_STATUS_STOPPED: true,
	pb.TaskStatus_TASK_STATUS_EXPIRED: true,
}

// waitStatus polls GetTask until cond holds (a condition, not a fixed sleep).
func (c *client) waitFor(id int64, what string, cond func(*pb.GetTaskResponse) bool) *pb.GetTaskResponse {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp := c.get(id)
		if cond(resp) {
			return resp
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %d: timed out waiting for %s; last: %v", id, what, resp.GetTask())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *client) finished(id int64) (*pb.Task, *pb.Run) {
	c.t.Helper()
	resp := c.waitFor(id, "a terminal status", func(r *pb.GetTaskResponse) bool {
		return terminal[r.GetTask().GetStatus()]
	})
	var run *pb.Run
	if runs := resp.GetRuns(); len(runs) > 0 {
		run = runs[len(runs)-1]
	}
	return resp.GetTask(), run
}

func (c *client) running(id int64) {
	c.t.Helper()
	c.waitFor(id, "RUNNING", func(r *pb.GetTaskResponse) bool {
		return r.GetTask().GetStatus() == pb.TaskStatus_TASK_STATUS_RUNNING
	})
}

// waitExit waits for a process started by the test.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return exitErr.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		t.Fatalf("process did not exit within %s", timeout)
		return -1
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// buildConformance builds the conformance worker binary into a temp dir.
func buildConformance(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "taskgrid-worker-conformance")
	cmd := exec.Command(goTool(), "build", "-o", bin, "../cmd/taskgrid-worker-conformance")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
