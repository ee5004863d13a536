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
	// ErrTimeout means the operation did not finish within the FS timeout,
	// typically because the NFS export is hung or unreachable.
	ErrTimeout = errors.New("filesystem operation timed out")
)

// maxStuck bounds how many operations of one FS may be running at once
// (callers beyond it wait, within their timeout, for a slot).
// Operations abandoned after a timeout keep their slot until the blocked
// system call returns, so a hung export cannot make an FS accumulate more than
// maxStuck goroutines (and open file descriptors); further calls then fail
// with ErrTimeout after waiting for a slot.
const maxStuck = 64

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
	root    string
	timeout time.Duration
	slots   chan struct{}

	// beforeOp, when set (only by tests), runs in the work goroutine before
	// the operation starts; it lets tests simulate a hung export.
	beforeOp func()
}

// New returns an FS for the directory root. A timeout <= 0 bounds operations
// by ctx only. New does not touch the filesystem; use CheckWritable to verify
// the root.
func New(root string, timeout time.Duration) *FS {
	return &FS{
		root:    filepath.Clean(root),
		timeout: timeout,
		slots:   make(chan struct{}, maxStuck),
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

// abs returns the absolute path of a validated rel, for messages.
func (f *FS) abs(rel string) string {
	if rel == "" {
		return f.root
	}
	return f.root + "/" + rel
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
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%s: %w", what, context.Cause(ctx))
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var expired <-chan time.Time
	if f.timeout > 0 {
		timer := time.NewTimer(f.timeout)
		defer timer.Stop()
		expired = timer.C
	}

	if f.slots != nil {
		select {
		case f.slots <- struct{}{}:
		case <-ctx.Done():
			return zero, fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-expired:
			return zero, fmt.Errorf("%s: %d earlier operations on the export %s are still blocked; the export may be hung or unreachable, check the NFS server and the mount: %w",
				what, maxStuck, f.root, ErrTimeout)
		}
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		if f.slots != nil {
			defer func() { <-f.slots }()
		}
		if f.beforeOp != nil {
			f.beforeOp()
		}
		v, err := work(wctx)
		done <- result{v, err}
	}()

	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		res.err = context.Cause(ctx)
	case <-expired:
		res.err = fmt.Errorf("no answer within %s; the export %s may be hung or unreachable, check the NFS server and the mount: %w",
			f.timeout, f.root, ErrTimeout)
	}
	// The work may have finished just as time ran out: prefer its result.
	select {
	case res = <-done:
	default:
	}
	if res.err != nil {
		return res.v, fmt.Errorf("%s: %w", what, res.err)
	}
	return res.v, nil
}
