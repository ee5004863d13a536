package exportfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// Rename renames the directory rel to newName in the same parent directory,
// never replacing an existing entry: if newName exists, the error wraps
// fs.ErrExist; if rel does not exist, it wraps fs.ErrNotExist. rel must be a
// directory: a symbolic link is refused with ErrSymlink and anything else
// with ErrNotDirectory. newName is a single path segment.
//
// Rename uses renameat2(RENAME_NOREPLACE). Where the filesystem does not
// support it (NFS usually does not: EINVAL), Rename checks that newName does
// not exist and then renames: an entry created at newName by someone else in
// between can then be replaced if it is an empty directory (a non-empty
// directory or another file makes the rename fail with an error wrapping
// fs.ErrExist or ErrNotDirectory).
func (f *FS) Rename(ctx context.Context, rel, newName string) error {
	parts, err := splitRel(rel)
	if err != nil {
		return fmt.Errorf("rename %s: %w", f.describe(rel), err)
	}
	if err := checkName(newName); err != nil {
		return fmt.Errorf("rename %s to %q: %w", f.abs(rel), newName, err)
	}
	parent := strings.Join(parts[:len(parts)-1], "/")
	newRel := newName
	if parent != "" {
		newRel = parent + "/" + newName
	}
	what := fmt.Sprintf("rename %s to %s", f.abs(rel), newName)
	_, err = run(ctx, f, what, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f.rename(ctx, parts, newRel)
	})
	return err
}

func (f *FS) rename(ctx context.Context, parts []string, newRel string) error {
	oldName := parts[len(parts)-1]
	newName := newRel[strings.LastIndexByte(newRel, '/')+1:]
	oldRel := strings.Join(parts, "/")

	rootfd, err := f.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)
	dirfd, err := f.walk(ctx, rootfd, parts[:len(parts)-1], pathFlags)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)

	st, err := lstatat(dirfd, oldName)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s does not exist: %w", f.abs(oldRel), err)
		}
		return fmt.Errorf("stat %s: %w", f.abs(oldRel), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return f.typeErr(oldRel, st.Mode, unix.ENOTDIR)
	}
	if oldName == newName {
		return fmt.Errorf("%s already exists: %w", f.abs(newRel), fs.ErrExist)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	err = ignoringEINTR(func() error { return unix.Renameat2(dirfd, oldName, dirfd, newName, unix.RENAME_NOREPLACE) })
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		err = checkThenRename(dirfd, oldName, newName)
	}
	return f.renameErr(oldRel, newRel, err)
}

// checkThenRename renames oldName to newName in dirfd unless newName exists,
// for filesystems without RENAME_NOREPLACE. It is not atomic: an entry
// created at newName between the check and the rename can be replaced if it
// is an empty directory.
func checkThenRename(dirfd int, oldName, newName string) error {
	_, err := lstatat(dirfd, newName)
	if err == nil {
		return unix.EEXIST
	}
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	return ignoringEINTR(func() error { return unix.Renameat(dirfd, oldName, dirfd, newName) })
}

func (f *FS) renameErr(oldRel, newRel string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTEMPTY):
		return fmt.Errorf("%s already exists; it was left alone, move it aside or pick another name: %w", f.abs(newRel), fs.ErrExist)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s already exists and is not a directory; it was left alone: %w (%w)", f.abs(newRel), fs.ErrExist, ErrNotDirectory)
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s does not exist: %w", f.abs(oldRel), err)
	default:
		return f.changeErr("rename", oldRel, err)
	}
}
