package agent

import (
	"slices"
	"sync"

	"taskgrid.local/worker/capture"
	"taskgrid.local/worker/runner"
)

// DefaultMaxBatchBytes bounds the output carried by one SendOutput or
// Report call, keeping it under gRPC's default 4 MB message limit.
const DefaultMaxBatchBytes = 2 * 1024 * 1024

// DefaultMaxBatchReports bounds the reports of one Report call.
const DefaultMaxBatchReports = 500

// Outbox holds what the worker owes the coordinator: live chunks not sent
// yet (by lease) and finished runs not reported yet, in the order they
// finished. Chunks of a finished run travel inside its report, in seq
// order, so a run's live chunks never arrive after its report. A batch that
// could not be delivered is put back, so nothing is lost while the
// coordinator is away. Plain data, safe from any goroutine.
type Outbox struct {
	mu       sync.Mutex
	chunks   map[runner.Key][]capture.Chunk
	reports  map[runner.Key]runner.Result
	order    []runner.Key // report keys, oldest first
	inFlight map[runner.Key]bool
	maxBytes int
	maxCount int
}

// NewOutbox returns an empty outbox with the default batch limits.
func NewOutbox() *Outbox {
	return &Outbox{
		chunks:   map[runner.Key][]capture.Chunk{},
		reports:  map[runner.Key]runner.Result{},
		inFlight: map[runner.Key]bool{},
		maxBytes: DefaultMaxBatchBytes,
		maxCount: DefaultMaxBatchReports,
	}
}

func size(chunks []capture.Chunk) int {
	n := 0
	for _, c := range chunks {
		n += len(c.Data)
	}
	return n
}

// withOutput returns r carrying earlier chunks too, all in seq order.
func withOutput(r runner.Result, earlier []capture.Chunk) runner.Result {
	merged := append(slices.Clone(earlier), r.Output...)
	slices.SortStableFunc(merged, func(a, b capture.Chunk) int { return int(a.Seq - b.Seq) })
	r.Output = merged
	return r
}

// AddChunks queues live chunks of a run.
func (o *Outbox) AddChunks(key runner.Key, chunks []capture.Chunk) {
	if len(chunks) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.chunks[key] = append(o.chunks[key], chunks...)
}

// AddReport queues the end of a run.
func (o *Outbox) AddReport(r runner.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.reports[r.Task.Key]; !ok {
		o.order = append(o.order, r.Task.Key)
	}
	o.reports[r.Task.Key] = r
}

// HasReports reports whether a report waits.
func (o *Outbox) HasReports() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.reports) > 0
}

// HasOutput reports whether live chunks of a run without a report wait.
func (o *Outbox) HasOutput() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for key := range o.chunks {
		if _, done := o.reports[key]; !done {
			return true
		}
	}
	return false
}

// IsEmpty is true when nothing waits and no report is in flight.
func (o *Outbox) IsEmpty() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.reports) == 0 && len(o.chunks) == 0 && len(o.inFlight) == 0
}

// HeldKeys are the leases with something unsent or in flight: the worker
// still holds them, so its heartbeats name them.
func (o *Outbox) HeldKeys() []runner.Key {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[runner.Key]bool{}
	for key := range o.reports {
		seen[key] = true
	}
	for key := range o.chunks {
		seen[key] = true
	}
	for key := range o.inFlight {
		seen[key] = true
	}
	keys := make([]runner.Key, 0, len(seen))
	for key := range seen {
		keys = append(keys, key)
	}
	return keys
}

// TakeOutput removes and returns live chunks of runs without a report, up
// to the batch size.
func (o *Outbox) TakeOutput() map[runner.Key][]capture.Chunk {
	o.mu.Lock()
	defer o.mu.Unlock()
	batch := map[runner.Key][]capture.Chunk{}
	total := 0
	for key, chunks := range o.chunks {
		if _, done := o.reports[key]; done {
			continue
		}
		if len(batch) > 0 && total+size(chunks) > o.maxBytes {
			break
		}
		batch[key] = chunks
		delete(o.chunks, key)
		total += size(chunks)
	}
	return batch
}

// TakeReports removes and returns reports, oldest first, each carrying
// its run's unsent chunks; they count as in flight until Settle or Restore.
func (o *Outbox) TakeReports() []runner.Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	var batch []runner.Result
	total, taken := 0, 0
	for _, key := range o.order {
		r := o.reports[key]
		earlier := o.chunks[key]
		n := size(earlier) + size(r.Output)
		if len(batch) > 0 && (len(batch) >= o.maxCount || total+n > o.maxBytes) {
			break
		}
		delete(o.reports, key)
		if len(earlier) > 0 {
			delete(o.chunks, key)
			r = withOutput(r, earlier)
		}
		batch = append(batch, r)
		o.inFlight[key] = true
		total += n
		taken++
	}
	o.order = o.order[taken:]
	return batch
}

// SettleReports marks reports taken by TakeReports as delivered (or dropped for good).
func (o *Outbox) SettleReports(batch []runner.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range batch {
		delete(o.inFlight, r.Task.Key)
	}
}

// RestoreOutput puts back an output batch that could not be sent, ahead of newer chunks.
func (o *Outbox) RestoreOutput(batch map[runner.Key][]capture.Chunk) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for key, chunks := range batch {
		o.chunks[key] = append(slices.Clone(chunks), o.chunks[key]...)
	}
}

// RestoreReports puts back reports that could not be sent, ahead of newer ones.
func (o *Outbox) RestoreReports(batch []runner.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	keys := make([]runner.Key, 0, len(batch))
	for _, r := range batch {
		key := r.Task.Key
		delete(o.inFlight, key)
		if earlier := o.chunks[key]; len(earlier) > 0 {
			delete(o.chunks, key)
			r = withOutput(r, earlier)
		}
		if _, ok := o.reports[key]; !ok {
			keys = append(keys, key)
		}
		o.reports[key] = r
	}
	o.order = append(keys, o.order...)
}

// Discard forgets everything about these leases (stale or lost).
func (o *Outbox) Discard(keys []runner.Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, key := range keys {
		delete(o.chunks, key)
		delete(o.reports, key)
		delete(o.inFlight, key)
	}
	o.order = slices.DeleteFunc(o.order, func(k runner.Key) bool { return slices.Contains(keys, k) })
}

// Clear forgets everything (the session is gone, and every lease with it).
func (o *Outbox) Clear() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.chunks)
	clear(o.reports)
	clear(o.inFlight)
	o.order = nil
}
