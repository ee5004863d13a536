package framework

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A size-limited filesystem of its own per export, so that free space,
// "full" and "read-only" are the export's and nobody else's: a tmpfs mounted
// with size=. Mounting needs root (CAP_SYS_ADMIN).

// tmpfsUnmountWait bounds the retries of a plain unmount that finds the
// filesystem busy before the lazy (MNT_DETACH) one.
const tmpfsUnmountWait = 5 * time.Second

// MountTmpfs mounts a tmpfs of size bytes (a multiple of the page size, e.g.
// 32<<20) on dir, creating dir if needed, and unmounts it in tb.Cleanup
// whatever the outcome of the test. Call it before starting anything that
// uses dir (nfs-ganesha, the provisioner): cleanups run last-in first-out, so
// theirs stop them before the unmount. A still busy filesystem is detached
// (MNT_DETACH) rather than left mounted. It skips the test when mounting is
// not permitted (not root, or no CAP_SYS_ADMIN in a container), fails it
// when RequireControlPlaneEnv is set.
func MountTmpfs(tb testing.TB, dir string, size int64) {
	tb.Helper()
	if size <= 0 {
		tb.Fatalf("tmpfs size %d: want > 0", size)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("creating mount point %s: %v", dir, err)
	}
	opts := "size=" + strconv.FormatInt(size, 10) + ",mode=0755"
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		if errors.Is(err, unix.EPERM) {
			skip := tb.Skipf
			if os.Getenv(RequireControlPlaneEnv) != "" {
				skip = tb.Fatalf
			}
			skip("mounting a tmpfs on %s: %v (needs root with CAP_SYS_ADMIN)", dir, err)
			return
		}
		tb.Fatalf("mounting a tmpfs of %d bytes on %s: %v", size, dir, err)
	}
	tb.Cleanup(func() {
		if err := UnmountTmpfs(dir); err != nil {
			tb.Errorf("%v", err)
		}
	})
}

// UnmountTmpfs unmounts dir, retrying for a few seconds while it is busy
// and then detaching it lazily (MNT_DETACH: gone from the tree at once,
// freed when the last user lets go). It is not an error when dir is no
// longer a mount point.
func UnmountTmpfs(dir string) error {
	deadline := time.Now().Add(tmpfsUnmountWait)
	for {
		err := unix.Unmount(dir, 0)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			// EINVAL: not a mount point (any more).
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(100 * time.Millisecond)
			continue
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmounting %s (busy, then detaching): %w", dir, err)
			}
			return nil
		default:
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
	}
}

// RemountReadOnly remounts the filesystem mounted on dir read-only (ro
// true) or read-write (ro false), like mount -o remount,ro. Read-only stops
// root too, unlike permission bits. The kernel refuses (EBUSY) while a file
// on it is open for writing.
func RemountReadOnly(dir string, ro bool) error {
	flags := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		return fmt.Errorf("remounting %s (read-only %v): %w", dir, ro, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if got := st.Flags&unix.ST_RDONLY != 0; got != ro {
		return fmt.Errorf("remounted %s but read-only is %v, not %v", dir, got, ro)
	}
	return nil
}

// FreeBytes is the space available to unprivileged users on the filesystem
// holding dir (statfs f_bavail × f_bsize), as df shows it.
func FreeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}
