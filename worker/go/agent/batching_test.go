package agent

import (
	"slices"
	"testing"
	"time"
)

// lingers sets both lingers (long ones make the tests deterministic: each
// ends early once there is nothing more to wait for).
func lingers(lease, report time.Duration) func(*Agent) {
	return func(a *Agent) { a.leaseLinger, a.reportLinger = lease, report }
}

func TestRunsEndingTogetherShareOneReport(t *testing.T) {
	f := startFake(t)
	first, second := f.offer(1, "wait", "[]"), f.offer(2, "wait", "[]")
	g := newGate()
	a, _, _ := startAgentWith(t, f, handlers(g), lingers(LeaseLinger, 5*time.Second))
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	started := time.Now()
	close(g.release)
	f.waitUntil(t, "both reports", func() bool { return f.report(first) != nil && f.report(second) != nil })
	if took := time.Since(started); took > 2*time.Second {
		t.Errorf("the reports waited out the linger (%v): it must end once nothing runs", took)
	}
	f.with(func() {
		if len(f.reportCalls) != 1 || !slices.Contains(f.reportCalls[0], first) || !slices.Contains(f.reportCalls[0], second) {
			t.Errorf("want one Report carrying both runs, got %v", f.reportCalls)
		}
	})
}

func TestSlotsFreeingTogetherShareOneLease(t *testing.T) {
	f := startFake(t)
	f.offer(1, "wait", "[]")
	f.offer(2, "wait", "[]")
	g := newGate()
	a, _, _ := startAgentWith(t, f, handlers(g), lingers(5*time.Second, ReportLinger))
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	var asked int
	f.with(func() { asked = len(f.leaseAsks) }) // no slot free: no Lease is out
	started := time.Now()
	close(g.release)
	f.waitUntil(t, "a Lease once the runs are over", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.leaseAsks) > asked
	})
	if took := time.Since(started); took > 2*time.Second {
		t.Errorf("the Lease waited out the linger (%v): it must go once every slot is free", took)
	}
	f.with(func() {
		if got := f.leaseAsks[asked]; got != 2 {
			t.Errorf("the Lease after both runs ended asked for %d tasks, want 2 (all asks %v)", got, f.leaseAsks)
		}
	})
}

func TestALoneRunIsReportedWithoutTheLinger(t *testing.T) {
	f := startFake(t)
	a, _, _ := startAgentWith(t, f, handlers(newGate()), lingers(10*time.Second, 10*time.Second))
	f.waitUntil(t, "a Lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.leaseCalls > 0
	})
	started := time.Now()
	lone := f.offer(1, "add", "[1, 2]")
	f.waitUntil(t, "the report", func() bool { return f.report(lone) != nil })
	if took := time.Since(started); took > 2*time.Second {
		t.Errorf("a lone run took %v to be reported: it must not wait for the linger", took)
	}
	// Idle again: the next task is leased at once too.
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	started = time.Now()
	next := f.offer(2, "add", "[2, 2]")
	f.waitUntil(t, "the next report", func() bool { return f.report(next) != nil })
	if took := time.Since(started); took > 2*time.Second {
		t.Errorf("an idle worker took %v to lease and report a task", took)
	}
}

func TestAReportWaitsForTheLingerWhileAnotherRunGoesOn(t *testing.T) {
	const linger = 300 * time.Millisecond
	f := startFake(t)
	long := f.offer(1, "wait", "[]")
	g := newGate()
	a, _, _ := startAgentWith(t, f, handlers(g), lingers(LeaseLinger, linger))
	f.waitUntil(t, "the long run to start", func() bool { return len(a.pool.ActiveKeys()) == 1 })
	started := time.Now()
	short := f.offer(2, "add", "[1, 2]")
	f.waitUntil(t, "the short run's report", func() bool { return f.report(short) != nil })
	if took := time.Since(started); took < linger {
		t.Errorf("reported after %v while another run went on: want the %v linger first", took, linger)
	}
	if f.report(long) != nil {
		t.Fatal("the long run was reported before it ended")
	}
	close(g.release)
	f.waitUntil(t, "the long run's report", func() bool { return f.report(long) != nil })
}

// ACK+FETCH: runs ending together ride on the next Lease, no Report call.
func TestReportsRideOnTheNextLeaseWhenTheCoordinatorTakesThem(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.takesReports = true })
	first, second := f.offer(1, "wait", "[]"), f.offer(2, "wait", "[]")
	g := newGate()
	a, _, _ := startAgentWith(t, f, handlers(g), lingers(5*time.Second, 5*time.Second))
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	close(g.release)
	f.waitUntil(t, "both reports", func() bool { return f.report(first) != nil && f.report(second) != nil })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	f.with(func() {
		if len(f.reportCalls) != 0 {
			t.Errorf("want no Report call, got %v", f.reportCalls)
		}
		if len(f.leaseReports) != 1 || len(f.leaseReports[0]) != 2 {
			t.Errorf("want one Lease carrying both reports, got %v", f.leaseReports)
		}
	})
}

// A coordinator that did not say lease_takes_reports never gets reports on Lease.
func TestNoReportsOnLeaseUnlessTheCoordinatorTakesThem(t *testing.T) {
	f := startFake(t)
	first, second := f.offer(1, "wait", "[]"), f.offer(2, "wait", "[]")
	g := newGate()
	a, _, _ := startAgentWith(t, f, handlers(g), lingers(5*time.Second, 5*time.Second))
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	close(g.release)
	f.waitUntil(t, "both reports", func() bool { return f.report(first) != nil && f.report(second) != nil })
	f.with(func() {
		if len(f.leaseReports) != 0 || len(f.reportCalls) == 0 {
			t.Errorf("reports on Lease %v, Report calls %v", f.leaseReports, f.reportCalls)
		}
	})
}

// A Lease carrying reports that fails: they go again with Report.
func TestReportsOfAFailedLeaseGoAgainWithReport(t *testing.T) {
	f := startFake(t)
	f.with(func() { f.takesReports = true; f.failLease = 1 })
	first, second := f.offer(1, "wait", "[]"), f.offer(2, "wait", "[]")
	g := newGate()
	a, _, _ := startAgentWith(t, f, handlers(g), lingers(5*time.Second, 5*time.Second))
	f.waitUntil(t, "both runs to start", func() bool { return len(a.pool.ActiveKeys()) == 2 })
	close(g.release)
	f.waitUntil(t, "both reports", func() bool { return f.report(first) != nil && f.report(second) != nil })
	f.waitUntil(t, "the outbox to be empty", func() bool { return a.outbox.IsEmpty() })
	f.with(func() {
		if len(f.leaseReports) != 1 || len(f.reportCalls) != 1 || len(f.reportCalls[0]) != 2 {
			t.Errorf("want the failed Lease's reports sent once with Report: Lease %v, Report %v",
				f.leaseReports, f.reportCalls)
		}
	})
	if f.reportCount(first) != 1 || f.reportCount(second) != 1 {
		t.Errorf("reports applied %d and %d times", f.reportCount(first), f.reportCount(second))
	}
}
