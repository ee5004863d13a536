// Package clone copies the tree of one directory below the export root into
// another, new and empty one, faithfully and without ever reading or
// writing outside the two.
package clone

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Defaults of Options.
const (
	// DefaultMaxDepth is how many levels below the source Copy goes before
	// it refuses the tree. Real data stays far below it; a tenant can nest
	// directories without end, and the cost of a level past the open
	// window (see DefaultOpenLevels) grows with its depth.
	DefaultMaxDepth = 4096
	// DefaultOpenLevels is how many directory levels Copy holds open at
	// once (two descriptors each, source and destination). Deeper ones are
	// reopened, one name at a time from the roots, when the copy returns to
	// them.
	DefaultOpenLevels = 64
	// DefaultMaxLinkBytes bounds the memory that keeps hard links as links:
	// the destination paths of files with more than one link whose other
	// links are still to come. Past it, further links are copied as
	// separate files.
	DefaultMaxLinkBytes = 16 << 20
	// DefaultProgressInterval is how often Progress is called.
	DefaultProgressInterval = time.Second
)

// direntBufSize is the getdents buffer of each open source directory.
const direntBufSize = 8 << 10

// maxShownPath bounds the bytes of a tenant's path in messages; longer
// ones keep their start and end.
const maxShownPath = 240

// maxLoggedSkips bounds the skipped entries logged one by one; the rest
// are counted only.
const maxLoggedSkips = 10

// Options tune Copy; the zero value uses the defaults.
type Options struct {
	MaxDepth     int
	OpenLevels   int
	MaxLinkBytes int
	// Progress, when set, is called from Copy's goroutine every
	// ProgressInterval and once at the end.
	Progress         func(Progress)
	ProgressInterval time.Duration

	// hooks, set only by tests.
	hooks *hooks
}

type hooks struct {
	// afterStat runs after an entry was lstat'ed, before it is opened or
	// copied: tests swap it to race the copy.
	afterStat func(rel string)
	// chown replaces fchown and fchownat (fd >= 0: fchown).
	chown func(dirfd int, name string, fd, uid, gid int) error
	// readWrite copies data with read and write, as where
	// copy_file_range is missing.
	readWrite bool
}

// Progress is what has been copied so far.
type Progress struct {
	// Entries counts everything created in the destination: directories,
	// files, links, FIFOs.
	Entries int64
	// Bytes counts the data bytes copied (holes of sparse files excluded).
	Bytes int64
}

// Result tells what Copy did.
type Result struct {
	Progress
	// HardLinks counts the entries created as a link to a file copied
	// before; LinksCopied the ones copied as separate files because
	// MaxLinkBytes was reached (an upper bound: once it is, every file with
	// several links counts).
	HardLinks, LinksCopied int64
	// Skipped counts the device nodes, sockets and mount points left out;
	// Changed the entries that were replaced or removed while being
	// copied and were left out too.
	Skipped, Changed int64
	// OwnersDenied counts the entries whose owner could not be copied
	// because the export refuses chown (root squashed); they belong to
	// whoever the export made them.
	OwnersDenied int64
}

// Copy copies the contents of the directory src into the directory dst,
// both slash-separated paths below the trusted directory root, dst existing
// and empty. Regular files keep their bytes (and holes), directories,
// symbolic links (recreated with the same target, never followed) and FIFOs
// (recreated, never opened) their mode, owner and times; hard links stay
// links. Device nodes, sockets and mount points below src are skipped and
// counted. dst's own mode, owner and times are left to the caller.
//
// Every file is opened relative to a directory Copy opened itself, one
// name at a time with O_NOFOLLOW, and Copy never climbs "..": a tenant
// changing src meanwhile can make entries go missing or the copy fail, but
// not make it read or write outside src and dst. It holds at most
// 2×OpenLevels+4 descriptors, and memory bounded by MaxDepth names,
// OpenLevels buffers and MaxLinkBytes.
//
// ctx is checked between entries and between chunks of a large file. On
// error dst holds a partial copy, which the caller removes.
func Copy(ctx context.Context, root, src, dst string, opts Options) (Result, error) {
	sparts, err := splitRel(src)
	if err != nil {
		return Result{}, fmt.Errorf("source %.128q: %w", src, err)
	}
	dparts, err := splitRel(dst)
	if err != nil {
		return Result{}, fmt.Errorf("destination %.128q: %w", dst, err)
	}
	if within(sparts, dparts) || within(dparts, sparts) {
		return Result{}, fmt.Errorf("source %.128q and destination %.128q lie inside one another; a copy would never end", src, dst)
	}
	c := &copier{
		ctx: ctx, log: klog.FromContext(ctx).WithValues("source", src, "destination", dst),
		opts: opts, src: src, dst: dst, links: map[devIno]*link{}, lo: 1,
	}
	c.defaults()
	if err := c.open(root, sparts, dparts); err != nil {
		c.closeAll()
		return Result{}, err
	}
	err = c.run()
	c.closeAll()
	c.report()
	return c.res, err
}

// ErrTooDeep means the source tree is deeper than Options.MaxDepth.
var ErrTooDeep = errors.New("directory tree too deep")

// ErrNotEmpty means the destination holds entries already.
var ErrNotEmpty = errors.New("destination not empty")

func (c *copier) defaults() {
	if c.opts.MaxDepth <= 0 {
		c.opts.MaxDepth = DefaultMaxDepth
	}
	if c.opts.OpenLevels < 2 {
		c.opts.OpenLevels = DefaultOpenLevels
	}
	if c.opts.MaxLinkBytes <= 0 {
		c.opts.MaxLinkBytes = DefaultMaxLinkBytes
	}
	if c.opts.ProgressInterval <= 0 {
		c.opts.ProgressInterval = DefaultProgressInterval
	}
	if c.opts.hooks == nil {
		c.opts.hooks = &hooks{}
	}
	c.noCFR = c.opts.hooks.readWrite
}

// splitRel validates a path below the root and returns its segments.
func splitRel(rel string) ([]string, error) {
	if rel == "" {
		return nil, errors.New("empty path: the export root itself can't be copied from or to")
	}
	if strings.HasPrefix(rel, "/") || strings.IndexByte(rel, 0) >= 0 {
		return nil, errors.New("not a relative path below the export root")
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, fmt.Errorf("segment %.64q is not allowed", p)
		}
	}
	return parts, nil
}

// within reports whether the path inner is outer or lies below it.
func within(outer, inner []string) bool {
	if len(inner) < len(outer) {
		return false
	}
	for i := range outer {
		if outer[i] != inner[i] {
			return false
		}
	}
	return true
}

// link is a file with more links to come: where its first copy went.
type link struct {
	path []string // below dst
	left uint64   // links not seen yet
	size int      // bytes counted against MaxLinkBytes
}

// frame is one directory level being copied: the source and destination
// roots (level 0) or a directory below.
type frame struct {
	name     string // in the parent; "" for level 0
	src, dst int    // descriptors, -1 while closed
	id       devIno // of the source directory, to check a reopen
	dstID    devIno
	st       unix.Stat_t // of the source directory, applied at its end
	buf      []byte
	off, end int   // buf[off:end] holds entries read and not handled yet
	resume   int64 // directory offset after the last entry handled
}

type copier struct {
	ctx  context.Context
	log  klog.Logger
	opts Options
	src  string
	dst  string

	frames []frame
	lo     int      // frames[lo:] are open, and frames[0]; lo >= 1
	free   [][]byte // buffers of closed frames
	fs     uint64   // st_dev of the source root: other values are mounts
	dstID  devIno   // of the destination root
	links  map[devIno]*link
	linkB  int // bytes held by links
	full   bool
	rwBuf  []byte // read/write fallback buffer
	noCFR  bool   // copy_file_range unusable here: read and write
	target [unix.PathMax]byte
	st     unix.Stat_t
	fst    unix.Stat_t

	res      Result
	logged   int
	chownLog bool
	lastProg time.Time
}

// open opens the export root, then src and dst one name at a time.
func (c *copier) open(root string, sparts, dparts []string) error {
	rootfd, err := openat(unix.AT_FDCWD, root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open export root %s: %w", root, err)
	}
	defer unix.Close(rootfd)
	sfd, err := walk(rootfd, sparts)
	if err != nil {
		return fmt.Errorf("open source %.128q: %w", c.src, err)
	}
	c.frames = append(c.frames, frame{src: sfd, dst: -1, buf: make([]byte, direntBufSize)})
	dfd, err := walk(rootfd, dparts)
	if err != nil {
		return fmt.Errorf("open destination %.128q: %w", c.dst, err)
	}
	f := &c.frames[0]
	f.dst = dfd
	if err := fstat(sfd, &f.st); err != nil {
		return fmt.Errorf("stat source %.128q: %w", c.src, err)
	}
	f.id, c.fs = idOf(&f.st), uint64(f.st.Dev)
	if err := fstat(dfd, &c.st); err != nil {
		return fmt.Errorf("stat destination %.128q: %w", c.dst, err)
	}
	c.dstID = idOf(&c.st)
	f.dstID = c.dstID
	if f.id == c.dstID {
		return fmt.Errorf("source %.128q and destination %.128q are one directory", c.src, c.dst)
	}
	empty, err := isEmpty(dfd, f.buf)
	if err != nil {
		return fmt.Errorf("read destination %.128q: %w", c.dst, err)
	}
	if !empty {
		return fmt.Errorf("destination %.128q: %w: a clone goes into a new, empty directory", c.dst, ErrNotEmpty)
	}
	return nil
}

// walk opens the directory parts below dirfd, one name at a time, never
// following a symbolic link.
func walk(dirfd int, parts []string) (int, error) {
	cur := dirfd
	for i, name := range parts {
		fl := pathFlags
		if i == len(parts)-1 {
			fl = dirFlags
		}
		next, err := openat(cur, name, fl, 0)
		if cur != dirfd {
			unix.Close(cur)
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("%.128q is a symbolic link or not a directory, refusing to follow it: %w", strings.Join(parts[:i+1], "/"), err)
		}
		if err != nil {
			return -1, fmt.Errorf("%.128q: %w", strings.Join(parts[:i+1], "/"), err)
		}
		cur = next
	}
	return cur, nil
}

func (c *copier) closeAll() {
	for i := range c.frames {
		f := &c.frames[i]
		if f.src >= 0 {
			unix.Close(f.src)
		}
		if f.dst >= 0 {
			unix.Close(f.dst)
		}
		f.src, f.dst = -1, -1
	}
}

// run copies depth first, reading each source directory once.
func (c *copier) run() error {
	for len(c.frames) > 0 {
		if err := c.ctx.Err(); err != nil {
			return fmt.Errorf("copy stopped after %d entries: %w", c.res.Entries, context.Cause(c.ctx))
		}
		top := len(c.frames) - 1
		if c.frames[top].src < 0 {
			if err := c.reopen(top); err != nil {
				return err
			}
		}
		f := &c.frames[top]
		if f.off >= f.end {
			n, err := getdents(f.src, f.buf)
			if err != nil {
				return fmt.Errorf("read source directory %s: %w", c.where(""), err)
			}
			f.off, f.end = 0, n
			if n == 0 {
				if err := c.finish(); err != nil {
					return err
				}
				continue
			}
		}
		d, next, ok := nextDirent(f.buf, f.off, f.end)
		f.off = next
		if !ok {
			continue
		}
		f.resume = d.off
		if err := c.entry(d.name); err != nil {
			return err
		}
		c.progress(false)
	}
	return nil
}

// finish ends the current directory: its destination gets the source's
// owner, mode and times now that nothing more is created in it.
func (c *copier) finish() error {
	top := len(c.frames) - 1
	f := &c.frames[top]
	if top > 0 {
		if err := c.attrs(-1, "", f.dst, &f.st, func() string { return c.dstWhere("") }); err != nil {
			return err
		}
	}
	unix.Close(f.src)
	unix.Close(f.dst)
	f.src, f.dst = -1, -1
	c.free = append(c.free, f.buf)
	f.buf = nil
	// If the parent is closed (below lo), run reopens it.
	c.frames = c.frames[:top]
	return nil
}

// entry copies the entry name of the current directory.
func (c *copier) entry(name string) error {
	f := &c.frames[len(c.frames)-1]
	st := &c.st
	if err := lstatat(f.src, name, st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			c.changed(name, "removed while being copied")
			return nil
		}
		return fmt.Errorf("stat %s: %w", c.where(name), err)
	}
	if h := c.opts.hooks.afterStat; h != nil {
		h(c.rel(name))
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return c.dir(name, st)
	case unix.S_IFREG:
		return c.file(name, st)
	case unix.S_IFLNK:
		return c.symlink(name, st)
	case unix.S_IFIFO:
		return c.fifo(name, st)
	case unix.S_IFCHR, unix.S_IFBLK:
		c.skip(name, "a device node")
	case unix.S_IFSOCK:
		c.skip(name, "a socket")
	default:
		c.skip(name, "a special file")
	}
	return nil
}

// dir creates the directory name and descends into it.
func (c *copier) dir(name string, st *unix.Stat_t) error {
	if uint64(st.Dev) != c.fs {
		c.skip(name, "a mount point (another filesystem or a bind mount)")
		return nil
	}
	if len(c.frames) > c.opts.MaxDepth {
		return fmt.Errorf("source directory %s is more than %d levels deep: %w; flatten the tree or copy it by hand", c.where(name), c.opts.MaxDepth, ErrTooDeep)
	}
	parent := &c.frames[len(c.frames)-1]
	sfd, err := openat(parent.src, name, dirFlags, 0)
	if err != nil {
		if changedErr(err) {
			c.changed(name, "no longer a directory")
			return nil
		}
		return fmt.Errorf("open source directory %s: %w", c.where(name), err)
	}
	var sst unix.Stat_t
	if err := fstat(sfd, &sst); err != nil {
		unix.Close(sfd)
		return fmt.Errorf("stat source directory %s: %w", c.where(name), err)
	}
	if idOf(&sst) != idOf(st) {
		unix.Close(sfd)
		c.changed(name, "replaced while being copied")
		return nil
	}
	if idOf(&sst) == c.dstID {
		unix.Close(sfd)
		return fmt.Errorf("source directory %s is the destination: refusing to copy it into itself", c.where(name))
	}
	if err := ignoringEINTR(func() error { return unix.Mkdirat(parent.dst, name, 0o700) }); err != nil {
		unix.Close(sfd)
		return c.createErr(name, err)
	}
	dfd, err := openat(parent.dst, name, dirFlags, 0)
	if err != nil {
		unix.Close(sfd)
		return fmt.Errorf("open destination directory %s: %w", c.dstWhere(name), err)
	}
	var dst unix.Stat_t
	if err := fstat(dfd, &dst); err != nil {
		unix.Close(sfd)
		unix.Close(dfd)
		return fmt.Errorf("stat destination directory %s: %w", c.dstWhere(name), err)
	}
	c.res.Entries++
	c.push(frame{name: name, src: sfd, dst: dfd, id: idOf(&sst), dstID: idOf(&dst), st: sst})
	return nil
}

// push makes fr the current directory, closing the shallowest open level
// past the window.
func (c *copier) push(fr frame) {
	fr.buf = c.buffer()
	n := len(c.frames)
	c.frames = append(c.frames, fr)
	if c.lo > n {
		c.lo = n
	}
	for len(c.frames)-c.lo > c.opts.OpenLevels-1 {
		c.close(c.lo)
		c.lo++
	}
}

func (c *copier) buffer() []byte {
	if n := len(c.free); n > 0 {
		b := c.free[n-1]
		c.free = c.free[:n-1]
		return b
	}
	return make([]byte, direntBufSize)
}

// close closes level i; its listing resumes from f.resume when reopened.
func (c *copier) close(i int) {
	f := &c.frames[i]
	unix.Close(f.src)
	unix.Close(f.dst)
	f.src, f.dst = -1, -1
	c.free = append(c.free, f.buf)
	f.buf, f.off, f.end = nil, 0, 0
}

// reopen opens level top again, walking from level 0 one name at a time,
// and keeps the window of levels above it open. Each directory must be the
// one copied before: a tenant who moved or replaced one since fails the
// copy rather than send it elsewhere.
func (c *copier) reopen(top int) error {
	lo := max(1, top-(c.opts.OpenLevels-2))
	psrc, pdst := c.frames[0].src, c.frames[0].dst
	transient := false // psrc and pdst are the walk's own, not a level's
	for i := 1; i <= top; i++ {
		f := &c.frames[i]
		ns, nd, err := c.openLevel(psrc, pdst, f)
		if transient {
			unix.Close(psrc)
			unix.Close(pdst)
		}
		if err == nil && i >= lo {
			f.src, f.dst, f.buf = ns, nd, c.buffer()
			if _, err = unix.Seek(ns, f.resume, 0); err != nil {
				err = fmt.Errorf("resume reading it: %w", err)
			}
		}
		if err != nil {
			for j := lo; j <= i; j++ {
				if c.frames[j].src >= 0 {
					c.close(j)
				}
			}
			return fmt.Errorf("open source directory %s again: %w", c.whereAt(i), err)
		}
		psrc, pdst, transient = ns, nd, i < lo
	}
	c.lo = lo
	return nil
}

// openLevel opens the directories of f in psrc and pdst and checks they
// are the ones copied before.
func (c *copier) openLevel(psrc, pdst int, f *frame) (int, int, error) {
	ns, err := openat(psrc, f.name, dirFlags, 0)
	if err != nil {
		return -1, -1, err
	}
	nd, err := openat(pdst, f.name, dirFlags, 0)
	if err != nil {
		unix.Close(ns)
		return -1, -1, err
	}
	if err := c.same(ns, nd, f); err != nil {
		unix.Close(ns)
		unix.Close(nd)
		return -1, -1, err
	}
	return ns, nd, nil
}

// same checks that the reopened ns and nd are the directories of f.
func (c *copier) same(ns, nd int, f *frame) error {
	var st unix.Stat_t
	if err := fstat(ns, &st); err != nil {
		return err
	}
	if idOf(&st) != f.id {
		return errors.New("it was moved or replaced during the copy; retry once the source is left alone")
	}
	if err := fstat(nd, &st); err != nil {
		return err
	}
	if idOf(&st) != f.dstID {
		return errors.New("its copy in the destination was moved or replaced during the copy")
	}
	return nil
}

// attrs gives a created entry the owner, mode and times of st: through fd
// when it is open, else by name in dirfd without following it. shown names
// it for messages, built only when one is written: a path costs its depth.
func (c *copier) attrs(dirfd int, name string, fd int, st *unix.Stat_t, shown func() string) error {
	if err := c.chown(dirfd, name, fd, int(st.Uid), int(st.Gid)); err != nil {
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("set owner of %s: %w", shown(), err)
		}
		c.res.OwnersDenied++
		if !c.chownLog {
			c.chownLog = true
			c.log.Info("The export refuses to set owners (it squashes root?): copies belong to the user it maps the provisioner to; counting the rest", "entry", shown(), "err", err.Error())
		}
	}
	mode := st.Mode & 0o7777
	ts := times(st)
	var err error
	switch {
	case fd >= 0:
		err = ignoringEINTR(func() error { return unix.Fchmod(fd, mode) })
		if err == nil {
			err = futimens(fd, &ts)
		}
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		// Links have no mode of their own on Linux.
		err = ignoringEINTR(func() error { return unix.UtimesNanoAt(dirfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW) })
	default:
		// A FIFO: the entry is ours, created an instant ago.
		err = ignoringEINTR(func() error { return unix.Fchmodat(dirfd, name, mode, 0) })
		if err == nil {
			err = ignoringEINTR(func() error { return unix.UtimesNanoAt(dirfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW) })
		}
	}
	if err != nil {
		return fmt.Errorf("set mode and times of %s: %w", shown(), err)
	}
	return nil
}

func (c *copier) chown(dirfd int, name string, fd, uid, gid int) error {
	if h := c.opts.hooks.chown; h != nil {
		return h(dirfd, name, fd, uid, gid)
	}
	if fd >= 0 {
		return ignoringEINTR(func() error { return unix.Fchown(fd, uid, gid) })
	}
	return ignoringEINTR(func() error { return unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW) })
}

// changedErr tells errors of opening an entry that was replaced since its
// lstat: by a link (ELOOP), a non-directory (ENOTDIR), nothing (ENOENT) or
// a FIFO without a writer (ENXIO).
func changedErr(err error) bool {
	return errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EISDIR)
}

func (c *copier) createErr(name string, err error) error {
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create %s: %w: the source listed it twice (it changed during the copy) or something else writes to the destination; retry", c.dstWhere(name), err)
	}
	return fmt.Errorf("create %s: %w", c.dstWhere(name), err)
}

func (c *copier) skip(name, what string) {
	c.res.Skipped++
	c.logSkip(name, what+", not copied")
}

func (c *copier) changed(name, what string) {
	c.res.Changed++
	c.logSkip(name, what+", left out")
}

func (c *copier) logSkip(name, why string) {
	if c.logged < maxLoggedSkips {
		c.logged++
		c.log.Info("Skipping an entry of the source", "entry", c.where(name), "reason", why)
	} else if c.logged == maxLoggedSkips {
		c.logged++
		c.log.Info("Skipping more entries of the source; counting them only")
	}
}

// progress calls Options.Progress if its interval passed (or at the end).
func (c *copier) progress(end bool) {
	if c.opts.Progress == nil {
		return
	}
	if now := time.Now(); end || now.Sub(c.lastProg) >= c.opts.ProgressInterval {
		c.lastProg = now
		c.opts.Progress(c.res.Progress)
	}
}

func (c *copier) report() {
	c.progress(true)
	if c.res.LinksCopied > 0 {
		c.log.Info("Copied some hard links as separate files: too many links to keep track of", "copied", c.res.LinksCopied, "maxLinkBytes", c.opts.MaxLinkBytes)
	}
}

// rel returns the path below the source of the entry name of the current
// directory ("" names the directory itself).
func (c *copier) rel(name string) string {
	return c.relAt(len(c.frames)-1, name)
}

func (c *copier) relAt(level int, name string) string {
	var b strings.Builder
	for _, f := range c.frames[1 : level+1] {
		b.WriteString(f.name)
		b.WriteByte('/')
	}
	b.WriteString(name)
	return strings.TrimSuffix(b.String(), "/")
}

// where names an entry of the source for messages, shortened and quoted.
func (c *copier) where(name string) string { return shown(c.src, c.rel(name)) }

func (c *copier) whereAt(level int) string { return shown(c.src, c.relAt(level, "")) }

func (c *copier) dstWhere(name string) string { return shown(c.dst, c.rel(name)) }

func shown(base, rel string) string {
	p := base
	if rel != "" {
		p += "/" + rel
	}
	if len(p) > maxShownPath {
		const head = maxShownPath / 3
		p = p[:head] + "..." + p[len(p)-(maxShownPath-head):]
	}
	return strconv.Quote(p)
}
