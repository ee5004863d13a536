package exportfs

import (
	"fmt"
	"sync"
	"time"
)

// maxProbes bounds how many calls let through while the export is hung may
// be blocked at once. They find out whether it answers again; more would
// only pile up goroutines and OS threads in the kernel.
const maxProbes = 4

// breaker remembers that the export stopped answering, so that while it is
// hung calls fail at once instead of each waiting out the timeout and leaving
// one more goroutine and OS thread blocked in the kernel (a hard NFS mount
// blocks a thread per call until the server is back). One call per two timeout
// periods still goes through, as a probe, up to maxProbes blocked at once, so
// a hang of part of the export does not stop the rest for good. Any answer
// closes the breaker: a probe's, a RemoveAll step's, or a late one from a
// call abandoned earlier.
type breaker struct {
	mu sync.Mutex
	// since is when the oldest call still unanswered started; zero while
	// the export answers.
	since time.Time
	// nextProbe is when the next call may go through while hung.
	nextProbe time.Time
	// probes counts the calls let through while hung whose system call
	// has not returned.
	probes int
	// blocked counts the calls abandoned (timed out or cancelled) whose
	// system call has not returned.
	blocked int
}

// admission is what admit decided for one call.
type admission struct {
	// probe: the export is hung and this call was let through to find out
	// whether it answers again.
	probe bool
}

// admit decides whether a call may go to the export now; an error wrapping
// ErrNotSent says why not.
func (b *breaker) admit(now time.Time, timeout time.Duration, root string) (admission, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.since.IsZero() {
		return admission{}, nil
	}
	if now.Before(b.nextProbe) || b.probes >= maxProbes {
		return admission{}, fmt.Errorf("the export %s has not answered for %s (%d calls still blocked in it); calls fail at once until it answers again, the next try is within %s: it may be hung or unreachable, check the NFS server and the mount: %w",
			root, now.Sub(b.since).Round(time.Second), b.blocked, 2*timeout, ErrNotSent)
	}
	// The probe may take the whole timeout; then one period passes.
	b.nextProbe = now.Add(2 * timeout)
	b.probes++
	return admission{probe: true}, nil
}

// unused gives back a probe's place when its call never reached the export.
func (b *breaker) unused(a admission) {
	if a.probe {
		b.mu.Lock()
		b.probes--
		b.nextProbe = time.Time{}
		b.mu.Unlock()
	}
}

// trip records that a call started at start got no answer in time.
func (b *breaker) trip(start time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.since.IsZero() {
		b.since = start
		// The first call after the trip is a probe: a call stuck on
		// one path must not stop calls elsewhere that would answer.
		b.nextProbe = time.Time{}
	}
}

// abandoned records that a caller stopped waiting for a call still running.
func (b *breaker) abandoned() {
	b.mu.Lock()
	b.blocked++
	b.mu.Unlock()
}

// answered records that the export answered a call. late says whether its
// caller had abandoned it; a.probe whether it was let through as a probe.
func (b *breaker) answered(a admission, late bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.since = time.Time{}
	if late {
		b.blocked--
	}
	if a.probe {
		b.probes--
	}
}

// alive records an answer from a call in progress (a RemoveAll step).
func (b *breaker) alive() {
	b.mu.Lock()
	b.since = time.Time{}
	b.mu.Unlock()
}

// hung tells since when the export has not answered (zero if it answers)
// and how many abandoned calls are still blocked in it.
func (b *breaker) hung() (since time.Time, blocked int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.since, b.blocked
}

// Hung tells since when the export has not answered a call (zero while it
// answers) and how many calls abandoned after a timeout or cancellation are
// still blocked in it.
func (f *FS) Hung() (since time.Time, blocked int) { return f.brk.hung() }
