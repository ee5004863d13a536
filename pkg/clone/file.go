package clone

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// copyChunk bounds one copy_file_range or read/write, so that ctx and
// Progress are seen during a large file.
const copyChunk = 8 << 20

// linkOverhead is what one remembered hard link costs besides its path.
const linkOverhead = 64

// file copies the regular file name: its data, holes, owner, mode and times.
func (c *copier) file(name string, lst *unix.Stat_t) error {
	parent := &c.frames[len(c.frames)-1]
	sfd, err := openat(parent.src, name, readFlags, 0)
	if err != nil {
		if changedErr(err) {
			c.changed(name, "no longer a regular file")
			return nil
		}
		return fmt.Errorf("open source file %s: %w", c.where(name), err)
	}
	defer unix.Close(sfd)
	st := &c.fst
	if err := fstat(sfd, st); err != nil {
		return fmt.Errorf("stat source file %s: %w", c.where(name), err)
	}
	// What was opened is what gets read: it must be the regular file the
	// lstat saw, not a FIFO, device or other file put there since.
	if st.Mode&unix.S_IFMT != unix.S_IFREG || idOf(st) != idOf(lst) {
		c.changed(name, "replaced while being copied")
		return nil
	}
	if ok, err := c.linked(name, st); ok || err != nil {
		return err
	}
	dfd, err := openat(parent.dst, name, writeFlags, 0o600)
	if err != nil {
		return c.createErr(name, err)
	}
	err = c.data(sfd, dfd, st.Size, name)
	if err == nil {
		err = c.attrs(-1, "", dfd, st, func() string { return c.dstWhere(name) })
	}
	// NFS reports write errors (ENOSPC, EDQUOT) as late as close.
	if cerr := unix.Close(dfd); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", c.dstWhere(name), cerr)
	}
	if err != nil {
		return err
	}
	c.res.Entries++
	c.remember(name, st)
	return nil
}

// data copies the first size bytes of sfd into dfd, skipping holes.
func (c *copier) data(sfd, dfd int, size int64, name string) error {
	var off int64
	for off < size {
		start, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		end := size
		if err != nil {
			// No SEEK_DATA here: all of it is data.
			start = off
		} else if e, err := unix.Seek(sfd, start, unix.SEEK_HOLE); err == nil {
			end = min(e, size)
		}
		if start >= size {
			break
		}
		n, err := c.copyRange(sfd, dfd, start, end-start)
		if err != nil {
			return fmt.Errorf("copy %s to %s: %w", c.where(name), c.dstWhere(name), err)
		}
		off = start + n
		if n < end-start {
			size = off // the file shrank meanwhile
			break
		}
	}
	// Trailing holes, and the size a shrunk file was copied at.
	if err := ignoringEINTR(func() error { return unix.Ftruncate(dfd, size) }); err != nil {
		return fmt.Errorf("set the size of %s: %w", c.dstWhere(name), err)
	}
	return nil
}

// copyRange copies n bytes at off from sfd to dfd, at the same offset;
// fewer only at the end of the source.
func (c *copier) copyRange(sfd, dfd int, off, n int64) (int64, error) {
	var done int64
	for done < n {
		if err := c.ctx.Err(); err != nil {
			return done, fmt.Errorf("stopped: %w", err)
		}
		chunk := int(min(n-done, copyChunk))
		var k int
		var err error
		if !c.noCFR {
			soff, doff := off+done, off+done
			err = ignoringEINTR(func() (err error) {
				k, err = unix.CopyFileRange(sfd, &soff, dfd, &doff, chunk, 0)
				return err
			})
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
				// Not on this filesystem or kernel: read and write.
				c.noCFR = true
				continue
			}
		} else {
			k, err = c.readWrite(sfd, dfd, off+done, chunk)
		}
		if err != nil {
			return done, err
		}
		if k == 0 {
			return done, nil
		}
		done += int64(k)
		c.res.Bytes += int64(k)
		c.progress(false)
	}
	return done, nil
}

func (c *copier) readWrite(sfd, dfd int, off int64, n int) (int, error) {
	if c.rwBuf == nil {
		c.rwBuf = make([]byte, 1<<20)
	}
	buf := c.rwBuf[:min(n, len(c.rwBuf))]
	var k int
	err := ignoringEINTR(func() (err error) {
		k, err = unix.Pread(sfd, buf, off)
		return err
	})
	if err != nil || k == 0 {
		return 0, err
	}
	for w := 0; w < k; {
		var m int
		err := ignoringEINTR(func() (err error) {
			m, err = unix.Pwrite(dfd, buf[w:k], off+int64(w))
			return err
		})
		if err != nil {
			return 0, err
		}
		w += m
	}
	return k, nil
}

// symlink recreates the symbolic link name with the same target; the
// target is read as text and never resolved.
func (c *copier) symlink(name string, st *unix.Stat_t) error {
	if ok, err := c.linked(name, st); ok || err != nil {
		return err
	}
	parent := &c.frames[len(c.frames)-1]
	var n int
	err := ignoringEINTR(func() (err error) {
		n, err = unix.Readlinkat(parent.src, name, c.target[:])
		return err
	})
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			c.changed(name, "no longer a symbolic link")
			return nil
		}
		return fmt.Errorf("read symbolic link %s: %w", c.where(name), err)
	}
	if n == len(c.target) {
		return fmt.Errorf("read symbolic link %s: target longer than %d bytes", c.where(name), len(c.target)-1)
	}
	target := string(c.target[:n])
	if err := ignoringEINTR(func() error { return unix.Symlinkat(target, parent.dst, name) }); err != nil {
		return c.createErr(name, err)
	}
	if err := c.attrs(parent.dst, name, -1, st, func() string { return c.dstWhere(name) }); err != nil {
		return err
	}
	c.res.Entries++
	c.remember(name, st)
	return nil
}

// fifo recreates the named pipe name; neither one is ever opened.
func (c *copier) fifo(name string, st *unix.Stat_t) error {
	if ok, err := c.linked(name, st); ok || err != nil {
		return err
	}
	parent := &c.frames[len(c.frames)-1]
	if err := ignoringEINTR(func() error { return unix.Mkfifoat(parent.dst, name, 0o600) }); err != nil {
		return c.createErr(name, err)
	}
	if err := c.attrs(parent.dst, name, -1, st, func() string { return c.dstWhere(name) }); err != nil {
		return err
	}
	c.res.Entries++
	c.remember(name, st)
	return nil
}

// linked creates name as a hard link to the copy of st's file made
// earlier, if there is one.
func (c *copier) linked(name string, st *unix.Stat_t) (bool, error) {
	if st.Nlink < 2 {
		return false, nil
	}
	id := idOf(st)
	l := c.links[id]
	if l == nil {
		if c.full {
			// Maybe a link whose first copy wasn't remembered.
			c.res.LinksCopied++
		}
		return false, nil
	}
	// The first copy's directory, walked to from the destination root:
	// every name on the way is a directory this copy made.
	dirfd := c.frames[0].dst
	if len(l.path) > 1 {
		fd, err := walk(dirfd, l.path[:len(l.path)-1])
		if err != nil {
			return false, fmt.Errorf("open the directory of the first link of %s: %w", c.where(name), err)
		}
		defer unix.Close(fd)
		dirfd = fd
	}
	parent := &c.frames[len(c.frames)-1]
	if err := ignoringEINTR(func() error { return unix.Linkat(dirfd, l.path[len(l.path)-1], parent.dst, name, 0) }); err != nil {
		return false, c.createErr(name, err)
	}
	if l.left--; l.left == 0 {
		c.forget(id, l)
	}
	c.res.HardLinks++
	c.res.Entries++
	return true, nil
}

// remember records where the first copy of a file with more links went.
func (c *copier) remember(name string, st *unix.Stat_t) {
	if st.Nlink < 2 {
		return
	}
	path := make([]string, 0, len(c.frames))
	size := linkOverhead + len(name)
	for _, f := range c.frames[1:] {
		path = append(path, f.name)
		size += len(f.name) + 16
	}
	if c.linkB+size > c.opts.MaxLinkBytes {
		if !c.full {
			// Later ones are counted by linked, before their copy.
			c.full = true
			c.res.LinksCopied++
		}
		return
	}
	c.linkB += size
	c.links[idOf(st)] = &link{path: append(path, name), left: uint64(st.Nlink) - 1, size: size}
}

func (c *copier) forget(id devIno, l *link) {
	delete(c.links, id)
	c.linkB -= l.size
}
