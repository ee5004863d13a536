// Package faultfs mounts a FUSE loopback of a real directory for tests, in
// which faults an NFS export shows (hung calls, EIO, ENOSPC, ESTALE, EACCES,
// slowness, root_squash) are switched on and off while it is mounted.
//
// The loopback is github.com/hanwen/go-fuse/v2's, with every node operation
// passed through the active faults first. Each operation on the backing
// directory runs on a dedicated OS thread whose working directory is the
// backing directory and whose filesystem uid and gid are the caller's (or the
// squashed ones), so the kernel checks permissions exactly as for that user:
// only directories inside the backing directory are searched, and a squashed
// root has no capabilities there. The kernel's attribute and entry caches are
// off, so every call reaches the faults.
//
// Mount unmounts in t.Cleanup, whatever the test did: it releases every hang
// and clears every fault first, so no caller stays blocked, then unmounts,
// lazily if the mount is busy.
package faultfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Op names one kind of filesystem call as FUSE delivers it.
type Op string

// The operations faults can select. A path-based system call usually reaches
// the filesystem as several of these: openat(O_RDONLY|O_DIRECTORY) is a
// lookup of each component and an opendir, mkdir is a lookup and a mkdir,
// fchown and fchmod are setattr, close is flush.
const (
	OpLookup      Op = "lookup"
	OpGetattr     Op = "getattr"
	OpSetattr     Op = "setattr"
	OpAccess      Op = "access"
	OpStatfs      Op = "statfs"
	OpMkdir       Op = "mkdir"
	OpMknod       Op = "mknod"
	OpCreate      Op = "create"
	OpTmpfile     Op = "tmpfile"
	OpSymlink     Op = "symlink"
	OpLink        Op = "link"
	OpReadlink    Op = "readlink"
	OpUnlink      Op = "unlink"
	OpRmdir       Op = "rmdir"
	OpRename      Op = "rename"
	OpOpen        Op = "open"
	OpOpendir     Op = "opendir"
	OpReaddir     Op = "readdir"
	OpRead        Op = "read"
	OpWrite       Op = "write"
	OpFlush       Op = "flush"
	OpFsync       Op = "fsync"
	OpAllocate    Op = "allocate"
	OpCopyRange   Op = "copyfilerange"
	OpGetxattr    Op = "getxattr"
	OpSetxattr    Op = "setxattr"
	OpListxattr   Op = "listxattr"
	OpRemovexattr Op = "removexattr"
)

// Allocating are the operations that need free space or inodes, the ones a
// full export fails with ENOSPC (lookups, removals and renames still work).
var Allocating = []Op{OpMkdir, OpMknod, OpCreate, OpTmpfile, OpSymlink, OpLink, OpWrite, OpAllocate, OpCopyRange, OpSetxattr}

// Match selects the calls a fault applies to. The zero value selects every
// call.
type Match struct {
	// Ops limits the fault to these operations; empty: every operation.
	Ops []Op
	// Path limits the fault to calls on this path or below it, relative to
	// the mount point ("a/b" matches "a/b" and "a/b/c", not "a/bc"). For
	// calls that name an entry (lookup, mkdir, create, unlink, rmdir,
	// rename, ...) the entry's path counts, and either name of a rename.
	// Empty: every path.
	//
	// A lookup on the path hangs too, and the kernel holds the parent
	// directory's lock during a lookup: while "a/b" is hung, creating or
	// removing entries in "a" waits as well, as on a hung NFS export.
	Path string
}

func (m Match) matches(op Op, paths []string) bool {
	if len(m.Ops) > 0 {
		found := false
		for _, o := range m.Ops {
			if o == op {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if m.Path == "" {
		return true
	}
	for _, p := range paths {
		if p == m.Path || strings.HasPrefix(p, m.Path+"/") {
			return true
		}
	}
	return false
}

type faultKind int

const (
	kindFail faultKind = iota
	kindHang
	kindDelay
)

// Fault is one active fault. Clear switches it off.
type Fault struct {
	fs    *FS
	match Match
	kind  faultKind
	errno syscall.Errno
	delay time.Duration
	// released is closed by Clear: hung calls continue.
	released chan struct{}
	once     sync.Once

	hits    atomic.Int64
	blocked atomic.Int64
}

// Clear switches the fault off; calls a hang holds continue at once. Calling
// it again does nothing.
func (f *Fault) Clear() {
	f.once.Do(func() {
		f.fs.remove(f)
		close(f.released)
	})
}

// Hits is how many calls the fault has affected so far (failed, delayed or
// hung, including those still hanging).
func (f *Fault) Hits() int64 { return f.hits.Load() }

// Blocked is how many calls a hang holds right now.
func (f *Fault) Blocked() int64 { return f.blocked.Load() }

// WaitBlocked waits until the hang holds at least n calls, for tests that
// must know a call is stuck before going on.
func (f *Fault) WaitBlocked(ctx context.Context, n int64) error {
	for f.Blocked() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d calls to hang on %+v, %d do: %w", n, f.match, f.Blocked(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Squash maps callers with uid 0 to an unprivileged user, as an NFS server
// exporting with root_squash does (anonuid, anongid).
type Squash struct {
	UID, GID uint32
}

// Nobody is the squashed identity of a default root_squash export.
var Nobody = Squash{UID: 65534, GID: 65534}

// FS is a mounted fault filesystem.
type FS struct {
	// Dir is the mount point: point the code under test here.
	Dir string
	// Backing is the real directory behind it: check results here, and
	// arrange state here when it must not go through the faults.
	Backing string

	server  *fuse.Server
	dev     uint64 // of the mount; its minor number names the connection
	workers *workers
	// closed is closed when the unmount starts: every hang lets go.
	closed    chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	faults []*Fault
	squash *Squash
}

// Options tune Mount. The zero value is usable.
type Options struct {
	// Dir is the mount point, an existing empty directory; empty: a new
	// directory under t.TempDir().
	Dir string
	// Workers is how many operations on the backing directory run at once;
	// zero: 8. Hung and delayed calls wait before they take a worker.
	Workers int
	// Debug logs every FUSE request to standard error.
	Debug bool
}

// Mount mounts a loopback of backing, an existing directory, and unmounts it
// when the test ends. It skips the test only when /dev/fuse is missing; any
// other failure fails it.
func Mount(tb testing.TB, backing string, o Options) *FS {
	tb.Helper()
	if _, err := os.Stat("/dev/fuse"); errors.Is(err, fs.ErrNotExist) {
		tb.Skip("faultfs: /dev/fuse is missing: this kernel or container offers no FUSE (load the fuse module, or give the container /dev/fuse)")
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		tb.Fatalf("faultfs: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(backing, &st); err != nil {
		tb.Fatalf("faultfs: backing directory: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		tb.Fatalf("faultfs: backing %s is not a directory", backing)
	}
	dir := o.Dir
	if dir == "" {
		dir = filepath.Join(tb.TempDir(), "mnt")
		if err := os.Mkdir(dir, 0o755); err != nil {
			tb.Fatalf("faultfs: %v", err)
		}
	}
	n := o.Workers
	if n <= 0 {
		n = 8
	}
	w, err := startWorkers(backing, n)
	if err != nil {
		tb.Fatalf("faultfs: %v", err)
	}
	f := &FS{Dir: dir, Backing: backing, workers: w, closed: make(chan struct{})}

	// The loopback resolves every path relative to ".", the backing
	// directory as the workers' working directory; a node method that ran
	// elsewhere would use the process's working directory, so node
	// overrides every path-based method of LoopbackNode.
	rootData := &gofs.LoopbackRoot{
		Path: ".",
		Dev:  st.Dev,
		NewNode: func(rd *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
			return &node{LoopbackNode: gofs.LoopbackNode{RootData: rd}, fs: f}
		},
	}
	root := &node{LoopbackNode: gofs.LoopbackNode{RootData: rootData}, fs: f}
	rootData.RootNode = root

	zero := time.Duration(0)
	opts := &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			// Other users (a test's unprivileged child) may use it;
			// permissions are checked by the workers' credentials.
			AllowOther:  os.Geteuid() == 0,
			FsName:      "faultfs:" + backing,
			Name:        "faultfs",
			DirectMount: true,
			Debug:       o.Debug,
		},
	}
	server, err := gofs.Mount(dir, root, opts)
	if err != nil {
		w.stop()
		tb.Fatalf("faultfs: mount %s on %s: %v (as non-root: fusermount3, package fuse3, must be installed and /dev/fuse open to the user)", backing, dir, err)
	}
	f.server = server
	var mst unix.Stat_t
	if err := unix.Stat(dir, &mst); err != nil {
		_ = server.Unmount()
		w.stop()
		tb.Fatalf("faultfs: stat of the new mount %s: %v", dir, err)
	}
	f.dev = mst.Dev
	stopWatchdog := f.watchdog(tb)
	tb.Cleanup(func() {
		stopWatchdog()
		if err := f.unmount(); err != nil {
			tb.Errorf("faultfs: %v", err)
		}
	})
	return f
}

// Fail makes the matching calls fail with errno until Clear.
func (f *FS) Fail(errno syscall.Errno, m Match) *Fault {
	return f.add(&Fault{match: m, kind: kindFail, errno: errno})
}

// Hang blocks the matching calls until Clear (or until the caller is
// interrupted by a signal, then they fail with EINTR).
func (f *FS) Hang(m Match) *Fault {
	return f.add(&Fault{match: m, kind: kindHang})
}

// Delay makes the matching calls wait d before they run, until Clear.
func (f *FS) Delay(d time.Duration, m Match) *Fault {
	return f.add(&Fault{match: m, kind: kindDelay, delay: d})
}

// RootSquash makes calls from uid 0 act as s, until restore is called.
// Calls from other users always act as themselves.
func (f *FS) RootSquash(s Squash) (restore func()) {
	f.mu.Lock()
	prev := f.squash
	f.squash = &s
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.squash = prev
		f.mu.Unlock()
	}
}

// ClearAll switches every fault off and releases every hang; squashing
// stays as it is.
func (f *FS) ClearAll() {
	f.mu.Lock()
	faults := append([]*Fault(nil), f.faults...)
	f.mu.Unlock()
	for _, ft := range faults {
		ft.Clear()
	}
}

func (f *FS) add(ft *Fault) *Fault {
	ft.fs = f
	ft.released = make(chan struct{})
	f.mu.Lock()
	f.faults = append(f.faults, ft)
	f.mu.Unlock()
	return ft
}

func (f *FS) remove(ft *Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.faults {
		if x == ft {
			f.faults = append(f.faults[:i:i], f.faults[i+1:]...)
			return
		}
	}
}

// intercept applies the active faults, in the order they were added, to one
// call: delays and hangs wait, the first matching failure is returned.
func (f *FS) intercept(ctx context.Context, op Op, paths ...string) syscall.Errno {
	f.mu.Lock()
	var active []*Fault
	for _, ft := range f.faults {
		if ft.match.matches(op, paths) {
			active = append(active, ft)
		}
	}
	f.mu.Unlock()
	for _, ft := range active {
		ft.hits.Add(1)
		switch ft.kind {
		case kindFail:
			return ft.errno
		case kindDelay:
			t := time.NewTimer(ft.delay)
			select {
			case <-t.C:
			case <-ft.released:
				t.Stop()
			case <-f.closed:
				t.Stop()
			case <-ctx.Done():
				t.Stop()
				return syscall.EINTR
			}
		case kindHang:
			ft.blocked.Add(1)
			var interrupted bool
			select {
			case <-ft.released:
			case <-f.closed:
			case <-ctx.Done():
				interrupted = true
			}
			ft.blocked.Add(-1)
			if interrupted {
				return syscall.EINTR
			}
		}
	}
	return 0
}

// creds returns the identity the call acts as: the caller's, squashed.
func (f *FS) creds(ctx context.Context) (uid, gid uint32) {
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return 0, 0
	}
	uid, gid = caller.Uid, caller.Gid
	f.mu.Lock()
	s := f.squash
	f.mu.Unlock()
	if s != nil && uid == 0 {
		uid, gid = s.UID, s.GID
	}
	return uid, gid
}

// watchdog releases every hang and detaches the mount shortly before the test
// binary's deadline (go test -timeout): the panic it ends with skips
// t.Cleanup, a process that dies with one of its threads blocked on its own
// FUSE server never exits (a zombie holding the mount until the connection is
// aborted in /sys/fs/fuse/connections), and a mount whose server died stays
// behind, answering ENOTCONN, until unmounted.
func (f *FS) watchdog(tb testing.TB) (stop func()) {
	d, ok := tb.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return func() {}
	}
	deadline, ok := d.Deadline()
	if !ok {
		return func() {}
	}
	left := time.Until(deadline)
	t := time.AfterFunc(left-min(10*time.Second, left/10), func() {
		tb.Logf("faultfs: the test deadline is near: releasing every hang on %s and detaching it", f.Dir)
		f.release()
		if err := unix.Unmount(f.Dir, unix.MNT_DETACH); err != nil {
			tb.Logf("faultfs: umount2(%s, MNT_DETACH): %v", f.Dir, err)
		}
	})
	return func() { t.Stop() }
}

// release lets every hang and delay go, now and from now on.
func (f *FS) release() {
	f.closeOnce.Do(func() { close(f.closed) })
}

func (f *FS) unmount() error {
	// Let every hang and delay go before unmounting: a caller blocked in the kernel on a hung call can't even
	// be killed, and the unmount would wait for it.
	f.release()
	f.ClearAll()
	defer f.workers.stop()

	done := make(chan error, 1)
	go func() { done <- f.server.Unmount() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		err = errors.New("unmount took more than 10s")
	}
	if err == nil {
		return nil
	}
	// Busy (a process still has a file open below it): detach now, the
	// kernel drops the mount when the last user is gone.
	if derr := unix.Unmount(f.Dir, unix.MNT_DETACH); derr != nil {
		if out, ferr := exec.Command("fusermount3", "-uz", f.Dir).CombinedOutput(); ferr != nil {
			return fmt.Errorf("unmount %s: %v; umount2(MNT_DETACH): %v; fusermount3 -uz: %v: %s", f.Dir, err, derr, ferr, out)
		}
	}
	waited := make(chan struct{})
	go func() { f.server.Wait(); close(waited) }()
	select {
	case <-waited:
		return nil
	case <-time.After(10 * time.Second):
	}
	// A call is still in flight, or a process keeps a file open. Abort
	// the connection: every pending and later call fails with ENOTCONN.
	// Otherwise this process could never exit, should one of its own
	// threads wait for an answer from the server it is ending.
	if aerr := f.abort(); aerr != nil {
		return fmt.Errorf("%s detached after %v, but its server still runs (a call in flight, or a file open on it), and aborting the connection failed: %w", f.Dir, err, aerr)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: the server still runs 10s after its connection was aborted", f.Dir)
	}
	return fmt.Errorf("%s: unmount failed (%v) and calls still ran 10s after a lazy unmount: the connection was aborted", f.Dir, err)
}

// abort aborts the FUSE connection through the fusectl filesystem, mounting
// it first if needed (systemd mounts it at boot; containers often lack it).
func (f *FS) abort() error {
	const ctl = "/sys/fs/fuse/connections"
	file := fmt.Sprintf("%s/%d/abort", ctl, unix.Minor(f.dev))
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount fusectl on %s: %w", ctl, err)
		}
	}
	return os.WriteFile(file, []byte("1"), 0)
}

// Mounted reports whether dir is a mount point in /proc/self/mountinfo, for
// tests that check nothing is left mounted.
func Mounted(dir string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	return false, nil
}

// Mounts lists the mount points of faultfs mounts in /proc/self/mountinfo.
func Mounts() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		// ... mountpoint ... - fstype source superopts
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if len(fields) > 4 && len(rest) > 0 && rest[0] == "fuse.faultfs" {
			out = append(out, unescapeMountinfo(fields[4]))
		}
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
