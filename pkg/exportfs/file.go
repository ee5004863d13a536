package exportfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// The provisioner's own files live in a directory at the root whose name
// starts with "." (no claim may use such a name), one level down: rel is
// "<.dir>/<name>". The directory is created with mode 0700 and the files with
// 0600, so only the provisioner's user reads them through the export.

// maxFileBytes bounds what ReadFile reads, so a file planted or grown by
// someone else can't exhaust memory.
const maxFileBytes = 256 << 20

// ReadFile returns the contents of the regular file rel. A missing file or
// directory is an error wrapping fs.ErrNotExist; a symbolic link, FIFO or
// anything else that isn't a regular file is refused.
func (f *FS) ReadFile(ctx context.Context, rel string) ([]byte, error) {
	dir, name, err := splitOwnFile(rel)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.describe(rel), err)
	}
	return runOp(ctx, f, "read "+f.abs(rel), f.files, nil, nil, func(ctx context.Context) ([]byte, error) {
		fd, err := f.openOwnFile(dir, name, unix.O_RDONLY, false)
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
		st, err := fstat(fd)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", f.abs(rel), err)
		}
		if st.Size > maxFileBytes {
			return nil, fmt.Errorf("%s is %d bytes, more than the %d this provisioner ever writes; inspect it", f.abs(rel), st.Size, maxFileBytes)
		}
		buf := make([]byte, 0, st.Size+1)
		for {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			var n int
			err := ignoringEINTR(func() (err error) {
				n, err = unix.Read(fd, buf[len(buf):cap(buf)])
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f.abs(rel), err)
			}
			if n == 0 {
				return buf, nil
			}
			buf = buf[:len(buf)+n]
			if len(buf) > maxFileBytes {
				return nil, fmt.Errorf("%s grew past %d bytes while being read; inspect it", f.abs(rel), maxFileBytes)
			}
		}
	})
}

// AppendFile appends data to the regular file rel, creating it and its
// directory if needed, and flushes it to the server before returning.
func (f *FS) AppendFile(ctx context.Context, rel string, data []byte) error {
	dir, name, err := splitOwnFile(rel)
	if err != nil {
		return fmt.Errorf("append to %s: %w", f.describe(rel), err)
	}
	_, err = runOp(ctx, f, "append to "+f.abs(rel), f.files, nil, nil, func(ctx context.Context) (struct{}, error) {
		fd, err := f.openOwnFile(dir, name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT, true)
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, f.writeAndClose(fd, rel, data)
	})
	return err
}

// ReplaceFile replaces the regular file rel with data atomically: it writes a
// temporary file beside it, flushes it and renames it over rel. A reader sees
// the old contents or the new, never a mix.
func (f *FS) ReplaceFile(ctx context.Context, rel string, data []byte) error {
	dir, name, err := splitOwnFile(rel)
	if err != nil {
		return fmt.Errorf("replace %s: %w", f.describe(rel), err)
	}
	_, err = runOp(ctx, f, "replace "+f.abs(rel), f.files, nil, nil, func(ctx context.Context) (struct{}, error) {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:]) // never fails on Linux
		tmp := name + ".tmp-" + hex.EncodeToString(rnd[:])
		tmpRel := dir + "/" + tmp
		fd, err := f.openOwnFile(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, true)
		if err != nil {
			return struct{}{}, err
		}
		dirfd, err := f.openOwnDir(dir, false)
		if err != nil {
			unix.Close(fd)
			return struct{}{}, err
		}
		defer unix.Close(dirfd)
		if err := f.writeAndClose(fd, tmpRel, data); err != nil {
			_ = unix.Unlinkat(dirfd, tmp, 0)
			return struct{}{}, err
		}
		if err := ctx.Err(); err != nil {
			_ = unix.Unlinkat(dirfd, tmp, 0)
			return struct{}{}, err
		}
		if err := ignoringEINTR(func() error { return unix.Renameat(dirfd, tmp, dirfd, name) }); err != nil {
			_ = unix.Unlinkat(dirfd, tmp, 0)
			return struct{}{}, f.changeErr("rename "+f.abs(tmpRel)+" to", rel, err)
		}
		return struct{}{}, nil
	})
	return err
}

// rootErr is a failure to open the root, which must not read as a missing
// file (fs.ErrNotExist) to callers that take that for "nothing written yet".
type rootErr struct{ error }

func (e rootErr) Is(target error) bool {
	return target != fs.ErrNotExist && errors.Is(e.error, target)
}

// splitOwnFile checks that rel is "<.dir>/<name>".
func splitOwnFile(rel string) (string, string, error) {
	parts, err := splitRel(rel)
	if err != nil {
		return "", "", err
	}
	if len(parts) != 2 || !strings.HasPrefix(parts[0], ".") {
		return "", "", fmt.Errorf("the provisioner's own files live directly in a directory at the root whose name starts with \".\": %w", ErrInvalidPath)
	}
	return parts[0], parts[1], nil
}

// openOwnDir opens the directory dir at the root, creating it if create is
// set.
func (f *FS) openOwnDir(dir string, create bool) (int, error) {
	rootfd, err := f.openRoot()
	if err != nil {
		return -1, rootErr{err}
	}
	defer unix.Close(rootfd)
	fd, err := openat(rootfd, dir, pathFlags)
	if errors.Is(err, unix.ENOENT) && create {
		merr := ignoringEINTR(func() error { return unix.Mkdirat(rootfd, dir, 0o700) })
		if merr != nil && !errors.Is(merr, unix.EEXIST) {
			return -1, f.changeErr("create", dir, merr)
		}
		fd, err = openat(rootfd, dir, pathFlags)
	}
	if err != nil {
		return -1, f.openErr(rootfd, dir, dir, err)
	}
	return fd, nil
}

// openOwnFile opens name in dir with flags, never following a symbolic link
// and never blocking on a FIFO, and checks that it is a regular file.
func (f *FS) openOwnFile(dir, name string, flags int, create bool) (int, error) {
	dirfd, err := f.openOwnDir(dir, create)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dirfd)
	rel := dir + "/" + name
	var fd int
	err = ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		return err
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("%s does not exist: %w", f.abs(rel), fs.ErrNotExist)
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("%s is a symbolic link, refusing to follow it; inspect and remove it: %w", f.abs(rel), ErrSymlink)
	case err != nil:
		return -1, f.changeErr("open", rel, err)
	}
	st, err := fstat(fd)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat %s: %w", f.abs(rel), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is %s, not a regular file; move it aside, then retry", f.abs(rel), kind(st.Mode))
	}
	return fd, nil
}

// writeAndClose writes data to fd, flushes it and closes fd; NFS reports
// delayed write errors on fsync and close.
func (f *FS) writeAndClose(fd int, rel string, data []byte) error {
	for len(data) > 0 {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Write(fd, data)
			return err
		})
		if err != nil {
			unix.Close(fd)
			return f.changeErr("write", rel, err)
		}
		data = data[n:]
	}
	if err := ignoringEINTR(func() error { return unix.Fsync(fd) }); err != nil {
		unix.Close(fd)
		return f.changeErr("flush", rel, err)
	}
	// close is never retried: the descriptor is gone whatever it returns.
	// EINTR (a signal, as Go's preemption sends, during FUSE's or NFS's
	// flush on close) comes after the fsync above succeeded, so the data is
	// already written.
	if err := unix.Close(fd); err != nil && !errors.Is(err, unix.EINTR) {
		return f.changeErr("close", rel, err)
	}
	return nil
}
