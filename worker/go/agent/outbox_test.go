package agent

import (
	"slices"
	"testing"
	"time"

	"taskgrid.local/worker/capture"
	"taskgrid.local/worker/runner"
)

func result(id int64) runner.Result {
	return runner.Result{Task: runner.Task{Key: runner.Key{TaskID: id, Attempt: 1}}, Outcome: runner.Completed}
}

func TestATroubledReportLeavesTheBatchesAndIsGivenUpAfterItsRetries(t *testing.T) {
	o := NewOutbox()
	o.Retry = RetryPolicy{Tries: 3, Base: time.Hour, Cap: time.Hour}
	o.AddReport(result(1))
	o.AddReport(result(2))
	now := time.Now()
	batch := o.TakeReports()
	if len(batch) != 2 {
		t.Fatalf("batch %v", batch)
	}
	if given := o.FailReports(batch, now); len(given) != 0 {
		t.Fatalf("given up at once: %v", given)
	}
	o.AddReport(result(3))
	// Troubled reports stay out of the regular batches: the new one goes alone.
	regular := o.TakeReports()
	if got := resultKeys(regular); !slices.Equal(got, []runner.Key{{TaskID: 3, Attempt: 1}}) {
		t.Fatalf("regular batch %v", got)
	}
	o.SettleReports(regular)
	if due, next := o.Due(now); due || !next.After(now.Add(29*time.Minute)) {
		t.Fatalf("due %v next %v", due, next)
	}
	if o.TakeTroubledReport(now) != nil {
		t.Fatal("a troubled report was retried before its backoff")
	}
	later := now.Add(2 * time.Hour)
	if due, _ := o.Due(later); !due {
		t.Fatal("not due after the backoff")
	}
	one := o.TakeTroubledReport(later)
	if len(one) != 1 {
		t.Fatalf("troubled batch %v", one)
	}
	if given := o.FailReports(one, later); len(given) != 0 {
		t.Fatalf("given up after 2 failures of 3 tries: %v", given)
	}
	one = o.TakeTroubledReport(later.Add(2 * time.Hour))
	if given := o.FailReports(one, later); len(given) != 1 || given[0] != one[0].Task.Key {
		t.Fatalf("not given up after 3 failures: %v", given)
	}
	if !slices.Contains(o.HeldKeys(), one[0].Task.Key) {
		t.Fatal("a report given up is no longer held before the caller discards it")
	}
	o.Discard(resultKeys(one))
	// The other one is delivered: its troubles are forgotten.
	other := o.TakeTroubledReport(later.Add(2 * time.Hour))
	if len(other) != 1 || other[0].Task.Key == one[0].Task.Key {
		t.Fatalf("other %v", other)
	}
	o.SettleReports(other)
	o.Delivered(resultKeys(other))
	if !o.IsEmpty() {
		t.Fatalf("outbox not empty: %v", o.HeldKeys())
	}
}

func TestTroubledOutputTravelsAloneAndItsReportCarriesTheRest(t *testing.T) {
	o := NewOutbox()
	o.Retry = RetryPolicy{Tries: 5, Base: time.Millisecond, Cap: time.Millisecond}
	bad, good := runner.Key{TaskID: 1, Attempt: 1}, runner.Key{TaskID: 2, Attempt: 1}
	o.AddChunks(bad, []capture.Chunk{{Seq: 1, Data: "a"}})
	o.AddChunks(good, []capture.Chunk{{Seq: 1, Data: "b"}})
	batch := o.TakeOutput()
	o.FailOutput(batch, time.Now())
	o.AddChunks(bad, []capture.Chunk{{Seq: 2, Data: "c"}})
	o.AddChunks(good, []capture.Chunk{{Seq: 2, Data: "d"}})
	if got := o.TakeOutput(); len(got) != 0 {
		t.Fatalf("troubled output in a regular batch: %v", got)
	}
	later := time.Now().Add(time.Second)
	one := o.TakeTroubledOutput(later)
	if len(one) != 1 {
		t.Fatalf("troubled output %v", one)
	}
	o.FailOutput(one, later)
	r := result(1)
	r.Output = []capture.Chunk{{Seq: 3, Data: "e"}}
	o.AddReport(r)
	report := o.TakeTroubledReport(later.Add(time.Second))
	if len(report) != 1 {
		t.Fatalf("report %v", report)
	}
	var seqs []int64
	for _, c := range report[0].Output {
		seqs = append(seqs, c.Seq)
	}
	if !slices.Equal(seqs, []int64{1, 2, 3}) {
		t.Fatalf("report output seqs %v", seqs)
	}
}
