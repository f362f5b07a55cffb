package agent

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	pb "taskgrid.local/worker/gen/taskgridv1"
)

// heartbeatLoop beats every `heartbeat` seconds while there is a session,
// on its own goroutine so that no task can delay it.
func (a *Agent) heartbeatLoop() {
	backoff := NewBackoff()
	for {
		session, _ := a.currentSession()
		if session == nil {
			select { // registration and exit wake us
			case <-a.wakeHeartbeat:
				continue
			case <-a.stopping:
				return
			}
		}
		var delay time.Duration
		if a.heartbeatOnce() {
			backoff.Reset()
			delay = a.interval()
		} else {
			delay = min(backoff.Next(), a.interval())
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-a.wakeHeartbeat: // e.g. a drain must be told at once
			timer.Stop()
		case <-a.stopping:
			timer.Stop()
			return
		}
	}
}

func (a *Agent) interval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.heartbeat
}

// heartbeatOnce sends one Heartbeat and obeys its reply; false when it
// should be retried soon. The reply's stale leases are dropped (their runs
// stopped); the old way, a beat rejected with FAILED_PRECONDITION naming
// them, is re-sent at once without them, a few times at most.
func (a *Agent) heartbeatOnce() bool {
	for range 3 {
		a.mu.Lock()
		session, generation := a.session, a.generation
		held := a.heldKeysLocked()
		draining := a.leaving == "TERMINATE"
		interval := a.heartbeat
		a.mu.Unlock()
		if session == nil {
			return true
		}
		request := &pb.HeartbeatRequest{
			Session: session, Running: refs(held), RssBytes: rssBytes(a.pool.ChildPids()), Draining: draining,
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(interval, time.Second))
		var trailer metadataMD
		response, err := a.rpc.Heartbeat(ctx, request, grpc.Trailer(&trailer))
		cancel()
		if err != nil {
			if a.failed("Heartbeat", err, generation, trailer) && len(staleKeys(trailer)) > 0 {
				continue
			}
			return false
		}
		a.noteSuccess()
		if response.GetHeartbeat() > 0 {
			a.mu.Lock()
			a.heartbeat = seconds(response.GetHeartbeat())
			a.mu.Unlock()
		}
		if stale := keysOf(response.GetStale()); len(stale) > 0 {
			a.dropLeases(stale, "Heartbeat")
		}
		a.applyStatus(response.GetStatus())
		a.applyStops(response.GetStop())
		return true
	}
	return false
}

// rssBytes is the resident memory of this process and pids, read from
// Linux's /proc (0 for whatever cannot be read).
func rssBytes(pids []int) int64 {
	page := int64(os.Getpagesize())
	var total int64
	for _, pid := range append([]int{os.Getpid()}, pids...) {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(data))
		if len(fields) < 2 {
			continue
		}
		if pages, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
			total += pages * page
		}
	}
	return total
}
