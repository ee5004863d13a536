package exportfs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An entry whose unlink fails with EBUSY, which the Linux NFS client returns
// for a ".nfsXXXX" file (a file deleted while still open: "silly rename"), is
// retried busyRetries times, after pauses of busyPause, 4×busyPause, ...
const (
	busyRetries = 3
	busyPause   = 50 * time.Millisecond
)

// maxNotEmpty bounds how often RemoveAll finds a directory it emptied not
// empty after all, because entries keep appearing.
const maxNotEmpty = 100

// RemoveAll deletes the directory rel and everything below it. Entries below
// rel are unlinked, never followed, whatever they are: a symbolic link inside
// the tree pointing elsewhere removes the link only. A missing rel (or
// missing parent) is not an error. rel itself, and every directory on the way
// to it, must be a real directory: a symbolic link is refused with ErrSymlink
// and anything else with ErrNotDirectory. The export root cannot be removed
// (rel == "" is ErrInvalidPath).
//
// RemoveAll holds at most four file descriptors at any depth: it climbs
// back up a tree through "..", checking the device and inode of each parent
// against the ones recorded on the way down, and fails if a directory was
// moved meanwhile.
func (f *FS) RemoveAll(ctx context.Context, rel string) error {
	parts, err := splitRel(rel)
	if err != nil {
		return fmt.Errorf("remove %s: %w", f.describe(rel), err)
	}
	_, err = run(ctx, f, "remove "+f.abs(rel), func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f.removeAll(ctx, parts)
	})
	return err
}

func (f *FS) removeAll(ctx context.Context, parts []string) error {
	rootfd, err := f.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)
	parentfd, err := f.walk(ctx, rootfd, parts[:len(parts)-1], pathFlags)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(parentfd)
	r := remover{f: f, ctx: ctx, parentfd: parentfd, name: parts[len(parts)-1], rel: strings.Join(parts, "/")}
	return r.run()
}

// frame is one directory on the way down from the removed directory.
type frame struct {
	name     string
	dev, ino uint64
}

// remover removes one tree. It works on one directory descriptor at a time
// (cur), keeping a stack of names and identities rather than descriptors.
type remover struct {
	f        *FS
	ctx      context.Context
	parentfd int    // parent of the removed directory
	name     string // name of the removed directory in parentfd
	rel      string // path of the removed directory below the root

	stack    []frame // stack[0] is the removed directory, the last is cur
	busy     error   // first entry that stayed busy
	notEmpty int
	buf      []byte
	names    []string
}

func (r *remover) path(name string) string {
	var b strings.Builder
	b.WriteString(r.rel)
	for _, fr := range r.stack[1:] {
		b.WriteString("/")
		b.WriteString(fr.name)
	}
	if name != "" {
		b.WriteString("/")
		b.WriteString(name)
	}
	return b.String()
}

func (r *remover) run() error {
	cur, err := r.open(r.parentfd, r.name, r.rel)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() {
		if cur >= 0 {
			unix.Close(cur)
		}
	}()
	r.buf = make([]byte, 16<<10)

	for {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		child, err := r.clear(cur)
		if err != nil {
			return err
		}
		if child != "" {
			next, err := r.open(cur, child, r.path(child))
			if errors.Is(err, unix.ENOENT) || errors.Is(err, ErrSymlink) || errors.Is(err, ErrNotDirectory) ||
				errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				// Replaced since clear saw it; the next pass unlinks
				// whatever it is now.
				continue
			}
			if err != nil {
				return err
			}
			unix.Close(cur)
			cur = next
			continue
		}

		// cur looks empty: remove it from its parent.
		top := r.stack[len(r.stack)-1]
		if len(r.stack) == 1 {
			unix.Close(cur)
			cur = -1
			err := ignoringEINTR(func() error { return unix.Unlinkat(r.parentfd, r.name, unix.AT_REMOVEDIR) })
			if err == nil || errors.Is(err, unix.ENOENT) {
				return nil
			}
			if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
				return r.f.changeErr("remove", r.rel, err)
			}
			if err := r.again(err); err != nil {
				return err
			}
			r.stack = r.stack[:0]
			if cur, err = r.open(r.parentfd, r.name, r.rel); err != nil {
				if errors.Is(err, unix.ENOENT) {
					return nil
				}
				return err
			}
			continue
		}
		up, err := openat(cur, "..", readFlags)
		if err != nil {
			return fmt.Errorf("open the parent of %s: %w", r.f.abs(r.path("")), err)
		}
		st, err := fstat(up)
		parent := r.stack[len(r.stack)-2]
		if err != nil || st.Dev != parent.dev || st.Ino != parent.ino {
			unix.Close(up)
			return fmt.Errorf("%s was moved while it was being removed; check who is changing the tree, then retry", r.f.abs(r.path("")))
		}
		unix.Close(cur)
		cur = up
		r.stack = r.stack[:len(r.stack)-1]
		err = ignoringEINTR(func() error { return unix.Unlinkat(cur, top.name, unix.AT_REMOVEDIR) })
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
		case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
			// Entries appeared (or stayed busy); the next pass of the
			// parent finds the directory again.
			if err := r.again(err); err != nil {
				return err
			}
		default:
			return r.f.changeErr("remove", r.path(top.name), err)
		}
	}
}

// again accounts for a directory that turned out not to be empty.
func (r *remover) again(err error) error {
	if r.busy != nil {
		return r.busy
	}
	r.notEmpty++
	if r.notEmpty > maxNotEmpty {
		return fmt.Errorf("%s: entries keep appearing while it is being removed; stop whatever writes to it, then retry: %w", r.f.abs(r.rel), err)
	}
	return nil
}

// open opens the directory name in dirfd for reading, never following a
// symbolic link, and pushes it on the stack.
func (r *remover) open(dirfd int, name, rel string) (int, error) {
	fd, err := r.f.openDir(dirfd, name, rel, readFlags)
	if err != nil {
		return -1, err
	}
	st, err := fstat(fd)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat %s: %w", r.f.abs(rel), err)
	}
	r.stack = append(r.stack, frame{name: name, dev: st.Dev, ino: st.Ino})
	return fd, nil
}

// clear unlinks every entry of the directory fd that is not a directory and
// returns the name of the first subdirectory found, or "" once it has read
// the directory to its end without finding one.
func (r *remover) clear(fd int) (string, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return "", fmt.Errorf("read %s: %w", r.f.abs(r.path("")), err)
	}
	for {
		if err := r.ctx.Err(); err != nil {
			return "", err
		}
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.ReadDirent(fd, r.buf)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("read %s: %w", r.f.abs(r.path("")), err)
		}
		if n <= 0 {
			return "", nil
		}
		_, _, r.names = unix.ParseDirent(r.buf[:n], -1, r.names[:0])
		for _, name := range r.names {
			err := r.unlink(fd, name)
			switch {
			case err == nil, errors.Is(err, unix.ENOENT):
			case errors.Is(err, unix.EISDIR):
				return name, nil
			default:
				return "", err
			}
		}
	}
}

// unlink removes the non-directory name in fd, retrying while it is busy. A
// busy entry is recorded in r.busy and skipped; once one is recorded, busy
// entries are no longer retried, as the removal fails anyway.
func (r *remover) unlink(fd int, name string) error {
	for i := 0; ; i++ {
		err := ignoringEINTR(func() error { return unix.Unlinkat(fd, name, 0) })
		if !errors.Is(err, unix.EBUSY) {
			if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EISDIR) {
				return r.f.changeErr("remove", r.path(name), err)
			}
			return err
		}
		if i == busyRetries || r.busy != nil {
			if r.busy == nil {
				hint := "it is in use; stop whatever uses it, then retry"
				if strings.HasPrefix(name, ".nfs") {
					hint = "it is an NFS silly-rename file, kept while a process still has the deleted file open; stop the pods using the volume, then retry"
				}
				r.busy = fmt.Errorf("remove %s: %s: %w", r.f.abs(r.path(name)), hint, err)
			}
			return nil
		}
		select {
		case <-time.After(busyPause << (2 * i)):
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}
