package agent

import (
	"math/rand/v2"
	"time"
)

// Retry delays for calls to a coordinator that is away. Each goroutine
// that talks to it keeps its own Backoff, so a failing heartbeat does not
// slow the reporter; jitter keeps many workers from hammering a coordinator
// that just came back all at once.
const (
	DefaultBackoffBase = 100 * time.Millisecond // first retry delay
	DefaultBackoffCap  = 5 * time.Second        // longest retry delay
)

// A coordinator error (INTERNAL, UNKNOWN...) is not an outage: the same
// batch may fail the same way forever. Each lease's report or output gets
// DefaultServerErrorTries calls in all (the Python worker's number), the
// retries DefaultServerErrorBackoff, 2x, 4x... apart (about 1.5 to 3 s in
// all), then it is given up.
const (
	DefaultServerErrorTries   = 5
	DefaultServerErrorBackoff = 200 * time.Millisecond
)

// Backoff yields base, 2*base, 4*base... up to the cap, each scaled by a
// random factor in [0.5, 1).
type Backoff struct {
	Base, Cap time.Duration
	failures  int
}

// NewBackoff returns a Backoff with the default base and cap.
func NewBackoff() *Backoff {
	return &Backoff{Base: DefaultBackoffBase, Cap: DefaultBackoffCap}
}

// Next counts one more failure and returns how long to wait before retrying.
func (b *Backoff) Next() time.Duration {
	delay := jittered(b.Base, b.Cap, b.failures)
	b.failures++
	return delay
}

// jittered is base<<n capped at limit, times a random factor in [0.5, 1).
func jittered(base, limit time.Duration, n int) time.Duration {
	delay := limit
	if n < 30 {
		delay = min(limit, base<<n)
	}
	return time.Duration(float64(delay) * (0.5 + rand.Float64()/2))
}

// Reset forgets the failures after a success.
func (b *Backoff) Reset() { b.failures = 0 }
