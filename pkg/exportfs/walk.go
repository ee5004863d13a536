package exportfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Open flags. Directories on the way are opened with O_PATH: that needs only
// search permission, like a path lookup, and O_PATH descriptors are enough
// for the *at system calls. Directories that are read or changed through
// their descriptor (getdents, fchmod, fchown) are opened O_RDONLY. Both
// refuse a symbolic link: with O_DIRECTORY|O_NOFOLLOW Linux fails with
// ENOTDIR (or ELOOP), and the link is never followed.
const (
	pathFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	readFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
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

func openat(dirfd int, name string, flags int) (int, error) {
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags, 0)
		return err
	})
	if err != nil {
		return -1, err
	}
	return fd, nil
}

func lstatat(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := ignoringEINTR(func() error {
		return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st, err
}

func fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := ignoringEINTR(func() error { return unix.Fstat(fd, &st) })
	return st, err
}

// openRoot opens the root directory. The root is configured by the operator
// and trusted, so symbolic links in it are followed.
func (f *FS) openRoot() (int, error) {
	fd, err := openat(unix.AT_FDCWD, f.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("export root %s does not exist; check that the NFS export is mounted there: %w", f.root, err)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("export root %s is not a directory; check --export-dir and the mount: %w", f.root, ErrNotDirectory)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return -1, fmt.Errorf("export root %s: permission denied; check the mount and the process user: %w", f.root, err)
	default:
		return -1, fmt.Errorf("open export root %s: %w", f.root, err)
	}
}

// walk opens the directory parts[0]/.../parts[n-1] below dirfd one component
// at a time, never following a symbolic link, and returns a descriptor of the
// last one opened with flags (an empty parts opens dirfd's directory again).
// dirfd stays open; descriptors on the way are closed as it goes.
func (f *FS) walk(ctx context.Context, dirfd int, parts []string, flags int) (int, error) {
	if len(parts) == 0 {
		return openat(dirfd, ".", flags)
	}
	cur := dirfd
	for i, name := range parts {
		fl := pathFlags
		if i == len(parts)-1 {
			fl = flags
		}
		next, err := -1, ctx.Err()
		if err == nil {
			next, err = f.openDir(cur, name, strings.Join(parts[:i+1], "/"), fl)
		}
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

// openDir opens the directory name in dirfd without following a symbolic
// link; rel is its path relative to the root, for messages.
func (f *FS) openDir(dirfd int, name, rel string, flags int) (int, error) {
	fd, err := openat(dirfd, name, flags)
	if err != nil {
		return -1, f.openErr(dirfd, name, rel, err)
	}
	return fd, nil
}

// openErr turns the error of opening name in dirfd as a directory into an
// error for the operator, telling a symbolic link from another file.
func (f *FS) openErr(dirfd int, name, rel string, err error) error {
	abs := f.abs(rel)
	switch {
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		st, serr := lstatat(dirfd, name)
		if serr != nil {
			return fmt.Errorf("%s changed while it was being opened; retry: %w", abs, err)
		}
		return f.typeErr(rel, st.Mode, err)
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s does not exist: %w", abs, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%s: permission denied; check the owner and mode of the directories on the way and whether the export squashes root: %w", abs, err)
	default:
		return fmt.Errorf("open %s: %w", abs, err)
	}
}

// typeErr reports that rel, of the given st_mode, is not the directory we
// expected. cause is returned when rel turns out to be a directory after all
// (it was replaced concurrently).
func (f *FS) typeErr(rel string, mode uint32, cause error) error {
	abs := f.abs(rel)
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return fmt.Errorf("%s is a symbolic link, refusing to follow it (a user with write access to the export may have planted it); inspect and remove the link, then retry: %w", abs, ErrSymlink)
	case unix.S_IFDIR:
		return fmt.Errorf("%s changed while it was being opened; retry: %w", abs, cause)
	default:
		return fmt.Errorf("%s is %s, not a directory; move it aside, then retry: %w", abs, kind(mode), ErrNotDirectory)
	}
}

func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	default:
		return "a special file"
	}
}

// unixMode converts the permission, setuid, setgid and sticky bits of m to
// st_mode bits and rejects any other bit but os.ModeDir.
func unixMode(m os.FileMode) (uint32, error) {
	const allowed = os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky | os.ModeDir
	if m&^allowed != 0 {
		return 0, fmt.Errorf("mode %v has bits other than permission, setuid, setgid and sticky", m)
	}
	mode := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return mode, nil
}
