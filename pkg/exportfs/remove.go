package exportfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// maxNotEmpty bounds how often RemoveAll finds one directory it emptied not
// empty after all, because entries keep appearing.
const maxNotEmpty = 100

// maxLevels bounds how many directories below the removed one RemoveAll
// holds open at once. A directory found deeper is moved up instead: renamed
// to a fresh name (hoistPrefix and random hex) in the removed directory, and
// removed from there later. Any depth thus costs the same per entry, in
// constant memory.
const maxLevels = 8

// direntBufSize is the getdents buffer of each open directory.
const direntBufSize = 8 << 10

// hoistPrefix starts the names of the directories RemoveAll moved up.
const hoistPrefix = ".deleting-"

// maxShownPath bounds the bytes of a path below the removed directory that
// an error message shows; longer ones keep their start and end.
const maxShownPath = 240

// RemoveAll deletes the directory rel and everything below it. Entries below
// rel are unlinked, never followed, whatever they are: a symbolic link inside
// the tree pointing elsewhere removes the link only. A missing rel (or
// missing parent) is not an error. rel itself, and every directory on the way
// to it, must be a real directory: a symbolic link is refused with ErrSymlink
// and anything else with ErrNotDirectory. The export root cannot be removed
// (rel == "" is ErrInvalidPath).
//
// RemoveAll does not cross into another filesystem, or a bind mount, mounted
// below rel: it leaves such a mount point alone, removes everything else and
// fails naming it. So it does with a file that stays busy.
//
// RemoveAll works only in directories it opened itself, one name at a time
// from rel down, and never climbs back through "..": renaming or moving
// directories inside rel while it runs cannot lead it out of rel. It holds
// at most maxLevels+3 descriptors and constant memory, and costs a few system
// calls per entry whatever the depth or width of the tree.
//
// A removal may take longer than the FS timeout: that bounds each of its
// system calls (no progress for that long means the export hangs), and ctx
// alone bounds the whole removal. What a stopped removal removed stays
// removed, so calling RemoveAll again goes on from there. At most
// maxRemovals removals of one FS run at once; the others wait within ctx.
func (f *FS) RemoveAll(ctx context.Context, rel string) error {
	parts, err := splitRel(rel)
	if err != nil {
		return fmt.Errorf("remove %s: %w", f.describe(rel), err)
	}
	p := new(progress)
	_, err = runOp(ctx, f, "remove "+f.abs(rel), f.removals, p, nil, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f.removeAll(ctx, parts, p)
	})
	return err
}

func (f *FS) removeAll(ctx context.Context, parts []string, p *progress) error {
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
	r := &remover{f: f, ctx: ctx, p: p, parentfd: parentfd, name: parts[len(parts)-1], rel: strings.Join(parts, "/")}
	for i := range r.levels {
		r.levels[i].fd = -1
	}
	defer r.closeAll()
	return r.run()
}

// level is one open directory: the removed one (levels[0]) or one below.
type level struct {
	fd       int // -1 when closed
	buf      []byte
	off, end int    // buf[off:end] holds the entries read but not handled yet
	name     []byte // NUL-terminated name in the parent level's buf
	notEmpty int    // times it was found not empty after being read to its end
}

// remover removes one tree, depth first, reading each directory once from
// start to end (and again only if entries appeared meanwhile).
type remover struct {
	f        *FS
	ctx      context.Context
	p        *progress
	parentfd int    // parent of the removed directory
	name     string // name of the removed directory in parentfd
	rel      string // path of the removed directory below the root

	fs      fsID
	levels  [maxLevels + 1]level
	depth   int   // levels[:depth+1] are open
	hoisted int   // directories moved up since levels[0] was last read from its start
	kept    error // the first entry left in place: a mount point or busy file

	st    unix.Statx_t
	empty [1]byte                         // "" for statx
	fresh [len(hoistPrefix) + 16 + 1]byte // next name to hoist to
	rnd   [8]byte
}

func (r *remover) run() error {
	fd, err := r.f.openDir(r.parentfd, r.name, r.rel, readFlags)
	r.step()
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	r.levels[0] = level{fd: fd, buf: make([]byte, direntBufSize)}
	if r.fs, err = statFS(fd, &r.st, &r.empty[0]); err != nil {
		return fmt.Errorf("stat %s: %w", r.f.abs(r.rel), err)
	}
	parent, err := statFS(r.parentfd, &r.st, &r.empty[0])
	if err != nil {
		return fmt.Errorf("stat the parent of %s: %w", r.f.abs(r.rel), err)
	}
	if parent != r.fs {
		return fmt.Errorf("%s is a mount point (another filesystem or a bind mount is mounted there); unmount it, then retry", r.f.abs(r.rel))
	}
	copy(r.fresh[:], hoistPrefix)

	for {
		if err := r.ctx.Err(); err != nil {
			return r.p.stopped(err)
		}
		lv := &r.levels[r.depth]
		if lv.off >= lv.end {
			n, err := getdents(lv.fd, lv.buf)
			r.step()
			if err != nil {
				return fmt.Errorf("read %s: %w", r.where(nil), err)
			}
			lv.off, lv.end = 0, n
			if n == 0 {
				gone, err := r.finish()
				if gone || err != nil {
					return err
				}
				continue
			}
		}
		name, typ, next, ok := nextDirent(lv.buf, lv.off, lv.end)
		lv.off = next
		if ok {
			if err := r.handle(lv, name, typ); err != nil {
				return err
			}
		}
	}
}

func (r *remover) step() {
	r.p.step()
	if r.f.onStep != nil {
		r.f.onStep()
	}
}

func (r *remover) closeAll() {
	for i := r.depth; i >= 0; i-- {
		if r.levels[i].fd >= 0 {
			unix.Close(r.levels[i].fd)
			r.levels[i].fd = -1
		}
	}
}

// handle removes the entry name of the directory lv, or descends into it.
func (r *remover) handle(lv *level, name []byte, typ uint8) error {
	if typ != unix.DT_DIR {
		if err := r.unlink(lv, name); !errors.Is(err, unix.EISDIR) {
			return err
		}
	}
	if r.depth == maxLevels {
		return r.hoist(lv, name)
	}
	return r.descend(lv, name)
}

// unlink removes the non-directory name in lv, retrying while it is busy. A
// busy entry is recorded in r.kept and skipped; once one is recorded, busy
// entries are no longer retried, as the removal fails anyway. It returns
// EISDIR for a directory.
func (r *remover) unlink(lv *level, name []byte) error {
	for i := 0; ; i++ {
		err := unlinkatName(lv.fd, name, 0)
		r.step()
		switch {
		case err == nil:
			r.p.done.Add(1)
			return nil
		case errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EISDIR):
			return err
		case !errors.Is(err, unix.EBUSY):
			return r.f.changeErr("remove", r.relOf(name), err)
		}
		if i == busyRetries || r.kept != nil {
			if r.kept == nil {
				hint := "it is in use or a mount point; stop whatever uses it or unmount it, then retry"
				if strings.HasPrefix(string(name), ".nfs") {
					hint = "it is an NFS silly-rename file, kept while a process still has the deleted file open; stop the pods using the volume, then retry"
				}
				r.kept = fmt.Errorf("remove %s: %s: %w", r.where(name), hint, err)
			}
			return nil
		}
		select {
		case <-time.After(busyPause << (2 * i)):
			r.step()
		case <-r.ctx.Done():
			return r.p.stopped(r.ctx.Err())
		}
	}
}

// descend opens the directory name in lv as the next level.
func (r *remover) descend(lv *level, name []byte) error {
	fd, err := openatName(lv.fd, name, readFlags)
	r.step()
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		// Replaced by a file or link since it was read: remove that. If it
		// is a directory again, lv's next read finds it.
		if err := r.unlink(lv, name); !errors.Is(err, unix.EISDIR) {
			return err
		}
		return nil
	default:
		return r.f.changeErr("open", r.relOf(name), err)
	}
	id, err := statFS(fd, &r.st, &r.empty[0])
	if err == nil && id != r.fs {
		unix.Close(fd)
		r.keepMount(name)
		return nil
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("stat %s: %w", r.where(name), err)
	}
	r.depth++
	next := &r.levels[r.depth]
	if next.buf == nil {
		next.buf = make([]byte, direntBufSize)
	}
	next.fd, next.off, next.end, next.name, next.notEmpty = fd, 0, 0, name, 0
	return nil
}

// hoist moves the directory name in lv, at the deepest level, up into the
// removed directory under a fresh name.
func (r *remover) hoist(lv *level, name []byte) error {
	for range 3 {
		_, _ = rand.Read(r.rnd[:]) // never fails on Linux
		hex.Encode(r.fresh[len(hoistPrefix):], r.rnd[:])
		err := renameatName(lv.fd, name, r.levels[0].fd, r.fresh[:])
		r.step()
		switch {
		case err == nil:
			r.hoisted++
			return nil
		case errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EISDIR):
			// The fresh name is taken after all: draw another.
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EXDEV):
			r.keepMount(name)
			return nil
		default:
			return r.f.changeErr("move up", r.relOf(name), err)
		}
	}
	return fmt.Errorf("move up %s: every fresh name tried in %s was taken; check who creates %s* entries there, then retry", r.where(name), r.f.abs(r.rel), hoistPrefix)
}

// finish handles the end of the current directory: it removes the directory
// and returns to its parent, or reads it again if entries appeared. gone
// reports that the removed directory itself is done with (err says how).
func (r *remover) finish() (gone bool, err error) {
	lv := &r.levels[r.depth]
	if r.depth == 0 && r.hoisted > 0 {
		// Directories moved up may sit where this pass had already read.
		r.hoisted = 0
		return false, r.rewind(lv)
	}
	if r.depth == 0 {
		err = ignoringEINTR(func() error { return unix.Unlinkat(r.parentfd, r.name, unix.AT_REMOVEDIR) })
	} else {
		err = unlinkatName(r.levels[r.depth-1].fd, lv.name, unix.AT_REMOVEDIR)
	}
	r.step()
	switch {
	case err == nil:
		r.p.done.Add(1)
		if r.depth == 0 {
			return true, nil
		}
	case r.depth == 0 && errors.Is(err, unix.ENOENT):
		return true, nil
	case errors.Is(err, unix.ENOENT):
		// Renamed meanwhile: wherever it went below the removed directory,
		// the parent's next read finds it.
	case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
		if r.kept != nil {
			// It holds what was kept (or what appeared since): leave it, the
			// removal fails anyway.
			break
		}
		lv.notEmpty++
		if lv.notEmpty > maxNotEmpty {
			return true, fmt.Errorf("%s: entries keep appearing while it is being removed; stop whatever writes to it, then retry: %w", r.where(nil), err)
		}
		return false, r.rewind(lv)
	default:
		if r.depth == 0 {
			return true, r.f.changeErr("remove", r.rel, err)
		}
		return true, r.f.changeErr("remove", r.relOf(nil), err)
	}
	if r.depth == 0 {
		return true, r.kept
	}
	unix.Close(lv.fd)
	lv.fd = -1
	r.depth--
	return false, nil
}

// rewind makes the next read of lv start from its first entry.
func (r *remover) rewind(lv *level) error {
	_, err := unix.Seek(lv.fd, 0, io.SeekStart)
	r.step()
	if err != nil {
		return fmt.Errorf("read %s again: %w", r.where(nil), err)
	}
	lv.off, lv.end = 0, 0
	return nil
}

func (r *remover) keepMount(name []byte) {
	if r.kept == nil {
		r.kept = fmt.Errorf("%s is a mount point (another filesystem or a bind mount is mounted there); it was left alone, unmount it, then retry", r.where(name))
	}
}

// relOf returns the path below the root of the entry name of the current
// directory (of the current directory for a nil name), as shown in messages.
func (r *remover) relOf(name []byte) string {
	var b []byte
	for _, lv := range r.levels[1 : r.depth+1] {
		b = append(append(b, lv.name[:len(lv.name)-1]...), '/')
	}
	if name != nil {
		b = append(b, name[:len(name)-1]...)
	} else if len(b) > 0 {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return r.rel
	}
	return r.rel + "/" + shownPath(b)
}

// where is relOf as an absolute path.
func (r *remover) where(name []byte) string { return r.f.abs(r.relOf(name)) }

// shownPath makes a tenant's path printable: it keeps the start and the end
// of a long one and escapes what is not printable UTF-8, as %q does.
func shownPath(b []byte) string {
	if len(b) > maxShownPath {
		const head = maxShownPath / 3
		b = append(append(append([]byte(nil), b[:head]...), "..."...), b[len(b)-(maxShownPath-head):]...)
	}
	q := strconv.Quote(string(b))
	return q[1 : len(q)-1]
}
