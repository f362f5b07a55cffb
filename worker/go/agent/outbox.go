package agent

import (
	"slices"
	"sync"
	"time"

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
//
// A lease whose delivery failed with a coordinator error (INTERNAL,
// UNKNOWN) is "troubled": its output and report leave the regular batches
// and travel alone, each only once its own backoff has passed, so one
// poisoned item never holds back the others (nor drags them down with
// it). After Retry.Tries such failures in a row the outbox gives it up.
type Outbox struct {
	mu       sync.Mutex
	chunks   map[runner.Key][]capture.Chunk
	reports  map[runner.Key]runner.Result
	order    []runner.Key // report keys, oldest first
	inFlight map[runner.Key]bool
	troubled map[runner.Key]*trouble
	byReport map[runner.Key]bool // back from a failed Lease: never carried by a Lease again
	maxBytes int
	maxCount int
	// Retry says how a troubled lease is retried; set it before use.
	Retry RetryPolicy
}

// RetryPolicy bounds the calls about a lease whose delivery keeps failing
// with a coordinator error: after Tries failed calls in a row (an outage in
// between not counted) it is given up. Retry n waits Base<<(n-1), capped,
// times a random factor in [0.5, 1).
type RetryPolicy struct {
	Tries     int
	Base, Cap time.Duration
}

type trouble struct {
	failures  int
	notBefore time.Time
}

// NewOutbox returns an empty outbox with the default batch limits.
func NewOutbox() *Outbox {
	return &Outbox{
		chunks:   map[runner.Key][]capture.Chunk{},
		reports:  map[runner.Key]runner.Result{},
		inFlight: map[runner.Key]bool{},
		troubled: map[runner.Key]*trouble{},
		byReport: map[runner.Key]bool{},
		maxBytes: DefaultMaxBatchBytes,
		maxCount: DefaultMaxBatchReports,
		Retry: RetryPolicy{
			Tries: DefaultServerErrorTries, Base: DefaultServerErrorBackoff, Cap: DefaultBackoffCap,
		},
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

// Due reports whether something may be sent now; otherwise next is when a
// troubled lease may be retried (zero: nothing waits for that).
func (o *Outbox) Due(now time.Time) (due bool, next time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	consider := func(key runner.Key) bool {
		t := o.troubled[key]
		if t == nil || !t.notBefore.After(now) {
			return true
		}
		if next.IsZero() || t.notBefore.Before(next) {
			next = t.notBefore
		}
		return false
	}
	for key := range o.reports {
		if consider(key) {
			return true, time.Time{}
		}
	}
	for key := range o.chunks {
		if _, done := o.reports[key]; !done && consider(key) {
			return true, time.Time{}
		}
	}
	return false, next
}

// HasReports is true when a report waits for a regular batch (troubled
// ones travel alone, on their own schedule).
func (o *Outbox) HasReports() bool { return o.hasReports(false) }

// HasCarriable is true when a report waits that a Lease may carry.
func (o *Outbox) HasCarriable() bool { return o.hasReports(true) }

func (o *Outbox) hasReports(carrying bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, key := range o.order {
		if o.troubled[key] == nil && !(carrying && o.byReport[key]) {
			return true
		}
	}
	return false
}

// readyLocked: key's troubles (if any) allow a try at now.
func (o *Outbox) readyLocked(key runner.Key, now time.Time) bool {
	t := o.troubled[key]
	return t == nil || !t.notBefore.After(now)
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
// to the batch size; troubled leases are left out (see TakeTroubledOutput).
func (o *Outbox) TakeOutput() map[runner.Key][]capture.Chunk {
	o.mu.Lock()
	defer o.mu.Unlock()
	batch := map[runner.Key][]capture.Chunk{}
	total := 0
	for key, chunks := range o.chunks {
		if _, done := o.reports[key]; done || o.troubled[key] != nil {
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
// Troubled leases are left out (see TakeTroubledReport).
func (o *Outbox) TakeReports() []runner.Result { return o.takeReports(false) }

// TakeCarriable is TakeReports for a Lease to carry (ACK+FETCH): reports
// back from a failed Lease are left out, they go by Report.
func (o *Outbox) TakeCarriable() []runner.Result { return o.takeReports(true) }

// RestoreByReport is RestoreReports for the reports of a failed Lease: the
// worker cannot know whether they were applied, so they go by Report,
// which answers those already applied as stale.
func (o *Outbox) RestoreByReport(batch []runner.Result) {
	o.RestoreReports(batch)
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range batch {
		o.byReport[r.Task.Key] = true
	}
}

func (o *Outbox) takeReports(carrying bool) []runner.Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	var batch []runner.Result
	total := 0
	var kept []runner.Key
	for i, key := range o.order {
		if o.troubled[key] != nil || (carrying && o.byReport[key]) {
			kept = append(kept, key)
			continue
		}
		n := size(o.chunks[key]) + size(o.reports[key].Output)
		if len(batch) > 0 && (len(batch) >= o.maxCount || total+n > o.maxBytes) {
			kept = append(kept, o.order[i:]...)
			break
		}
		batch = append(batch, o.takeReportLocked(key))
		total += n
	}
	o.order = kept
	return batch
}

func (o *Outbox) takeReportLocked(key runner.Key) runner.Result {
	r := o.reports[key]
	delete(o.reports, key)
	delete(o.byReport, key)
	if earlier := o.chunks[key]; len(earlier) > 0 {
		delete(o.chunks, key)
		r = withOutput(r, earlier)
	}
	o.inFlight[key] = true
	return r
}

// TakeTroubledOutput removes and returns the live chunks of one troubled
// lease whose retry is due at now (nil when there is none).
func (o *Outbox) TakeTroubledOutput(now time.Time) map[runner.Key][]capture.Chunk {
	o.mu.Lock()
	defer o.mu.Unlock()
	for key, chunks := range o.chunks {
		if _, done := o.reports[key]; done || o.troubled[key] == nil || !o.readyLocked(key, now) {
			continue
		}
		delete(o.chunks, key)
		return map[runner.Key][]capture.Chunk{key: chunks}
	}
	return nil
}

// TakeTroubledReport removes and returns the report of one troubled lease
// whose retry is due at now, as a batch of one (nil when there is none).
func (o *Outbox) TakeTroubledReport(now time.Time) []runner.Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, key := range o.order {
		if o.troubled[key] == nil || !o.readyLocked(key, now) {
			continue
		}
		o.order = slices.Delete(o.order, i, i+1)
		return []runner.Result{o.takeReportLocked(key)}
	}
	return nil
}

// Delivered clears the troubles of leases whose batch went through.
func (o *Outbox) Delivered(keys []runner.Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, key := range keys {
		delete(o.troubled, key)
	}
}

// failLocked counts one more coordinator error for key; true when it has
// run out of retries (the caller then forgets it).
func (o *Outbox) failLocked(key runner.Key, now time.Time) bool {
	t := o.troubled[key]
	if t == nil {
		t = &trouble{}
		o.troubled[key] = t
	}
	t.failures++
	if t.failures >= o.Retry.Tries {
		delete(o.troubled, key)
		return true
	}
	t.notBefore = now.Add(max(time.Millisecond, jittered(o.Retry.Base, o.Retry.Cap, t.failures-1)))
	return false
}

// FailOutput puts back an output batch that failed with a coordinator
// error, its leases now troubled, and returns the leases that ran out of
// tries: their chunks of this batch are not put back (dropped); their
// later output, and their report, start with a clean slate.
func (o *Outbox) FailOutput(batch map[runner.Key][]capture.Chunk, now time.Time) []runner.Key {
	var given []runner.Key
	o.mu.Lock()
	for key := range batch {
		if o.failLocked(key, now) {
			given = append(given, key)
		}
	}
	o.mu.Unlock()
	for _, key := range given {
		delete(batch, key)
	}
	o.RestoreOutput(batch)
	return given
}

// FailReports puts back a report batch that failed with a coordinator
// error, its leases now troubled, and returns the leases that ran out of
// tries: those stay in flight (held) until the caller Discards them.
func (o *Outbox) FailReports(batch []runner.Result, now time.Time) []runner.Key {
	var given []runner.Key
	var kept []runner.Result
	o.mu.Lock()
	for _, r := range batch {
		if o.failLocked(r.Task.Key, now) {
			given = append(given, r.Task.Key)
		} else {
			kept = append(kept, r)
		}
	}
	o.mu.Unlock()
	o.RestoreReports(kept)
	return given
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
		delete(o.troubled, key)
		delete(o.byReport, key)
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
	clear(o.troubled)
	clear(o.byReport)
	o.order = nil
}
