package exportfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// scanWindow bounds how many directories one Scan holds open. Deeper
// directories are closed, deepest-first order kept: the scan comes back to
// one through ".." of its child, checked to be the very directory it left
// (device and inode), and goes on reading it from where it stopped.
const scanWindow = 16

// maxScans bounds how many Scans of one FS run at once, besides their slot,
// so usage scans never hold more than a few of the slots provisioning needs.
const maxScans = 2

// DefaultMaxLinks bounds how many multiply-linked files one Scan remembers
// to count once; past it, further links are counted again.
const DefaultMaxLinks = 1 << 16

// Tally is what Scan counted below a directory, the directory included, as
// du -s does: allocated bytes and inodes, each hard-linked file once.
type Tally struct {
	// Bytes is the space allocated (st_blocks × 512): sparse files count
	// what they occupy, not their length.
	Bytes  uint64
	Inodes uint64
	// Skipped counts entries not counted: another filesystem or bind mount
	// below the directory (not entered), and entries that vanished or
	// changed type while being looked at.
	Skipped uint64
	// LinksOverflow: more multiply-linked files than ScanOptions.MaxLinks;
	// the later ones may have been counted more than once.
	LinksOverflow bool
}

// ScanOptions tune one Scan.
type ScanOptions struct {
	// Wait, when set, is called before each system call and may block to
	// hold the scan to a rate; its error ends the scan.
	Wait func(ctx context.Context) error
	// MaxLinks bounds the set of multiply-linked files counted once;
	// 0 means DefaultMaxLinks.
	MaxLinks int
}

// Scan counts the space and inodes the directory rel and everything below
// it use, without following symbolic links and without entering another
// filesystem mounted below rel. Like RemoveAll it works only from
// directories it opened itself, holds at most scanWindow+2 descriptors and
// memory linear in the depth of the tree (a few dozen bytes per level), not
// in its number of entries, and costs a few system calls per entry. A tree
// that is moved about while it is scanned can't lead it out of rel: coming
// back up through "..", it checks it reached the directory it came from,
// and fails otherwise.
//
// The FS timeout bounds each system call, ctx the whole scan; at most
// maxScans scans of one FS run at once, the others wait within ctx.
func (f *FS) Scan(ctx context.Context, rel string, opts ScanOptions) (Tally, error) {
	parts, err := splitRel(rel)
	if err != nil {
		return Tally{}, fmt.Errorf("scan %s: %w", f.describe(rel), err)
	}
	if opts.MaxLinks <= 0 {
		opts.MaxLinks = DefaultMaxLinks
	}
	p := &progress{noun: "counting"}
	return runOp(ctx, f, "scan "+f.abs(rel), f.scans, p, nil, func(ctx context.Context) (Tally, error) {
		s := &scanner{f: f, ctx: ctx, p: p, opts: opts, rel: strings.Join(parts, "/"), dotdot: [3]byte{'.', '.', 0}}
		defer s.closeAll()
		return s.t, s.run(parts)
	})
}

// scanFrame is one directory being read: open (fd >= 0, with its buffer),
// or closed to keep within scanWindow, to be reopened from its child.
type scanFrame struct {
	dev, ino uint64
	fd       int
	buf      []byte
	off, end int
	// cookie is the d_off of the last entry handled: reading again from
	// there goes on with the entry after it.
	cookie int64
}

type scanner struct {
	f    *FS
	ctx  context.Context
	p    *progress
	opts ScanOptions
	rel  string

	t      Tally
	dev    uint64
	frames []scanFrame
	open   int // frames[len(frames)-open:] are open
	free   [][]byte
	links  map[[2]uint64]struct{}
	stx    unix.Statx_t
	empty  [1]byte
	dotdot [3]byte // "..", NUL-terminated
}

const statxMask = unix.STATX_TYPE | unix.STATX_INO | unix.STATX_NLINK | unix.STATX_BLOCKS

func (s *scanner) run(parts []string) error {
	rootfd, err := s.f.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(rootfd)
	if err := s.wait(); err != nil {
		return err
	}
	fd, err := s.f.walk(s.ctx, rootfd, parts, readFlags)
	s.step()
	if err != nil {
		return err
	}
	if err := s.statFD(fd); err != nil {
		unix.Close(fd)
		return fmt.Errorf("stat %s: %w", s.f.abs(s.rel), err)
	}
	s.dev = devOf(&s.stx)
	s.count()
	s.push(fd)

	for len(s.frames) > 0 {
		if err := s.ctx.Err(); err != nil {
			return s.p.stopped(err)
		}
		fr := &s.frames[len(s.frames)-1]
		if fr.off >= fr.end {
			if err := s.wait(); err != nil {
				return err
			}
			n, err := getdents(fr.fd, fr.buf)
			s.step()
			if err != nil {
				return fmt.Errorf("read %s: %w", s.where(), err)
			}
			fr.off, fr.end = 0, n
			if n == 0 {
				if err := s.pop(); err != nil {
					return err
				}
				continue
			}
		}
		name, cookie, next, ok := nextDirentCookie(fr.buf, fr.off, fr.end)
		fr.off = next
		if !ok {
			continue
		}
		fr.cookie = cookie
		if err := s.entry(fr.fd, name); err != nil {
			return err
		}
	}
	return nil
}

// entry counts the entry name of the directory dirfd, and descends into it
// if it is a directory on the same filesystem.
func (s *scanner) entry(dirfd int, name []byte) error {
	if err := s.wait(); err != nil {
		return err
	}
	err := statxName(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, &s.stx)
	s.step()
	if errors.Is(err, unix.ENOENT) {
		s.t.Skipped++
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", s.whereName(name), err)
	}
	if devOf(&s.stx) != s.dev {
		s.t.Skipped++ // a mount point: neither counted nor entered
		return nil
	}
	if s.stx.Mode&unix.S_IFMT != unix.S_IFDIR {
		if s.stx.Nlink > 1 && !s.firstLink() {
			return nil
		}
		s.count()
		return nil
	}
	ino := s.stx.Ino
	if err := s.wait(); err != nil {
		return err
	}
	fd, err := openatName(dirfd, name, readFlags)
	s.step()
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		s.t.Skipped++ // gone, or replaced by a file or a link
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", s.whereName(name), err)
	}
	if err := s.statFD(fd); err != nil {
		unix.Close(fd)
		return fmt.Errorf("stat %s: %w", s.whereName(name), err)
	}
	if s.stx.Ino != ino || devOf(&s.stx) != s.dev {
		unix.Close(fd)
		s.t.Skipped++ // replaced between the stat and the open
		return nil
	}
	s.count()
	s.push(fd)
	return nil
}

func (s *scanner) count() {
	s.t.Bytes += s.stx.Blocks * 512
	s.t.Inodes++
	s.p.done.Add(1)
}

// firstLink reports whether the multiply-linked file in s.stx is met for the
// first time.
func (s *scanner) firstLink() bool {
	if s.links == nil {
		s.links = map[[2]uint64]struct{}{}
	}
	key := [2]uint64{devOf(&s.stx), s.stx.Ino}
	if _, seen := s.links[key]; seen {
		return false
	}
	if len(s.links) >= s.opts.MaxLinks {
		s.t.LinksOverflow = true
		return true
	}
	s.links[key] = struct{}{}
	return true
}

// push makes fd, the directory just counted in s.stx, the one being read,
// closing the shallowest open one if the window is full.
func (s *scanner) push(fd int) {
	if s.open == scanWindow {
		old := &s.frames[len(s.frames)-s.open]
		unix.Close(old.fd)
		old.fd = -1
		s.free = append(s.free, old.buf)
		old.buf, old.off, old.end = nil, 0, 0
		s.open--
	}
	var buf []byte
	if n := len(s.free); n > 0 {
		buf, s.free = s.free[n-1], s.free[:n-1]
	} else {
		buf = make([]byte, direntBufSize)
	}
	s.frames = append(s.frames, scanFrame{dev: devOf(&s.stx), ino: s.stx.Ino, fd: fd, buf: buf})
	s.open++
}

// pop closes the directory read to its end; if its parent was closed, it
// reopens it through ".." and checks it is the same directory.
func (s *scanner) pop() error {
	n := len(s.frames)
	child := s.frames[n-1]
	s.frames = s.frames[:n-1]
	s.open--
	defer unix.Close(child.fd)
	if n == 1 || s.frames[n-2].fd >= 0 {
		s.free = append(s.free, child.buf)
		return nil
	}
	parent := &s.frames[n-2]
	if err := s.wait(); err != nil {
		return err
	}
	fd, err := openatName(child.fd, s.dotdot[:], readFlags)
	s.step()
	if err != nil {
		return fmt.Errorf("reopen the parent of a directory %d levels below %s: %w", n-1, s.f.abs(s.rel), err)
	}
	if err := s.statFD(fd); err != nil {
		unix.Close(fd)
		return fmt.Errorf("stat the parent of a directory %d levels below %s: %w", n-1, s.f.abs(s.rel), err)
	}
	if devOf(&s.stx) != parent.dev || s.stx.Ino != parent.ino {
		unix.Close(fd)
		return fmt.Errorf("a directory %d levels below %s was moved while it was scanned; the scan stopped rather than follow it, retry: %w", n-1, s.f.abs(s.rel), ErrChanged)
	}
	if _, err := unix.Seek(fd, parent.cookie, 0); err != nil {
		unix.Close(fd)
		return fmt.Errorf("seek in a directory %d levels below %s: %w", n-2, s.f.abs(s.rel), err)
	}
	parent.fd, parent.buf, parent.off, parent.end = fd, child.buf, 0, 0
	s.open++
	return nil
}

func (s *scanner) closeAll() {
	for i := range s.frames {
		if s.frames[i].fd >= 0 {
			unix.Close(s.frames[i].fd)
		}
	}
	s.frames = nil
}

func (s *scanner) wait() error {
	if s.opts.Wait == nil {
		return nil
	}
	err := s.opts.Wait(s.ctx)
	// Time spent held back by the rate is not the export being silent.
	s.p.last.Store(int64(time.Since(s.p.start)))
	return err
}

func (s *scanner) step() {
	s.p.step()
	if s.f.onStep != nil {
		s.f.onStep()
	}
}

func (s *scanner) statFD(fd int) error {
	return statxName(fd, s.empty[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, &s.stx)
}

// where names the directory being read, for messages: its depth, as a path
// 15,000 levels deep says nothing an operator can use.
func (s *scanner) where() string {
	return fmt.Sprintf("a directory %d levels below %s", len(s.frames)-1, s.f.abs(s.rel))
}

func (s *scanner) whereName(name []byte) string {
	n := name[:len(name)-1]
	return fmt.Sprintf("%.64q in %s", n, s.where())
}

func devOf(stx *unix.Statx_t) uint64 {
	return uint64(stx.Dev_major)<<32 | uint64(stx.Dev_minor)
}

// statxName is statx with a NUL-terminated name from a getdents buffer (or
// an empty one with AT_EMPTY_PATH), allocating nothing.
func statxName(dirfd int, name []byte, flags int, stx *unix.Statx_t) error {
	return ignoringEINTR(func() error {
		_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])),
			uintptr(flags), statxMask, uintptr(unsafe.Pointer(stx)), 0)
		return errnoErr(e)
	})
}

// nextDirentCookie is nextDirent that also returns the entry's d_off: where
// reading the directory again, after a seek, goes on after this entry.
func nextDirentCookie(buf []byte, off, end int) (name []byte, cookie int64, next int, ok bool) {
	for off < end {
		start := off
		name, _, next, ok = nextDirent(buf, off, end)
		if !ok {
			return nil, 0, next, false
		}
		// nextDirent skips "." and ".."; the entry returned ends at next
		// and starts where its own reclen says.
		rec := recordStart(buf, start, next)
		return name, int64(binary.NativeEndian.Uint64(buf[rec+8:])), next, true
	}
	return nil, 0, end, false
}

// recordStart returns the offset of the last record in buf[from:to].
func recordStart(buf []byte, from, to int) int {
	for off := from; off < to; {
		reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
		if off+reclen >= to {
			return off
		}
		off += reclen
	}
	return from
}
