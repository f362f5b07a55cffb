package runner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStderrTailLines is how many last lines of a failed command's
// stderr go into its traceback.
const DefaultStderrTailLines = 20

// DefaultDrainTimeout bounds the wait for a command's pipes to close once
// its process group is gone (a daemon that left the group may hold them).
const DefaultDrainTimeout = 2 * time.Second

const stderrTailBytes = 64 * 1024

// CommandPolicy decides which executables command tasks may run.
// A worker without a policy refuses every command task.
type CommandPolicy struct {
	allowed map[string]bool // resolved absolute paths; empty: any executable
}

// NewCommandPolicy allows command tasks; a non-empty allow-list limits them
// to those executables (paths, or names looked up in PATH now), compared
// by absolute path with the directory's symlinks resolved but not the file
// name's: on a busybox system /bin/ls and /bin/rm are links to one binary,
// and allowing one must not allow the other (the Python worker does the same).
func NewCommandPolicy(allowList []string) (*CommandPolicy, error) {
	policy := &CommandPolicy{allowed: map[string]bool{}}
	for _, name := range allowList {
		path, err := lookup(name, "")
		if err == nil {
			path, err = realDir(path)
		}
		if err != nil {
			return nil, fmt.Errorf("--allow-executable %s: %w", name, err)
		}
		policy.allowed[path] = true
	}
	return policy, nil
}

// Resolve returns the absolute path a command task's executable names, or
// an error saying why it may not run.
func (c *CommandPolicy) Resolve(executable, cwd string) (string, error) {
	if executable == "" {
		return "", errors.New("the command has no executable")
	}
	path, err := lookup(executable, cwd)
	if err != nil {
		return "", err
	}
	if len(c.allowed) == 0 {
		return path, nil
	}
	real, err := realDir(path)
	if err != nil || !c.allowed[real] {
		return "", fmt.Errorf("executable %s (%s) is not in this worker's --allow-executable list",
			executable, path)
	}
	return path, nil
}

// realDir resolves the symlinks of the directory holding path, keeping its file name.
func realDir(path string) (string, error) {
	dir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.Base(path)), nil
}

// lookup makes executable absolute: a name without a slash is looked up in
// the worker's PATH, a relative path is taken from cwd (or the worker's).
func lookup(executable, cwd string) (string, error) {
	if !strings.Contains(executable, "/") {
		path, err := exec.LookPath(executable)
		if err != nil {
			return "", fmt.Errorf("executable %s not found in PATH", executable)
		}
		return filepath.Abs(path)
	}
	if !filepath.IsAbs(executable) && cwd != "" {
		executable = filepath.Join(cwd, executable)
	}
	path, err := filepath.Abs(executable)
	if err != nil {
		return "", err
	}
	if info, err := os.Stat(path); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("executable %s is not an executable file", executable)
	}
	return path, nil
}

// runCommand runs a command task as a child process in its own process
// group, its stdout and stderr captured. Stop and timeout send SIGTERM to
// the group, then SIGKILL after the kill grace. When the process ends,
// whatever it left running in its group is killed.
func (p *Pool) runCommand(r *run) ending {
	if p.cfg.Commands == nil {
		return failed("command tasks are not allowed on this worker (start it with --allow-commands)")
	}
	command := r.task.Command
	if command == nil {
		return failed("a command task without a command")
	}
	path, err := p.cfg.Commands.Resolve(command.Executable, command.Cwd)
	if err != nil {
		return failed("%v", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return failed("cannot create a pipe: %v", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(outR, outW)
		return failed("cannot create a pipe: %v", err)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   append([]string{command.Executable}, command.Args...),
		Env:    mergeEnv(mergeEnv(workerEnv(), command.Env), runEnv(r.task)),
		Dir:    command.Cwd,
		Stdout: outW,
		Stderr: errW,
		// Pdeathsig: a worker killed outright takes its commands with it. Linux
		// ties it to the forking thread; Go only ends threads that a goroutine
		// locked and never unlocked, which this worker never does.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	err = cmd.Start()
	closeAll(outW, errW) // the child holds its copies
	if err != nil {
		closeAll(outR, errR)
		return failed("cannot start %s: %v", command.Executable, err)
	}
	pid := cmd.Process.Pid
	p.mu.Lock()
	r.pid = pid
	p.mu.Unlock()

	tail := &tailWriter{max: stderrTailBytes}
	errStream := r.output.NewStream()
	var readers sync.WaitGroup
	readers.Add(2)
	go drain(&readers, outR, r.output)
	go drain(&readers, errR, io.MultiWriter(errStream, tail))
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	var killAt time.Time
	select {
	case <-exited:
	case <-r.stop:
		killAt = p.killGroup(pid, exited)
	}
	// The leader is gone. Members it left in its group keep their grace, then go.
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	if !killAt.IsZero() {
		select {
		case <-readersDone:
		case <-time.After(time.Until(killAt)):
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-readersDone:
	case <-time.After(DefaultDrainTimeout):
		closeAll(outR, errR) // someone outside the group holds the pipes: stop reading
		<-readersDone
	}
	closeAll(outR, errR)
	errStream.Flush()
	p.mu.Lock()
	r.pid = 0
	p.mu.Unlock()

	state := cmd.ProcessState
	if state.Success() {
		result := `{"exit_code": 0}`
		return ending{outcome: Completed, result: &result}
	}
	trace := describeExit(state)
	if lines := tail.lastLines(DefaultStderrTailLines); lines != "" {
		trace += "\nlast lines of stderr:\n" + lines
	}
	return ending{outcome: Failed, traceback: trace}
}

// killGroup sends SIGTERM to the group (SIGKILL when there is no grace),
// then SIGKILL once the grace is over if the leader is still there; it
// returns when the leader has exited, with the time the grace ends.
func (p *Pool) killGroup(pid int, exited <-chan struct{}) time.Time {
	killAt := time.Now().Add(p.cfg.KillGrace)
	if p.cfg.KillGrace <= 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
		return killAt
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	grace := time.NewTimer(p.cfg.KillGrace)
	defer grace.Stop()
	select {
	case <-exited:
	case <-grace.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
	return killAt
}

func drain(wg *sync.WaitGroup, from io.Reader, to io.Writer) {
	defer wg.Done()
	_, _ = io.Copy(to, from)
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// mergeEnv returns base with the task's variables added (replacing same names).
// hiddenEnv names the worker's own secrets: what a task runs never sees them.
var hiddenEnv = map[string]bool{"TASKGRID_TOKEN": true}

// workerEnv is the worker's environment without hiddenEnv, for every process a
// task runs in (commands and handler processes alike).
func workerEnv() []string {
	env := os.Environ()
	kept := env[:0:0]
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !hiddenEnv[name] {
			kept = append(kept, kv)
		}
	}
	return kept
}

// runEnv tells a command which run it is (it cannot call worker.Current).
func runEnv(t Task) map[string]string {
	return map[string]string{
		"TASKGRID_TASK_ID":   strconv.FormatInt(t.TaskID, 10),
		"TASKGRID_TASK_UUID": t.UUID,
		"TASKGRID_RUN_ID":    strconv.FormatInt(t.RunID, 10),
		"TASKGRID_ATTEMPT":   strconv.FormatInt(t.Attempt, 10),
	}
}

func mergeEnv(base []string, extra map[string]string) []string {
	if len(extra) == 0 {
		return base
	}
	env := make([]string, 0, len(base)+len(extra))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if _, replaced := extra[name]; !replaced {
			env = append(env, kv)
		}
	}
	for name, value := range extra {
		env = append(env, name+"="+value)
	}
	return env
}

// describeExit says how a process ended, e.g. "exit code 1" or "signal SIGSEGV".
func describeExit(state *os.ProcessState) string {
	if status, ok := state.Sys().(syscall.WaitStatus); ok && status.Signaled() {
		if name := unix.SignalName(status.Signal()); name != "" {
			return "signal " + name
		}
		return fmt.Sprintf("signal %d", int(status.Signal()))
	}
	return fmt.Sprintf("exit code %d", state.ExitCode())
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu   sync.Mutex
	max  int
	data []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.data = append(t.data, p...)
	if over := len(t.data) - t.max; over > 0 {
		t.data = append(t.data[:0], t.data[over:]...)
	}
	return len(p), nil
}

func (t *tailWriter) lastLines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	text := bytes.TrimRight(t.data, "\n")
	if len(text) == 0 {
		return ""
	}
	lines := strings.Split(strings.ToValidUTF8(string(text), "\uFFFD"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
