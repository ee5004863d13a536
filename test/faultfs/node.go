package faultfs

import (
	"context"
	"path"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node whose every operation goes through the faults and
// then runs on a worker. It overrides every path-based method of
// gofs.LoopbackNode: one left to the embedded type would run on a thread
// whose working directory is not the backing directory
// (TestEveryLoopbackMethodOverridden checks).
type node struct {
	gofs.LoopbackNode
	fs *FS
}

// rel is the node's path relative to the mount root, "" for the root.
func (n *node) rel() string { return n.Path(n.Root()) }

// local is the node's path for system calls on a worker: relative to the
// backing directory, its working directory.
func (n *node) local() string {
	if r := n.rel(); r != "" {
		return r
	}
	return "."
}

func (n *node) child(name string) string { return path.Join(n.rel(), name) }

// call applies the faults for op on paths, then runs fn on a worker as the
// caller.
func (n *node) call(ctx context.Context, op Op, paths []string, fn func(ctx context.Context) syscall.Errno) syscall.Errno {
	if errno := n.fs.intercept(ctx, op, paths...); errno != 0 {
		return errno
	}
	var errno syscall.Errno
	if e := n.fs.do(ctx, func(ctx context.Context) { errno = fn(ctx) }); e != 0 {
		return e
	}
	return errno
}

func (n *node) wrap(fh gofs.FileHandle) gofs.FileHandle {
	if lf, ok := fh.(*gofs.LoopbackFile); ok {
		return &file{lf: lf, n: n}
	}
	return fh
}

func unwrap(fh gofs.FileHandle) gofs.FileHandle {
	if f, ok := fh.(*file); ok {
		return f.lf
	}
	return fh
}

var (
	_ gofs.NodeAccesser = (*node)(nil)
	_ gofs.NodeStatxer  = (*node)(nil)
)

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.call(ctx, OpStatfs, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Statfs(ctx, out)
	})
}

func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	return n.call(ctx, OpAccess, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		// AT_EACCESS: check as the worker's fsuid, not the process's real
		// uid, which plain access(2) would use.
		return gofs.ToErrno(unix.Faccessat2(unix.AT_FDCWD, n.local(), mask, unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW))
	})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	errno = n.call(ctx, OpLookup, []string{n.child(name)}, func(ctx context.Context) (e syscall.Errno) {
		ch, e = n.LoopbackNode.Lookup(ctx, name, out)
		return e
	})
	return ch, errno
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	errno = n.call(ctx, OpMknod, []string{n.child(name)}, func(ctx context.Context) (e syscall.Errno) {
		ch, e = n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
		return e
	})
	return ch, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	errno = n.call(ctx, OpMkdir, []string{n.child(name)}, func(ctx context.Context) (e syscall.Errno) {
		ch, e = n.LoopbackNode.Mkdir(ctx, name, mode, out)
		return e
	})
	return ch, errno
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.call(ctx, OpRmdir, []string{n.child(name)}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Rmdir(ctx, name)
	})
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.call(ctx, OpUnlink, []string{n.child(name)}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Unlink(ctx, name)
	})
}

// Rename passes the flags (RENAME_NOREPLACE, RENAME_EXCHANGE) to renameat2
// on the paths, where the loopback would open both directories for reading
// first, which a caller allowed to write but not to read them could not.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.fs != n.fs {
		return syscall.EXDEV
	}
	return n.call(ctx, OpRename, []string{n.child(name), np.child(newName)}, func(ctx context.Context) syscall.Errno {
		return gofs.ToErrno(unix.Renameat2(unix.AT_FDCWD, path.Join(n.local(), name), unix.AT_FDCWD, path.Join(np.local(), newName), uint(flags)))
	})
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (ch *gofs.Inode, fh gofs.FileHandle, fuseFlags uint32, errno syscall.Errno) {
	errno = n.call(ctx, OpCreate, []string{n.child(name)}, func(ctx context.Context) (e syscall.Errno) {
		ch, fh, fuseFlags, e = n.LoopbackNode.Create(ctx, name, flags, mode, out)
		return e
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, n.wrapChild(ch, fh), fuseFlags, 0
}

// wrapChild wraps the handle of a new child so its reads and writes see the
// faults under the child's path.
func (n *node) wrapChild(ch *gofs.Inode, fh gofs.FileHandle) gofs.FileHandle {
	if c, ok := ch.Operations().(*node); ok {
		return c.wrap(fh)
	}
	return n.wrap(fh)
}

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (ch *gofs.Inode, fh gofs.FileHandle, fuseFlags uint32, errno syscall.Errno) {
	errno = n.call(ctx, OpTmpfile, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		ch, fh, fuseFlags, e = n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
		return e
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, n.wrap(fh), fuseFlags, 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	errno = n.call(ctx, OpSymlink, []string{n.child(name)}, func(ctx context.Context) (e syscall.Errno) {
		ch, e = n.LoopbackNode.Symlink(ctx, target, name, out)
		return e
	})
	return ch, errno
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	paths := []string{n.child(name)}
	if t, ok := target.(*node); ok {
		paths = append(paths, t.rel())
	}
	errno = n.call(ctx, OpLink, paths, func(ctx context.Context) (e syscall.Errno) {
		ch, e = n.LoopbackNode.Link(ctx, target, name, out)
		return e
	})
	return ch, errno
}

func (n *node) Readlink(ctx context.Context) (target []byte, errno syscall.Errno) {
	errno = n.call(ctx, OpReadlink, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		target, e = n.LoopbackNode.Readlink(ctx)
		return e
	})
	return target, errno
}

func (n *node) Open(ctx context.Context, flags uint32) (fh gofs.FileHandle, fuseFlags uint32, errno syscall.Errno) {
	errno = n.call(ctx, OpOpen, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		fh, fuseFlags, e = n.LoopbackNode.Open(ctx, flags)
		return e
	})
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh), fuseFlags, 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fh gofs.FileHandle, fuseFlags uint32, errno syscall.Errno) {
	errno = n.call(ctx, OpOpendir, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		fh, fuseFlags, e = n.LoopbackNode.OpendirHandle(ctx, flags)
		return e
	})
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{inner: fh, n: n}, fuseFlags, 0
}

func (n *node) Readdir(ctx context.Context) (ds gofs.DirStream, errno syscall.Errno) {
	errno = n.call(ctx, OpReaddir, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		ds, e = n.LoopbackNode.Readdir(ctx)
		return e
	})
	return ds, errno
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.call(ctx, OpGetattr, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Getattr(ctx, unwrap(f), out)
	})
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.call(ctx, OpSetattr, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Setattr(ctx, unwrap(f), in, out)
	})
}

func (n *node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return n.call(ctx, OpGetattr, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Statx(ctx, unwrap(f), flags, mask, out)
	})
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (sz uint32, errno syscall.Errno) {
	errno = n.call(ctx, OpGetxattr, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		sz, e = n.LoopbackNode.Getxattr(ctx, attr, dest)
		return e
	})
	return sz, errno
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.call(ctx, OpSetxattr, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
	})
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.call(ctx, OpRemovexattr, []string{n.rel()}, func(ctx context.Context) syscall.Errno {
		return n.LoopbackNode.Removexattr(ctx, attr)
	})
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (sz uint32, errno syscall.Errno) {
	errno = n.call(ctx, OpListxattr, []string{n.rel()}, func(ctx context.Context) (e syscall.Errno) {
		sz, e = n.LoopbackNode.Listxattr(ctx, dest)
		return e
	})
	return sz, errno
}

// CopyFileRange is refused: the kernel then copies through read and write,
// which see the faults.
func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// file is an open file of the loopback; its calls see the faults under its
// node's path. It runs on the FUSE goroutine, not a worker, except where the
// kernel checks the caller's identity on the descriptor (fchmod, fchown).
type file struct {
	lf *gofs.LoopbackFile
	n  *node
}

var (
	_ gofs.FileReader    = (*file)(nil)
	_ gofs.FileWriter    = (*file)(nil)
	_ gofs.FileFlusher   = (*file)(nil)
	_ gofs.FileFsyncer   = (*file)(nil)
	_ gofs.FileReleaser  = (*file)(nil)
	_ gofs.FileGetattrer = (*file)(nil)
	_ gofs.FileSetattrer = (*file)(nil)
	_ gofs.FileLseeker   = (*file)(nil)
	_ gofs.FileAllocater = (*file)(nil)
)

func (f *file) fault(ctx context.Context, op Op) syscall.Errno {
	return f.n.fs.intercept(ctx, op, f.n.rel())
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if errno := f.fault(ctx, OpRead); errno != 0 {
		return nil, errno
	}
	return f.lf.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.fault(ctx, OpWrite); errno != 0 {
		return 0, errno
	}
	return f.lf.Write(ctx, data, off)
}

func (f *file) Flush(ctx context.Context) syscall.Errno {
	// The loopback's Flush closes a duplicate of the descriptor, which
	// must happen even when the fault fails the call.
	errno := f.fault(ctx, OpFlush)
	if e := f.lf.Flush(ctx); errno == 0 {
		errno = e
	}
	return errno
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.fault(ctx, OpFsync); errno != 0 {
		return errno
	}
	return f.lf.Fsync(ctx, flags)
}

// Release always closes: the kernel ignores its result.
func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	if errno := f.fault(ctx, OpGetattr); errno != 0 {
		return errno
	}
	return f.lf.Getattr(ctx, out)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := f.fault(ctx, OpSetattr); errno != 0 {
		return errno
	}
	var errno syscall.Errno
	if e := f.n.fs.do(ctx, func(ctx context.Context) { errno = f.lf.Setattr(ctx, in, out) }); e != 0 {
		return e
	}
	return errno
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if errno := f.fault(ctx, OpAllocate); errno != 0 {
		return errno
	}
	return f.lf.Allocate(ctx, off, size, mode)
}

// dirHandle is an open directory. The readdir faults apply when a listing
// starts (its first READDIR, or the first after a seek to 0), not to every
// entry: the loopback hands entries out one at a time.
type dirHandle struct {
	inner   gofs.FileHandle
	n       *node
	started bool // the kernel serializes reads of one directory handle
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !d.started {
		if errno := d.n.fs.intercept(ctx, OpReaddir, d.n.rel()); errno != 0 {
			return nil, errno
		}
		d.started = true
	}
	r, ok := d.inner.(gofs.FileReaddirenter)
	if !ok {
		return nil, syscall.ENOTSUP
	}
	return r.Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		d.started = false
	}
	if s, ok := d.inner.(gofs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(gofs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.n.fs.intercept(ctx, OpFsync, d.n.rel()); errno != 0 {
		return errno
	}
	if s, ok := d.inner.(gofs.FileFsyncdirer); ok {
		return s.Fsyncdir(ctx, flags)
	}
	return syscall.ENOTSUP
}
