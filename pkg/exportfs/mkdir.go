package exportfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Existing says which directory already at the leaf MkdirAll may adopt. The
// zero value adopts none: an existing leaf is an error wrapping fs.ErrExist,
// and its mode and owner are left alone.
type Existing struct {
	// Any adopts whatever directory is there.
	Any bool
	// Ino, when not zero, adopts only the directory with this inode number
	// (the one created earlier for the same volume).
	Ino uint64
	// RefuseHolding, when set, refuses to adopt (under Any) a directory
	// holding an entry whose name starts with it: the incumbent's archives
	// (archived-*), which no record of ours knows, must not be handed to a
	// claim inside its directory. The error wraps ErrHoldsArchive.
	RefuseHolding string
	// EmptySince, when set, adopts a directory that is empty and whose
	// status changed at or after it: the one an earlier attempt created
	// just before the process stopped, before it could record its inode.
	// Empty, it holds no one's data; changed after the attempt began, it
	// isn't an older directory someone else made.
	EmptySince time.Time
}

// Made is what MkdirAll did.
type Made struct {
	// Created reports whether MkdirAll created the leaf, also when a later
	// step failed. After a timeout Made is empty, though the abandoned work
	// may still have created directories: the next MkdirAll of the same
	// path in this process reports them as its own.
	Created bool
	// Parents lists the parent directories MkdirAll created, outermost
	// first, also when a later step failed.
	Parents []string
	// Ino is the inode number of the leaf, once it was opened.
	Ino uint64
}

// MkdirAll creates the directory rel and any missing parents, then sets the
// mode of rel exactly (with chmod, not subject to the umask) and its owner
// and group if given. Parents are created with mode 0777 minus the umask,
// like os.MkdirAll. The leaf is created with mode 0700 and only opened up by
// the final chmod, after the chown. A leaf that already exists is adopted, and
// given the mode and owner, only as existing allows; otherwise nothing of it
// is changed and the error wraps fs.ErrExist.
//
// A symbolic link or non-directory anywhere on the way, rel included, is an
// error wrapping ErrSymlink or ErrNotDirectory.
func (f *FS) MkdirAll(ctx context.Context, rel string, opts DirOptions, existing Existing) (Made, error) {
	parts, err := splitRel(rel)
	if err != nil {
		return Made{}, fmt.Errorf("create directory %s: %w", f.describe(rel), err)
	}
	what := "create directory " + f.abs(rel)
	mode, err := unixMode(opts.Mode)
	if err != nil {
		return Made{}, fmt.Errorf("%s: %w", what, err)
	}
	uid, err := ownerID("uid", opts.UID)
	if err != nil {
		return Made{}, fmt.Errorf("%s: %w", what, err)
	}
	gid, err := ownerID("gid", opts.GID)
	if err != nil {
		return Made{}, fmt.Errorf("%s: %w", what, err)
	}
	key := strings.Join(parts, "/")
	if f.mkdirs.blocked(key) {
		return Made{}, fmt.Errorf("%s: an earlier attempt to create it is still blocked in the export; it may be hung or unreachable, check the NFS server and the mount: %w", what, ErrTimeout)
	}
	// Past a timeout the caller no longer hears what the call made: keep it
	// for the next attempt on the same path.
	late := lateHooks[Made]{
		abandoned: func() { f.mkdirs.abandoned(key) },
		answered:  func(made Made, _ error) { f.mkdirs.answered(key, made) },
	}
	return runOp(ctx, f, what, nil, nil, &late, func(ctx context.Context) (Made, error) {
		var made Made
		err := f.mkdirAll(ctx, parts, mode, uid, gid, existing, &made)
		return made, err
	})
}

// maxLate bounds how many abandoned creations FS remembers.
const maxLate = 1024

// creations tracks the MkdirAll calls abandoned by their caller (timed out
// or cancelled) and what they created once they returned, so that the next
// attempt on the same path waits for them and then knows the directory as
// its own instead of as someone else's.
type creations struct {
	mu      sync.Mutex
	running map[string]int // abandoned calls still blocked, by path
	late    map[string]Made
}

// blocked tells whether an abandoned MkdirAll of rel is still blocked.
func (c *creations) blocked(rel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running[rel] > 0
}

func (c *creations) abandoned(rel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add(rel, 1)
}

// add changes the count of rel; it may dip below zero for a moment, when a
// late answer comes before the caller has recorded the abandon.
func (c *creations) add(rel string, n int) {
	if c.running == nil {
		c.running = map[string]int{}
	}
	if c.running[rel] += n; c.running[rel] == 0 {
		delete(c.running, rel)
	}
}

// answered records what an abandoned MkdirAll of rel made.
func (c *creations) answered(rel string, made Made) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add(rel, -1)
	if (!made.Created && len(made.Parents) == 0) || len(c.late) >= maxLate {
		return
	}
	if c.late == nil {
		c.late = map[string]Made{}
	}
	c.late[rel] = made
}

// take returns, and forgets, what an abandoned MkdirAll of rel made, if its
// leaf had inode number ino.
func (c *creations) take(rel string, ino uint64) (Made, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	made, ok := c.late[rel]
	if !ok || !made.Created || made.Ino != ino {
		return Made{}, false
	}
	delete(c.late, rel)
	return made, true
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

func (f *FS) mkdirAll(ctx context.Context, parts []string, mode uint32, uid, gid int, existing Existing, made *Made) error {
	rootfd, err := f.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)

	cur := rootfd
	defer func() {
		if cur != rootfd {
			unix.Close(cur)
		}
	}()
	for i, name := range parts {
		if err := ctx.Err(); err != nil {
			return err
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
			case merr == nil && leaf:
				made.Created = true
				if f.afterCreate != nil {
					f.afterCreate()
				}
			case merr == nil:
				made.Parents = append(made.Parents, rel)
			case errors.Is(merr, unix.EEXIST):
				// Another creator won the race, or something else is
				// there; opening it tells which.
			default:
				return f.changeErr("create", rel, merr)
			}
			next, err = openat(cur, name, flags)
		}
		if err != nil {
			return f.openErr(cur, name, rel, err)
		}
		if cur != rootfd {
			unix.Close(cur)
		}
		cur = next
	}

	// cur is the leaf, opened O_RDONLY without following a link: check and
	// change it through its descriptor, whatever happens to its name
	// meanwhile.
	leaf := f.abs(strings.Join(parts, "/"))
	st, err := fstat(cur)
	if err != nil {
		return fmt.Errorf("stat %s: %w", leaf, err)
	}
	made.Ino = st.Ino
	if !made.Created {
		if late, ok := f.mkdirs.take(strings.Join(parts, "/"), st.Ino); ok {
			made.Created = true
			made.Parents = append(late.Parents, made.Parents...)
		}
	}
	if !made.Created && !existing.Any && (existing.Ino == 0 || existing.Ino != st.Ino) && !freshAndEmpty(cur, &st, existing.EmptySince) {
		return fmt.Errorf("%s already exists and is not the directory made for this volume; its mode, owner and contents were left alone: %w", leaf, fs.ErrExist)
	}
	// Not for the directory made for this very volume (existing.Ino): what
	// its tenant named inside it is its own.
	if !made.Created && existing.Any && existing.RefuseHolding != "" && existing.Ino != st.Ino {
		if name, ok := holding(cur, existing.RefuseHolding); ok {
			return fmt.Errorf("%s holds %q, named like an archive of a released volume, which no record says is this claim's; its mode, owner and contents were left alone: move the archive aside, or give the claim another directory: %w", leaf, shownPath([]byte(name)), ErrHoldsArchive)
		}
	}
	if uid >= 0 || gid >= 0 {
		if err := ignoringEINTR(func() error { return unix.Fchown(cur, uid, gid) }); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("set owner of %s to uid %d, gid %d (-1: unchanged): the export refused it; if the NFS server squashes root, export with no_root_squash or do not set uid/gid: %w", leaf, uid, gid, err)
			}
			return fmt.Errorf("set owner of %s to uid %d, gid %d (-1: unchanged): %w", leaf, uid, gid, err)
		}
	}
	if err := ignoringEINTR(func() error { return unix.Fchmod(cur, mode) }); err != nil {
		return fmt.Errorf("set mode %04o on %s: %w", mode, leaf, err)
	}
	st, err = fstat(cur)
	if err != nil {
		return fmt.Errorf("check mode of %s: %w", leaf, err)
	}
	if got := st.Mode & 0o7777; got != mode {
		return fmt.Errorf("set mode %04o on %s: the export applied %04o instead; the NFS server may drop setgid/setuid bits or map owners, check its export options", mode, leaf, got)
	}
	return nil
}

// holding returns the name of an entry of the open directory fd starting
// with prefix, if there is one.
func holding(fd int, prefix string) (string, bool) {
	buf := make([]byte, direntBufSize)
	for {
		n, err := getdents(fd, buf)
		if err != nil || n == 0 {
			return "", false
		}
		for off := 0; off < n; {
			name, _, next, ok := nextDirent(buf, off, n)
			if !ok {
				break
			}
			off = next
			if s := string(name[:len(name)-1]); strings.HasPrefix(s, prefix) {
				return s, true
			}
		}
	}
}

// freshAndEmpty tells whether the open directory fd, whose status is st,
// holds nothing and changed at or after since (zero: never).
func freshAndEmpty(fd int, st *unix.Stat_t, since time.Time) bool {
	if since.IsZero() || time.Unix(st.Ctim.Unix()).Before(since.Truncate(time.Second)) {
		return false
	}
	buf := make([]byte, 512)
	for {
		n, err := getdents(fd, buf)
		if err != nil {
			return false
		}
		if n == 0 {
			return true
		}
		if _, _, _, ok := nextDirent(buf, 0, n); ok {
			return false
		}
	}
}

// Rmdir removes the directory rel if it is empty. A directory that is not
// empty is left alone, with an error wrapping fs.ErrExist; a missing one is
// an error wrapping fs.ErrNotExist. A symbolic link or non-directory at rel or
// on the way is refused with ErrSymlink or ErrNotDirectory.
func (f *FS) Rmdir(ctx context.Context, rel string) error {
	parts, err := splitRel(rel)
	if err != nil {
		return fmt.Errorf("remove empty directory %s: %w", f.describe(rel), err)
	}
	_, err = run(ctx, f, "remove empty directory "+f.abs(rel), func(ctx context.Context) (struct{}, error) {
		rootfd, err := f.openRoot()
		if err != nil {
			return struct{}{}, err
		}
		defer unix.Close(rootfd)
		dirfd, err := f.walk(ctx, rootfd, parts[:len(parts)-1], pathFlags)
		if err != nil {
			return struct{}{}, err
		}
		defer unix.Close(dirfd)
		name := parts[len(parts)-1]
		st, err := lstatat(dirfd, name)
		switch {
		case errors.Is(err, unix.ENOENT):
			return struct{}{}, fmt.Errorf("%s does not exist: %w", f.abs(rel), err)
		case err != nil:
			return struct{}{}, fmt.Errorf("stat %s: %w", f.abs(rel), err)
		case st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return struct{}{}, f.typeErr(rel, st.Mode, unix.ENOTDIR)
		}
		err = ignoringEINTR(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
		switch {
		case err == nil:
			return struct{}{}, nil
		case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
			return struct{}{}, fmt.Errorf("%s is not empty; it was left alone: %w", f.abs(rel), fs.ErrExist)
		case errors.Is(err, unix.ENOENT):
			return struct{}{}, fmt.Errorf("%s does not exist: %w", f.abs(rel), err)
		}
		return struct{}{}, f.changeErr("remove", rel, err)
	})
	return err
}

// changeErr explains a failure to change the directory entry rel (verb
// "create", "remove", ...).
func (f *FS) changeErr(verb, rel string, err error) error {
	abs := f.abs(rel)
	switch {
	case (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) && verb == "open":
		return fmt.Errorf("%s %s: permission denied; check its owner and mode and whether the export squashes root (then the provisioner can't enter a directory only its owner may read): %w", verb, abs, err)
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
