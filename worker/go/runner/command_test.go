package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"taskgrid.local/worker/capture"
)

func shell(script string) Task {
	return Task{FunctionName: CommandFunction, Command: &Command{Executable: "/bin/sh", Args: []string{"-c", script}}}
}

func allowAll(t *testing.T) *CommandPolicy {
	t.Helper()
	policy, err := NewCommandPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy
}

// isGone reports whether pid has exited (a zombie counts: nobody may reap it here).
func isGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, "the pid file", 5*time.Second, func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	return pid
}

func TestCommandExitZeroCompletesWithClearApplied(t *testing.T) {
	h := newHarness(t, Config{Commands: allowAll(t)})
	r := h.run(shell("echo first; echo '!clear!'last; echo err >&2"))
	if r.Outcome != Completed || r.Result == nil || *r.Result != `{"exit_code": 0}` {
		t.Fatalf("got %+v", r)
	}
	out := capture.Join(r.Output)
	if strings.Contains(out, "first") || !strings.Contains(out, "last\n") {
		t.Fatalf("output %q", out)
	}
}

func TestCommandNonZeroExitFailsWithStderrTail(t *testing.T) {
	h := newHarness(t, Config{Commands: allowAll(t)})
	r := h.run(shell("for i in $(seq 1 30); do echo e$i >&2; done; exit 3"))
	if r.Outcome != Failed || r.Result != nil {
		t.Fatalf("got %+v", r)
	}
	if !strings.HasPrefix(r.Traceback, "exit code 3\n") || !strings.Contains(r.Traceback, "e30\n") ||
		strings.Contains(r.Traceback, "e10\n") {
		t.Fatalf("traceback %q", r.Traceback)
	}
	if !strings.Contains(capture.Join(r.Output), "e1\n") {
		t.Fatal("stderr is not in the output")
	}
}

func TestCommandKilledBySignalSaysSo(t *testing.T) {
	h := newHarness(t, Config{Commands: allowAll(t)})
	r := h.run(shell("kill -SEGV $$"))
	if r.Outcome != Failed || !strings.HasPrefix(r.Traceback, "signal SIGSEGV") {
		t.Fatalf("got %+v", r)
	}
}

func TestCommandEnvAndCwd(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, Config{Commands: allowAll(t)})
	task := shell(`echo "$GREETING $(pwd)"`)
	task.Command.Env = map[string]string{"GREETING": "hello"}
	task.Command.Cwd = dir
	r := h.run(task)
	real, _ := filepath.EvalSymlinks(dir)
	if got := capture.Join(r.Output); got != "hello "+real+"\n" {
		t.Fatalf("output %q", got)
	}
}

func TestCommandTimeoutKillsTheWholeGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	h := newHarness(t, Config{Commands: allowAll(t), KillGrace: 200 * time.Millisecond})
	// The grandchild and the shell both ignore SIGTERM: only the SIGKILL after the grace ends them.
	task := shell(`(trap "" TERM; exec sleep 60) & echo $! > ` + pidFile + `; trap "" TERM; wait`)
	task.Timeout = 300 * time.Millisecond
	start := time.Now()
	h.submit(task)
	grandchild := readPid(t, pidFile)
	r := h.result(5 * time.Second)
	if r.Outcome != Timeout {
		t.Fatalf("got %+v", r)
	}
	if elapsed := time.Since(start); elapsed < 500*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("ended after %s (timeout 0.3 s + grace 0.2 s)", elapsed)
	}
	waitFor(t, "the grandchild to die", 2*time.Second, func() bool { return isGone(grandchild) })
}

func TestCommandStopEndsItWithSIGTERM(t *testing.T) {
	h := newHarness(t, Config{Commands: allowAll(t), KillGrace: 10 * time.Second})
	key := h.submit(shell("exec sleep 60"))
	waitFor(t, "the command to start", 5*time.Second, func() bool { return len(h.pool.ChildPids()) == 1 })
	start := time.Now()
	h.pool.Stop(key, Stopped)
	if r := h.result(5 * time.Second); r.Outcome != Stopped || r.Traceback != "" {
		t.Fatalf("got %+v", r)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("SIGTERM did not end it: it waited for the grace")
	}
}

func TestCommandLeftoversAreKilledWhenItExits(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "leftover")
	h := newHarness(t, Config{Commands: allowAll(t)})
	r := h.run(shell(`sleep 60 >/dev/null 2>&1 & echo $! > ` + pidFile))
	if r.Outcome != Completed {
		t.Fatalf("got %+v", r)
	}
	leftover := readPid(t, pidFile)
	waitFor(t, "the leftover to die", 2*time.Second, func() bool { return isGone(leftover) })
}

func TestCommandsNeedAPolicy(t *testing.T) {
	h := newHarness(t, Config{})
	r := h.run(shell("true"))
	if r.Outcome != Failed || !strings.Contains(r.Traceback, "--allow-commands") {
		t.Fatalf("got %+v", r)
	}
}

func TestAllowListComparesResolvedPaths(t *testing.T) {
	policy, err := NewCommandPolicy([]string{"sh"})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{Commands: policy})
	if r := h.run(shell("echo ok")); r.Outcome != Completed {
		t.Fatalf("/bin/sh refused: %+v", r)
	}
	r := h.run(Task{FunctionName: CommandFunction, Command: &Command{Executable: "true"}})
	if r.Outcome != Failed || !strings.Contains(r.Traceback, "not in this worker's --allow-executable list") {
		t.Fatalf("got %+v", r)
	}
	if _, err := NewCommandPolicy([]string{"/no/such/program"}); err == nil {
		t.Fatal("an allow-list entry that does not exist must be an error")
	}
}

func TestMissingExecutableFails(t *testing.T) {
	h := newHarness(t, Config{Commands: allowAll(t)})
	r := h.run(Task{FunctionName: CommandFunction, Command: &Command{Executable: "no-such-program-xyz"}})
	if r.Outcome != Failed || !strings.Contains(r.Traceback, "not found") {
		t.Fatalf("got %+v", r)
	}
}

func TestAllowListDoesNotFollowTheFileNamesSymlink(t *testing.T) {
	// busybox style: two names, one binary; allowing one must not allow the other
	dir := t.TempDir()
	binary := filepath.Join(dir, "busybox")
	if err := os.WriteFile(binary, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ls", "rm"} {
		if err := os.Symlink(binary, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	policy, err := NewCommandPolicy([]string{filepath.Join(dir, "ls")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Resolve(filepath.Join(dir, "ls"), ""); err != nil {
		t.Fatalf("ls should be allowed: %v", err)
	}
	if _, err := policy.Resolve(filepath.Join(dir, "rm"), ""); err == nil {
		t.Fatal("rm must not be allowed through its shared binary")
	}
}

func TestCommandSeesItsRunButNeverTheWorkersToken(t *testing.T) {
	t.Setenv("TASKGRID_TOKEN", "worker-secret-0123456789")
	h := newHarness(t, Config{Commands: allowAll(t)})
	r := h.run(shell(`echo "token=[$TASKGRID_TOKEN] id=$TASKGRID_TASK_ID uuid=$TASKGRID_TASK_UUID run=$TASKGRID_RUN_ID attempt=$TASKGRID_ATTEMPT"`))
	want := fmt.Sprintf("token=[] id=%d uuid=%s run=%d attempt=%d\n",
		r.Task.TaskID, r.Task.UUID, r.Task.RunID, r.Task.Attempt)
	if out := capture.Join(r.Output); r.Outcome != Completed || out != want {
		t.Fatalf("got %+v, output %q, want %q", r, out, want)
	}
}
