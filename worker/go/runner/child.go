package runner

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ChildEnv is set to "1" in the environment of a handler process: the
// worker's binary, re-executed, checks it first thing and serves handlers
// (ServeChild) instead of starting a worker.
const ChildEnv = "TASKGRID_GO_HANDLER_CHILD"

// The handler process's end of the private pipes (cmd.ExtraFiles).
const (
	childRequestFD = 3 // requests, parent to child
	childResultFD  = 4 // results, child to parent
)

// maxFrame bounds one request or result (args and results are JSON text).
const maxFrame = 1 << 30

// childRequest asks a handler process for one run. Sentinel is written to
// fds 1 and 2 once the run is over, so the parent knows which bytes were
// the run's whatever the order the pipes are read in.
type childRequest struct {
	TaskID   int64  `json:"task_id"`
	UUID     string `json:"uuid"`
	RunID    int64  `json:"run_id"`
	Attempt  int64  `json:"attempt"`
	Function string `json:"function"`
	Args     string `json:"args"`
	Vars     string `json:"vars"`
	Sentinel string `json:"sentinel"`
}

// childResult is how the run ended in the handler process.
type childResult struct {
	Completed bool    `json:"completed"`
	Result    *string `json:"result,omitempty"`
	Traceback string  `json:"traceback,omitempty"`
}

func (c childResult) ending() ending {
	if c.Completed {
		return ending{outcome: Completed, result: c.Result}
	}
	return ending{outcome: Failed, traceback: c.Traceback}
}

// writeFrame sends v as a 4-byte big-endian length and its JSON.
func writeFrame(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > maxFrame {
		return fmt.Errorf("a frame of %d bytes is over the limit of %d", len(data), maxFrame)
	}
	frame := make([]byte, 4+len(data))
	binary.BigEndian.PutUint32(frame, uint32(len(data)))
	copy(frame[4:], data)
	_, err = w.Write(frame)
	return err
}

func readFrame(r io.Reader, into any) error {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > maxFrame {
		return fmt.Errorf("a frame of %d bytes is over the limit of %d", n, maxFrame)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}

// slot is one unit of concurrency for handlers; its process is started
// lazily and replaced after a run that killed it or that it died in.
type slot struct{ c *child }

// child is one long-lived handler process.
type child struct {
	cmd        *exec.Cmd
	pid        int // also its process group
	requests   *os.File
	results    chan childResult // closed when the result pipe ends
	exited     chan struct{}
	outR, errR *os.File
	stdout     *router
	stderr     *router
	readers    sync.WaitGroup
}

// startChild starts a handler process: the worker's binary with ChildEnv
// set, in its own process group (so a stop reaches what its handler
// started) and killed with the worker (Pdeathsig, as for commands).
func (p *Pool) startChild() (*child, error) {
	var files []*os.File
	pipe := func() (*os.File, *os.File) {
		r, w, err := os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w
	}
	reqR, reqW := pipe()
	resR, resW := pipe()
	outR, outW := pipe()
	errR, errW := pipe()
	if len(files) != 8 {
		closeAll(files...)
		return nil, errors.New("cannot create the pipes")
	}
	cmd := &exec.Cmd{
		Path:        p.cfg.HandlerExecutable,
		Args:        childArgs(),
		Env:         mergeEnv(workerEnv(), map[string]string{ChildEnv: "1"}),
		Stdout:      outW,
		Stderr:      errW,
		ExtraFiles:  []*os.File{reqR, resW}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	err := cmd.Start()
	closeAll(reqR, resW, outW, errW) // the child holds its copies
	if err != nil {
		closeAll(reqW, resR, outR, errR)
		return nil, err
	}
	c := &child{
		cmd: cmd, pid: cmd.Process.Pid, requests: reqW, results: make(chan childResult, 1),
		exited: make(chan struct{}), outR: outR, errR: errR, stdout: &router{}, stderr: &router{},
	}
	c.readers.Add(2)
	go c.route(outR, c.stdout)
	go c.route(errR, c.stderr)
	go func() {
		defer close(c.results)
		defer resR.Close()
		for {
			var res childResult
			if err := readFrame(resR, &res); err != nil {
				return
			}
			c.results <- res
		}
	}()
	go func() { _ = cmd.Wait(); close(c.exited) }()
	p.mu.Lock()
	p.children[c.pid] = true
	p.mu.Unlock()
	p.log.Debug("handler process started", "pid", c.pid)
	return c, nil
}

// childArgs is the worker's own command line: a main that reads its
// arguments before worker.Main sees the same ones in the handler process.
func childArgs() []string {
	if len(os.Args) > 0 {
		return append([]string(nil), os.Args...)
	}
	return []string{"taskgrid-worker"}
}

func (c *child) route(from *os.File, to *router) {
	defer c.readers.Done()
	_, _ = io.Copy(to, from)
	to.close()
}

// runInChild runs a handler task in its slot's process. On stop or timeout
// the process group gets SIGTERM (the child cancels the handler's ctx),
// SIGKILL after the grace; the process is reaped before the slot is given
// back, so the slot's next run never overlaps this one.
func (p *Pool) runInChild(r *run) ending {
	var s *slot
	select {
	case s = <-p.slots: // at once unless more than Concurrency runs were submitted
	case <-r.stop:
		return ending{}
	}
	defer func() { p.slots <- s }()
	if s.c != nil {
		select {
		case <-s.c.exited: // died while idle (killed from outside): start another
			p.retire(s, false)
		default:
		}
	}
	if s.c == nil {
		c, err := p.startChild()
		if err != nil {
			return failed("cannot start a handler process (%s): %v", p.cfg.HandlerExecutable, err)
		}
		s.c = c
	}
	c := s.c
	mark := newSentinel()
	errStream := r.output.NewStream()
	defer errStream.Flush()
	tail := &tailWriter{max: stderrTailBytes}
	outDone := c.stdout.attach(r.output, mark)
	errDone := c.stderr.attach(io.MultiWriter(errStream, tail), mark)
	defer c.stdout.detach()
	defer c.stderr.detach()
	req := childRequest{
		TaskID: r.task.TaskID, UUID: r.task.UUID, RunID: r.task.RunID, Attempt: r.task.Attempt,
		Function: r.task.FunctionName, Args: r.task.Args, Vars: r.task.Vars, Sentinel: mark,
	}
	if err := writeFrame(c.requests, req); err != nil {
		p.retire(s, false)
		return failed("cannot send the run to the handler process: %v", err)
	}
	select {
	case res, ok := <-c.results:
		if ok {
			// The child wrote the sentinel to fds 1 and 2 before its result.
			drained := time.NewTimer(DefaultDrainTimeout)
			defer drained.Stop()
			for _, done := range []<-chan struct{}{outDone, errDone} {
				select {
				case <-done:
				case <-drained.C:
				}
			}
			return res.ending()
		}
		p.retire(s, false)
		trace := "the handler process ended during the run: " + describeExit(c.cmd.ProcessState)
		if lines := tail.lastLines(DefaultStderrTailLines); lines != "" {
			trace += "\nlast lines of stderr:\n" + lines
		}
		return ending{outcome: Failed, traceback: trace}
	case <-r.stop:
		p.retire(s, true)
		return ending{} // execute fills in the stop reason
	}
}

// retire ends the slot's process and whatever is left in its group, reaps
// it and drains its pipes; the slot's next run starts a new process.
// stopping: SIGTERM first, SIGKILL after the grace; else the process is
// expected to be ending (or told so by closing its requests).
func (p *Pool) retire(s *slot, stopping bool) {
	c := s.c
	s.c = nil
	var killAt time.Time
	if stopping {
		killAt = p.killGroup(c.pid, c.exited)
	}
	_ = c.requests.Close() // an idle child reads EOF and exits
	if !stopping {
		select {
		case <-c.exited:
		case <-time.After(DefaultDrainTimeout):
			_ = syscall.Kill(-c.pid, syscall.SIGKILL)
			<-c.exited
		}
	}
	// The leader is gone. Members it left in its group keep their grace, then go.
	readersDone := make(chan struct{})
	go func() { c.readers.Wait(); close(readersDone) }()
	if !killAt.IsZero() {
		select {
		case <-readersDone:
		case <-time.After(time.Until(killAt)):
		}
	}
	_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	select {
	case <-readersDone:
	case <-time.After(DefaultDrainTimeout):
		closeAll(c.outR, c.errR) // someone outside the group holds the pipes: stop reading
		<-readersDone
	}
	closeAll(c.outR, c.errR)
	p.mu.Lock()
	delete(p.children, c.pid)
	p.mu.Unlock()
	p.log.Debug("handler process ended", "pid", c.pid, "exit", describeExit(c.cmd.ProcessState))
}

// closeChildren ends the processes of the idle slots (Close).
func (p *Pool) closeChildren() {
	for {
		select {
		case s := <-p.slots:
			if s.c != nil {
				p.retire(s, false)
			}
		default:
			return
		}
	}
}

func newSentinel() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "\x00taskgrid-run-end:" + hex.EncodeToString(b[:]) + "\x00"
}

// router passes the bytes of one of a handler process's output pipes to the
// run in progress, up to that run's sentinel; bytes outside a run (from a
// subprocess a handler left behind) are dropped.
type router struct {
	mu     sync.Mutex
	to     io.Writer // nil: no run is attached
	mark   []byte
	held   []byte // a tail that may be the start of the sentinel
	done   chan struct{}
	closed bool
}

// attach routes the next bytes to w until mark; the channel closes then
// (or when the pipe ends).
func (r *router) attach(w io.Writer, mark string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	done := make(chan struct{})
	if r.closed {
		close(done)
		return done
	}
	r.to, r.mark, r.held, r.done = w, []byte(mark), nil, done
	return done
}

// detach ends the attachment if the sentinel never came.
func (r *router) detach() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finishLocked()
}

func (r *router) finishLocked() {
	if r.to == nil {
		return
	}
	if len(r.held) > 0 {
		_, _ = r.to.Write(r.held)
	}
	close(r.done)
	r.to, r.held, r.done = nil, nil, nil
}

func (r *router) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.to == nil {
		return len(p), nil
	}
	data := append(r.held, p...)
	if i := bytes.Index(data, r.mark); i >= 0 {
		_, _ = r.to.Write(data[:i])
		r.held = nil
		r.finishLocked()
		return len(p), nil
	}
	keep := partialPrefix(data, r.mark)
	if cut := len(data) - keep; cut > 0 {
		_, _ = r.to.Write(data[:cut])
	}
	r.held = append([]byte(nil), data[len(data)-keep:]...)
	return len(p), nil
}

// close is the end of the pipe: the attached run gets what was held.
func (r *router) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finishLocked()
	r.closed = true
}

// partialPrefix is the length of the longest suffix of data that is a
// proper prefix of mark.
func partialPrefix(data, mark []byte) int {
	for n := min(len(mark)-1, len(data)); n > 0; n-- {
		if bytes.HasSuffix(data, mark[:n]) {
			return n
		}
	}
	return 0
}
