package exportfs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"golang.org/x/sys/unix"
)

// MkdirAll creates the directory rel and any missing parents, then sets the
// mode of rel exactly (with chmod, not subject to the umask) and its owner
// and group if given. Parents are created with mode 0777 minus the umask,
// like os.MkdirAll. The leaf is created with mode 0700 and only opened up by
// the final chmod, after the chown. If rel already exists as a directory,
// its mode and owner are still applied.
//
// created reports whether MkdirAll created rel, also when a later step
// failed; after a timeout it is false, though the abandoned work may still
// have created rel. A symbolic link or non-directory anywhere on the way, rel included,
// is an error wrapping ErrSymlink or ErrNotDirectory.
func (f *FS) MkdirAll(ctx context.Context, rel string, opts DirOptions) (created bool, err error) {
	parts, err := splitRel(rel)
	if err != nil {
		return false, fmt.Errorf("create directory %s: %w", f.describe(rel), err)
	}
	what := "create directory " + f.abs(rel)
	mode, err := unixMode(opts.Mode)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	uid, err := ownerID("uid", opts.UID)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	gid, err := ownerID("gid", opts.GID)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return run(ctx, f, what, func(ctx context.Context) (bool, error) {
		return f.mkdirAll(ctx, parts, mode, uid, gid)
	})
}

// ownerID returns *id, or -1 (leave unchanged) for nil.
func ownerID(name string, id *int) (int, error) {
	if id == nil {
		return -1, nil
	}
	if *id < 0 || *id >= math.MaxUint32 {
		return 0, fmt.Errorf("%s %d is out of range", name, *id)
	}
	return *id, nil
}

func (f *FS) mkdirAll(ctx context.Context, parts []string, mode uint32, uid, gid int) (bool, error) {
	rootfd, err := f.openRoot()
	if err != nil {
		return false, err
	}
	defer unix.Close(rootfd)

	cur, created := rootfd, false
	defer func() {
		if cur != rootfd {
			unix.Close(cur)
		}
	}()
	for i, name := range parts {
		if err := ctx.Err(); err != nil {
			return created, err
		}
		leaf := i == len(parts)-1
		rel := strings.Join(parts[:i+1], "/")
		flags, perm := pathFlags, uint32(0o777)
		if leaf {
			flags, perm = readFlags, 0o700
		}
		next, err := openat(cur, name, flags)
		if errors.Is(err, unix.ENOENT) {
			merr := ignoringEINTR(func() error { return unix.Mkdirat(cur, name, perm) })
			switch {
			case merr == nil:
				created = leaf
			case errors.Is(merr, unix.EEXIST):
				// Another creator won the race, or something else is
				// there; opening it tells which.
			default:
				return created, f.changeErr("create", rel, merr)
			}
			next, err = openat(cur, name, flags)
		}
		if err != nil {
			return created, f.openErr(cur, name, rel, err)
		}
		if cur != rootfd {
			unix.Close(cur)
		}
		cur = next
	}

	// cur is the leaf, opened O_RDONLY without following a link: change it
	// through its descriptor, whatever happens to its name meanwhile.
	leaf := f.abs(strings.Join(parts, "/"))
	if uid >= 0 || gid >= 0 {
		if err := ignoringEINTR(func() error { return unix.Fchown(cur, uid, gid) }); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
				return created, fmt.Errorf("set owner of %s to uid %d, gid %d (-1: unchanged): the export refused it; if the NFS server squashes root, export with no_root_squash or do not set uid/gid: %w", leaf, uid, gid, err)
			}
			return created, fmt.Errorf("set owner of %s to uid %d, gid %d (-1: unchanged): %w", leaf, uid, gid, err)
		}
	}
	if err := ignoringEINTR(func() error { return unix.Fchmod(cur, mode) }); err != nil {
		return created, fmt.Errorf("set mode %04o on %s: %w", mode, leaf, err)
	}
	st, err := fstat(cur)
	if err != nil {
		return created, fmt.Errorf("check mode of %s: %w", leaf, err)
	}
	if got := st.Mode & 0o7777; got != mode {
		return created, fmt.Errorf("set mode %04o on %s: the export applied %04o instead; the NFS server may drop setgid/setuid bits or map owners, check its export options", mode, leaf, got)
	}
	return created, nil
}

// changeErr explains a failure to change the directory entry rel (verb
// "create", "remove", ...).
func (f *FS) changeErr(verb, rel string, err error) error {
	abs := f.abs(rel)
	switch {
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%s %s: permission denied; check the owner and mode of its parent directory and whether the export squashes root: %w", verb, abs, err)
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("%s %s: the export is mounted read-only: %w", verb, abs, err)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%s %s: the export is out of space, inodes or quota; free some or grow it: %w", verb, abs, err)
	default:
		return fmt.Errorf("%s %s: %w", verb, abs, err)
	}
}
