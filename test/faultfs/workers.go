package faultfs

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// workers run the operations on the backing directory, each on an OS thread
// of its own whose working directory is the backing directory (the loopback
// resolves paths relative to it) and whose filesystem credentials are set per
// call.
//
// Acting as the user, rather than checking mode bits on its behalf, leaves
// every permission decision to the kernel (search and write permission,
// sticky directories, ownership for chown and chmod, setgid inheritance, the
// capabilities root loses with a non-zero fsuid), so a squashed root sees
// what it sees on an NFS export with root_squash. Working relative to the
// backing directory means only directories inside it are searched, as on an
// export, whatever the modes of its parents (t.TempDir is 0700).
type workers struct {
	// uid and gid are the process's own: calls from that user need no
	// switch (and an unprivileged process can make none).
	uid, gid uint32
	backing  string
	jobs     chan *job
	quit     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

type job struct {
	uid, gid uint32
	fn       func()
	done     chan syscall.Errno
}

func startWorkers(backing string, n int) (*workers, error) {
	w := &workers{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), backing: backing, jobs: make(chan *job), quit: make(chan struct{})}
	for range n {
		ready := make(chan error, 1)
		w.wg.Add(1)
		go w.loop(ready)
		if err := <-ready; err != nil {
			w.stop()
			return nil, err
		}
	}
	return w, nil
}

func (w *workers) stop() {
	w.once.Do(func() { close(w.quit) })
	w.wg.Wait()
}

// loop serves jobs on a locked thread. It never unlocks it: the thread's
// working directory and umask are its own (unshare(CLONE_FS)), so it must end
// with this goroutine rather than run others.
func (w *workers) loop(ready chan<- error) {
	defer w.wg.Done()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		ready <- fmt.Errorf("unshare(CLONE_FS) for a worker thread: %w", err)
		return
	}
	if err := unix.Chdir(w.backing); err != nil {
		ready <- fmt.Errorf("worker: chdir to the backing directory: %w", err)
		return
	}
	// The kernel already applied the caller's umask to the modes it
	// sends; a server applies none of its own.
	unix.Umask(0)
	groups, err := unix.Getgroups()
	if err != nil {
		ready <- fmt.Errorf("worker: getgroups: %w", err)
		return
	}
	ready <- nil
	for {
		select {
		case <-w.quit:
			return
		case j := <-w.jobs:
			if !w.serve(j, groups) {
				// This thread's credentials are unknown now: let it
				// die with the goroutine, start a clean one.
				w.wg.Add(1)
				go w.loop(make(chan error, 1))
				return
			}
		}
	}
}

// serve runs one job as uid/gid and reports whether the thread's own
// credentials were restored afterwards.
func (w *workers) serve(j *job, groups []int) bool {
	switched := j.uid != w.uid || j.gid != w.gid
	if switched {
		if err := actAs(j.uid, j.gid, nil); err != nil {
			j.done <- syscall.EIO
			return actAs(w.uid, w.gid, groups) == nil
		}
	}
	j.fn()
	if switched {
		if err := actAs(w.uid, w.gid, groups); err != nil {
			j.done <- 0
			return false
		}
	}
	j.done <- 0
	return true
}

// actAs sets this thread's supplementary groups, fsgid and fsuid, with raw
// system calls: the C library and Go's syscall package apply them to every
// thread of the process, these only to the calling one.
func actAs(uid, gid uint32, groups []int) error {
	if err := setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	// Both calls return the previous id, never an error; an invalid id
	// (-1) changes nothing and reads the current one back.
	gotGID, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(^uint32(0)), 0, 0)
	gotUID, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(^uint32(0)), 0, 0)
	if uint32(gotUID) != uid || uint32(gotGID) != gid {
		return fmt.Errorf("fsuid/fsgid are %d/%d, wanted %d/%d", uint32(gotUID), uint32(gotGID), uid, gid)
	}
	return nil
}

func setgroups(groups []int) error {
	gids := make([]uint32, len(groups))
	for i, g := range groups {
		gids[i] = uint32(g)
	}
	var p uintptr
	if len(gids) > 0 {
		p = uintptr(unsafe.Pointer(&gids[0]))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), p, 0); e != 0 {
		return e
	}
	runtime.KeepAlive(gids)
	return nil
}

// do runs fn on a worker as the caller of ctx (squashed if it is root and
// root is squashed), passing fn a context that names that identity, so the
// loopback gives new entries that owner. It fails with EIO only when the
// worker could not take the caller's identity.
func (f *FS) do(ctx context.Context, fn func(ctx context.Context)) syscall.Errno {
	uid, gid := f.creds(ctx)
	cctx := ctx
	if caller, ok := fuse.FromContext(ctx); ok && (caller.Uid != uid || caller.Gid != gid) {
		c := *caller
		c.Uid, c.Gid = uid, gid
		cctx = fuse.NewContext(ctx, &c)
	}
	j := &job{uid: uid, gid: gid, fn: func() { fn(cctx) }, done: make(chan syscall.Errno, 1)}
	select {
	case f.workers.jobs <- j:
	case <-f.workers.quit:
		return syscall.ENOTCONN
	}
	return <-j.done
}
