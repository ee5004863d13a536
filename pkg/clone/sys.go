package clone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Open flags. Every directory is opened with O_NOFOLLOW|O_DIRECTORY, so a
// symbolic link in its place fails (ELOOP or ENOTDIR) and is never
// followed; regular files also with O_NONBLOCK, so a FIFO or device swapped
// in after the lstat can't block the open, and fstat then tells what was
// opened before a byte is read.
const (
	dirFlags   = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	pathFlags  = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	readFlags  = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	writeFlags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// ignoringEINTR retries fn while it fails with EINTR, which interruptible
// NFS mounts can return.
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	fd := -1
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags, mode)
		return err
	})
	return fd, err
}

func lstatat(dirfd int, name string, st *unix.Stat_t) error {
	return ignoringEINTR(func() error { return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
}

func fstat(fd int, st *unix.Stat_t) error {
	return ignoringEINTR(func() error { return unix.Fstat(fd, st) })
}

// futimens sets the times of the open file fd (utimensat with a NULL path).
func futimens(fd int, ts *[2]unix.Timespec) error {
	return ignoringEINTR(func() error {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	})
}

// times returns the access and modification times of st, for utimensat.
func times(st *unix.Stat_t) [2]unix.Timespec {
	return [2]unix.Timespec{st.Atim, st.Mtim}
}

// dirent is one entry of a getdents buffer.
type dirent struct {
	name string
	// off is the directory offset just after this entry: seeking the
	// directory there resumes the listing after it.
	off int64
}

// nextDirent returns the entry of buf[off:end] at off, skipping "." and
// "..", and the offset of the entry after it; ok is false once the buffer
// is used up.
func nextDirent(buf []byte, off, end int) (d dirent, next int, ok bool) {
	// struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type,
	// char d_name[].
	const nameOff = 19
	for off+nameOff < end {
		reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
		if reclen <= nameOff || off+reclen > end {
			return dirent{}, end, false
		}
		doff := int64(binary.NativeEndian.Uint64(buf[off+8:]))
		rec := buf[off+nameOff : off+reclen]
		off += reclen
		n := bytes.IndexByte(rec, 0)
		if n < 0 {
			continue
		}
		if n == 1 && rec[0] == '.' || n == 2 && rec[0] == '.' && rec[1] == '.' {
			continue
		}
		return dirent{name: string(rec[:n]), off: doff}, off, true
	}
	return dirent{}, end, false
}

func getdents(fd int, buf []byte) (int, error) {
	var n int
	err := ignoringEINTR(func() (err error) {
		n, err = unix.Getdents(fd, buf)
		return err
	})
	return n, err
}

// isEmpty reports whether the directory fd, read from its start, has no
// entries besides "." and "..".
func isEmpty(fd int, buf []byte) (bool, error) {
	for {
		n, err := getdents(fd, buf)
		if err != nil || n == 0 {
			return err == nil, err
		}
		if _, _, ok := nextDirent(buf, 0, n); ok {
			return false, nil
		}
	}
}

// devIno identifies a file.
type devIno struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) devIno { return devIno{uint64(st.Dev), st.Ino} }
