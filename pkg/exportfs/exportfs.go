// Package exportfs performs filesystem operations below the mounted NFS
// export that never follow a symbolic link, never leave the export and are
// each bounded by a timeout.
package exportfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Sentinel errors. Every error returned by FS that is caused by one of these
// conditions wraps the matching sentinel, so callers can use errors.Is.
var (
	// ErrSymlink means a component of the path, or the path itself, is a
	// symbolic link. FS never follows symbolic links below the root, not even
	// ones pointing inside the export.
	ErrSymlink = errors.New("path contains a symbolic link")
	// ErrNotDirectory means a component of the path, or the path itself, is
	// not a directory.
	ErrNotDirectory = errors.New("not a directory")
	// ErrInvalidPath means a rel or name argument is not a valid path
	// relative to the root.
	ErrInvalidPath = errors.New("invalid path")
	// ErrHoldsArchive reports a directory MkdirAll would not adopt because
	// it holds what looks like an archive (see Existing.RefuseHolding).
	ErrHoldsArchive = errors.New("directory holds an archive")
	// ErrChanged reports that a directory was moved while Scan read it.
	ErrChanged = errors.New("directory moved during the scan")
	// ErrTimeout means the operation did not finish within the FS timeout,
	// typically because the NFS export is hung or unreachable.
	ErrTimeout = errors.New("filesystem operation timed out")
	// ErrNotSent is the ErrTimeout of a call refused before it reached
	// the export (it is hung, or an earlier call is still blocked in it):
	// unlike an abandoned call, it can't change anything later.
	ErrNotSent = fmt.Errorf("not sent: %w", ErrTimeout)
)

// maxStuck bounds how many operations of one FS may be running at once
// (callers beyond it wait, within their timeout, for a slot).
// Operations abandoned after a timeout keep their slot until the blocked
// system call returns, so a hung export cannot make an FS accumulate more than
// maxStuck goroutines (and open file descriptors); further calls then fail
// with ErrTimeout after waiting for a slot.
const maxStuck = 64

// maxRemovals bounds how many of those slots RemoveAll calls hold at once; the
// other removals wait, within their ctx, for one to finish. A removal runs for
// as long as it makes progress and its ctx allows, so without this bound a few
// huge or hostile volumes being deleted would hold every slot and starve the
// short operations: MkdirAll for new claims and the readiness probe's
// CheckWritable.
const maxRemovals = maxStuck / 2

// FS performs operations on directories below one root (the mounted export).
//
// Every rel argument is a slash-separated path relative to the root, with no
// empty, "." or ".." segments. Callers validate their paths; FS checks them
// again and returns an error wrapping ErrInvalidPath.
//
// FS walks every path from a file descriptor of the root, one component at a
// time, with O_NOFOLLOW, and performs the final operation relative to the
// file descriptor of the parent directory. A symbolic link anywhere below the
// root is refused (ErrSymlink) rather than followed, and replacing a
// directory by a symbolic link concurrently cannot redirect an operation
// elsewhere. The root itself is trusted and may be reached through symbolic
// links.
//
// Every method returns within the FS timeout or when ctx is done, whichever
// comes first, even if a system call on the export hangs: the work runs in a
// goroutine, which is left behind, still blocked, until the system call
// returns (see maxStuck). An abandoned operation stops before its next system
// call, but the one in flight may still complete.
//
// FS is safe for concurrent use. Create it with New.
type FS struct {
	root     string
	timeout  time.Duration
	slots    chan struct{}
	removals chan struct{} // held by RemoveAll besides its slot
	scans    chan struct{} // held by Scan besides its slot
	// files is held by each call on the provisioner's own files (ReadFile,
	// AppendFile, ReplaceFile) until its system calls return.
	files  chan struct{}
	brk    breaker
	mkdirs creations

	// beforeOp, when set (only by tests), runs in the work goroutine before
	// the operation starts; it lets tests simulate a hung export.
	beforeOp func()
	// afterCreate, when set (only by tests), runs in MkdirAll's work
	// goroutine once it created the leaf: a call blocked in the kernel
	// that completes after its caller gave up.
	afterCreate func()
	// onStep, when set (only by tests), runs in RemoveAll's work goroutine
	// after each of its system calls; it lets tests hang, slow down, cancel
	// or race a removal midway.
	onStep func()
}

// New returns an FS for the directory root. A timeout <= 0 bounds operations
// by ctx only. New does not touch the filesystem; use CheckWritable to verify
// the root.
func New(root string, timeout time.Duration) *FS {
	return &FS{
		root:     filepath.Clean(root),
		timeout:  timeout,
		slots:    make(chan struct{}, maxStuck),
		removals: make(chan struct{}, maxRemovals),
		scans:    make(chan struct{}, maxScans),
		files:    make(chan struct{}, 1),
	}
}

// Root returns the root directory, as given to New but cleaned.
func (f *FS) Root() string { return f.root }

// DirOptions are the attributes MkdirAll applies to the leaf directory.
type DirOptions struct {
	// Mode is set exactly with chmod, not subject to the umask. Only
	// permission bits, os.ModeSetuid, os.ModeSetgid and os.ModeSticky are
	// allowed (os.ModeDir is ignored).
	Mode os.FileMode
	// UID and GID are the owner and group to set; nil leaves them unchanged.
	UID, GID *int
}

// Usage is the capacity of the filesystem holding the root.
type Usage struct {
	// FreeBytes is the space available to unprivileged users.
	FreeBytes  uint64
	TotalBytes uint64
	FreeInodes uint64
	// TotalInodes is zero when the filesystem does not report inodes.
	TotalInodes uint64
}

// abs returns the absolute path of a validated rel, for messages: a path
// of up to 4 KiB that claims chose is shown by its start and end, so that
// an Event repeating it stays small.
func (f *FS) abs(rel string) string {
	if rel == "" {
		return f.root
	}
	return f.root + "/" + shownPath([]byte(rel))
}

// describe names a rel that failed validation, for messages.
func (f *FS) describe(rel string) string {
	return fmt.Sprintf("%q in export %s", rel, f.root)
}

// run executes work in a goroutine and waits for it, for the FS timeout or
// for ctx, whichever comes first. what names the operation and its path, for
// error messages. work receives a context that is cancelled once run returns,
// so an abandoned operation stops before its next system call.
func run[T any](ctx context.Context, f *FS, what string, work func(ctx context.Context) (T, error)) (T, error) {
	return runOp(ctx, f, what, nil, nil, nil, work)
}

// progress is what a long operation (RemoveAll) reports while it works: the
// FS timeout then bounds each of its steps, not the whole operation, which
// only ctx bounds.
type progress struct {
	start time.Time    // set by runOp when the work starts
	brk   *breaker     // set by runOp: each step is an answer of the export
	last  atomic.Int64 // the time of the last step, in nanoseconds since start
	done  atomic.Int64 // entries removed (or counted)
	// noun is what the operation does to entries, for messages; "" is
	// "removing".
	noun string
}

func (p *progress) step() {
	p.last.Store(int64(time.Since(p.start)))
	p.brk.alive()
}

// idle returns how long ago the last step (or the start) was.
func (p *progress) idle() time.Duration {
	return time.Since(p.start) - time.Duration(p.last.Load())
}

// note tells, for an error message, what an interrupted operation achieved.
func (p *progress) note() string {
	if p == nil {
		return ""
	}
	if p.noun != "" {
		return fmt.Sprintf(" after %s %d entries", p.noun, p.done.Load())
	}
	return fmt.Sprintf(" after removing %d entries (they stay removed; the next attempt goes on from there)", p.done.Load())
}

// stopped is the error for an operation that ctx stopped with cause.
func (p *progress) stopped(cause error) error {
	if p == nil {
		return cause
	}
	return fmt.Errorf("stopped%s: %w", p.note(), cause)
}

// lateHooks are told about a call its caller stopped waiting for: abandoned
// by the caller as it gives up, answered by the work once it returns (in
// either order).
type lateHooks[T any] struct {
	abandoned func()
	answered  func(T, error)
}

// runOp is run for operations that also hold a slot of limit (nil: none),
// waited for within ctx only (f.files: not waited for), that may want to
// know what they did after their caller gave up (late, nil: no), and that
// report their steps to p (nil: the
// operation is one step).
func runOp[T any](ctx context.Context, f *FS, what string, limit chan struct{}, p *progress, late *lateHooks[T], work func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%s: %w", what, context.Cause(ctx))
	}
	start := time.Now()
	var adm admission
	if f.timeout > 0 {
		var err error
		if adm, err = f.brk.admit(start, f.timeout, f.root); err != nil {
			return zero, fmt.Errorf("%s: %w", what, err)
		}
	}
	switch {
	case limit == nil:
	case limit == f.files:
		// The provisioner writes its files one call at a time, so a busy
		// lane means an earlier call is still blocked: one landing after
		// a later one could reorder the file.
		select {
		case limit <- struct{}{}:
		default:
			f.brk.unused(adm)
			return zero, fmt.Errorf("%s: an earlier call on the provisioner's files is still blocked in the export %s; it may be hung or unreachable, check the NFS server and the mount: %w", what, f.root, ErrNotSent)
		}
	default:
		select {
		case limit <- struct{}{}:
		case <-ctx.Done():
			f.brk.unused(adm)
			lane := "removals"
			if limit == f.scans {
				lane = "usage scans"
			}
			return zero, fmt.Errorf("%s: still waiting for one of the %d %s already running on the export %s to finish: %w",
				what, cap(limit), lane, f.root, context.Cause(ctx))
		}
	}
	release := func() {
		if limit != nil {
			<-limit
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timer *time.Timer
	var expired <-chan time.Time
	if f.timeout > 0 {
		timer = time.NewTimer(f.timeout)
		defer timer.Stop()
		expired = timer.C
	}

	if f.slots != nil {
		select {
		case f.slots <- struct{}{}:
		case <-ctx.Done():
			release()
			f.brk.unused(adm)
			return zero, fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-expired:
			release()
			f.brk.unused(adm)
			f.brk.trip(start)
			return zero, fmt.Errorf("%s: %d earlier operations on the export %s are still blocked; the export may be hung or unreachable, check the NFS server and the mount: %w",
				what, maxStuck, f.root, ErrNotSent)
		}
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	if p != nil {
		p.start = time.Now()
		p.brk = &f.brk
	}
	// state tells the work and its caller which of them finished first:
	// the work (running → finished) or the caller, who gave up waiting
	// (running → abandoned) and leaves the late answer to the work.
	const (
		running = iota
		finished
		abandoned
	)
	var state atomic.Int32
	go func() {
		if f.beforeOp != nil {
			f.beforeOp()
		}
		v, err := work(wctx)
		// Whatever the work returns, the export answered.
		gone := !state.CompareAndSwap(running, finished)
		f.brk.answered(adm, gone)
		if gone && late != nil {
			late.answered(v, err)
		}
		// Free the slots before the caller hears back, so that its next
		// call finds them free.
		if f.slots != nil {
			<-f.slots
		}
		release()
		done <- result{v, err}
	}()

	var res result
	answered := false
wait:
	for {
		select {
		case res = <-done:
			answered = true
			break wait
		case <-ctx.Done():
			res.err = p.stopped(context.Cause(ctx))
			break wait
		case <-expired:
			if p != nil {
				if idle := p.idle(); idle < f.timeout {
					timer.Reset(f.timeout - idle)
					continue
				}
			}
			res.err = fmt.Errorf("no answer within %s%s; the export %s may be hung or unreachable, check the NFS server and the mount: %w",
				f.timeout, p.note(), f.root, ErrTimeout)
			f.brk.trip(start)
			break wait
		}
	}
	if !answered {
		if state.CompareAndSwap(running, abandoned) {
			f.brk.abandoned()
			if late != nil {
				late.abandoned()
			}
		} else {
			// The work finished just as the wait ended: prefer its
			// result.
			res = <-done
		}
	}
	if res.err != nil {
		return res.v, fmt.Errorf("%s: %w", what, res.err)
	}
	return res.v, nil
}
