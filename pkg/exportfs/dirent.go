package exportfs

import (
	"bytes"
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RemoveAll's system calls take names straight from the getdents buffer,
// where the kernel ends every name with a NUL byte, so that removing an entry
// allocates nothing: memory stays constant however many entries a tree has.
// Every name argument below is such a NUL-terminated slice.

// nextDirent returns the next entry of the getdents output buf[off:end]: its
// NUL-terminated name, its d_type and the offset of the entry after it.
// ok is false once the buffer is used up.
func nextDirent(buf []byte, off, end int) (name []byte, typ uint8, next int, ok bool) {
	// struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type,
	// char d_name[].
	const nameOff = 19
	for off+nameOff < end {
		reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
		if reclen <= nameOff || off+reclen > end {
			return nil, 0, end, false
		}
		rec := buf[off+nameOff : off+reclen]
		typ, off = buf[off+18], off+reclen
		n := bytes.IndexByte(rec, 0)
		if n < 0 {
			continue
		}
		name = rec[:n+1]
		if n == 1 && name[0] == '.' || n == 2 && name[0] == '.' && name[1] == '.' {
			continue
		}
		return name, typ, off, true
	}
	return nil, 0, end, false
}

// getdents reads entries of the directory fd into buf.
func getdents(fd int, buf []byte) (int, error) {
	var n int
	err := ignoringEINTR(func() (err error) {
		n, err = unix.Getdents(fd, buf)
		return err
	})
	return n, err
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func unlinkatName(dirfd int, name []byte, flags int) error {
	return ignoringEINTR(func() error {
		_, _, e := unix.Syscall(unix.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags))
		return errnoErr(e)
	})
}

func openatName(dirfd int, name []byte, flags int) (int, error) {
	var fd uintptr
	err := ignoringEINTR(func() error {
		var e unix.Errno
		fd, _, e = unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), 0, 0, 0)
		return errnoErr(e)
	})
	if err != nil {
		return -1, err
	}
	return int(fd), nil
}

// renameatName is renameat2 without flags: renameat is missing on arm64.
func renameatName(olddirfd int, oldname []byte, newdirfd int, newname []byte) error {
	return ignoringEINTR(func() error {
		_, _, e := unix.Syscall6(unix.SYS_RENAMEAT2, uintptr(olddirfd), uintptr(unsafe.Pointer(&oldname[0])),
			uintptr(newdirfd), uintptr(unsafe.Pointer(&newname[0])), 0, 0)
		return errnoErr(e)
	})
}

// fsID identifies the filesystem and mount a directory is on.
type fsID struct {
	devMajor, devMinor uint32
	mnt                uint64 // 0 where statx does not report mount ids
}

// statFS returns the fsID of the open file fd. empty must hold a NUL byte
// that outlives the call.
func statFS(fd int, st *unix.Statx_t, empty *byte) (fsID, error) {
	err := ignoringEINTR(func() error {
		_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(fd), uintptr(unsafe.Pointer(empty)),
			unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, uintptr(unsafe.Pointer(st)), 0)
		return errnoErr(e)
	})
	if err != nil {
		return fsID{}, err
	}
	id := fsID{devMajor: st.Dev_major, devMinor: st.Dev_minor}
	if st.Mask&unix.STATX_MNT_ID != 0 {
		id.mnt = st.Mnt_id
	}
	return id, nil
}
