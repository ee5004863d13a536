package exportfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// du returns what du -s says of dir: allocated bytes and inodes, hard links
// once, symbolic links not followed, other filesystems not entered (-x).
func du(t testing.TB, dir string) (bytes, inodes uint64) {
	t.Helper()
	field := func(args ...string) uint64 {
		out, err := exec.Command("du", append(args, dir)...).Output()
		require.NoError(t, err, "du %v", args)
		v, err := strconv.ParseUint(strings.Fields(string(out))[0], 10, 64)
		require.NoError(t, err)
		return v
	}
	return field("-sxB1"), field("-sx", "--inodes")
}

func write(t testing.TB, path string, size int) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, make([]byte, size), 0o644))
}

// TestScanMatchesDu: on a tree of every kind of entry, Scan counts what du
// -s counts: the directory itself, allocated blocks, each hard-linked file
// once, symbolic links as themselves, FIFOs without opening them.
func TestScanMatchesDu(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	vol := e.in("vol")
	require.NoError(t, os.MkdirAll(filepath.Join(vol, "a", "b", "c"), 0o755))
	write(t, filepath.Join(vol, "small"), 10)
	write(t, filepath.Join(vol, "a", "big"), 300<<10)
	write(t, filepath.Join(vol, "a", "b", "c", "deep"), 70<<10)
	// Three links, one file.
	require.NoError(t, os.Link(filepath.Join(vol, "a", "big"), filepath.Join(vol, "link1")))
	require.NoError(t, os.Link(filepath.Join(vol, "a", "big"), filepath.Join(vol, "a", "b", "link2")))
	// A sparse file: 64 MiB long, one block written.
	sparse, err := os.Create(filepath.Join(vol, "sparse"))
	require.NoError(t, err)
	require.NoError(t, sparse.Truncate(64<<20))
	_, err = sparse.WriteAt([]byte("x"), 32<<20)
	require.NoError(t, err)
	require.NoError(t, sparse.Close())
	// Links out of the volume, to a directory and a file that weigh a lot.
	write(t, filepath.Join(e.outside, "heavy"), 1<<20)
	require.NoError(t, os.Symlink(e.outside, filepath.Join(vol, "to-outside")))
	require.NoError(t, os.Symlink(filepath.Join(e.outside, "heavy"), filepath.Join(vol, "a", "to-heavy")))
	require.NoError(t, os.Symlink("/", filepath.Join(vol, "to-root")))
	// A FIFO named like a file: never opened, or the scan would block.
	require.NoError(t, unix.Mkfifo(filepath.Join(vol, "data.db"), 0o644))

	got, err := e.fs.Scan(context.Background(), "vol", ScanOptions{})
	require.NoError(t, err)
	bytes, inodes := du(t, vol)
	assert.Equal(t, bytes, got.Bytes, "bytes, du -sxB1")
	assert.Equal(t, inodes, got.Inodes, "inodes, du -sx --inodes")
	assert.Less(t, got.Bytes, uint64(1<<20), "the sparse file counts what it occupies, the links not what they point at")
	assert.Zero(t, got.Skipped)
	t.Logf("scan %+v, du %d bytes %d inodes", got, bytes, inodes)
}

// TestScanDeepTree: far deeper than the directories Scan keeps open, the
// count still matches du's, through the reopening of parents by "..".
func TestScanDeepTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	vol := e.in("vol")
	require.NoError(t, os.Mkdir(vol, 0o755))
	fd, err := unix.Open(vol, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	// Each level holds a file, written before and after its subdirectory
	// so that the reads after a reopen must resume at the right entry.
	for i := range 3 * scanWindow * 10 {
		for _, name := range []string{"before", "d", "zafter"} {
			if name == "d" {
				require.NoError(t, unix.Mkdirat(fd, name, 0o755))
				continue
			}
			f, err := unix.Openat(fd, name, unix.O_CREAT|unix.O_WRONLY, 0o644)
			require.NoError(t, err)
			_, err = unix.Write(f, make([]byte, 5000+i))
			require.NoError(t, err)
			unix.Close(f)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)

	got, err := e.fs.Scan(context.Background(), "vol", ScanOptions{})
	require.NoError(t, err)
	bytes, inodes := du(t, vol)
	assert.Equal(t, bytes, got.Bytes)
	assert.Equal(t, inodes, got.Inodes)
	assert.Equal(t, uint64(1+3*3*scanWindow*10), got.Inodes)
}

// TestScanStopsWhenTreeMovesOut: a directory moved out of the volume while
// the scan is below it must not lead the scan out: coming back up, it finds
// another parent and stops.
func TestScanStopsWhenTreeMovesOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	chain := filepath.Join(e.in("vol"), "top")
	for range scanWindow + 4 {
		chain = filepath.Join(chain, "d")
	}
	require.NoError(t, os.MkdirAll(chain, 0o755))
	write(t, filepath.Join(e.outside, "heavy"), 1<<20)
	var steps atomic.Int32
	e.fs.onStep = func() {
		// Deep in the chain, with "top" closed: move its child out.
		if steps.Add(1) == int32(2*(scanWindow+3)) {
			require.NoError(t, os.Rename(filepath.Join(e.in("vol"), "top", "d"), filepath.Join(e.outside, "moved")))
		}
	}
	got, err := e.fs.Scan(context.Background(), "vol", ScanOptions{})
	require.ErrorIs(t, err, ErrChanged)
	assert.Contains(t, err.Error(), "was moved while it was scanned")
	assert.Less(t, got.Bytes, uint64(1<<20), "nothing outside the volume was counted")
}

// TestScanDoesNotEnterMounts: another filesystem below the volume is
// neither entered nor counted, like du -x.
func TestScanDoesNotEnterMounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, os.MkdirAll(e.in("vol/mnt"), 0o755))
	mount(t, e.base, "", e.in("vol/mnt"))
	write(t, e.in("vol/mnt/inside"), 512<<10)
	got, err := e.fs.Scan(context.Background(), "vol", ScanOptions{})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), got.Inodes, "the volume itself")
	assert.Equal(t, uint64(1), got.Skipped, "the mount point")
}

// TestScanRefusesSymlinkedVolume: the volume itself (or a directory on the
// way) being a symbolic link is refused, not followed.
func TestScanRefusesSymlinkedVolume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, os.Symlink(e.outside, e.in("vol")))
	_, err := e.fs.Scan(context.Background(), "vol", ScanOptions{})
	require.ErrorIs(t, err, ErrSymlink)
	require.NoError(t, os.Mkdir(e.in("real"), 0o755))
	require.NoError(t, os.Symlink(e.outside, e.in("real/link")))
	_, err = e.fs.Scan(context.Background(), "real/link/sub", ScanOptions{})
	require.ErrorIs(t, err, ErrSymlink)
}

// TestScanWaitsForEachCall: the rate hook is asked before every system
// call, and its error ends the scan.
func TestScanWaitsForEachCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 20 {
		require.NoError(t, os.MkdirAll(e.in(fmt.Sprintf("vol/d%d", i)), 0o755))
		write(t, e.in(fmt.Sprintf("vol/d%d/f", i)), 10)
	}
	var waits, steps atomic.Int32
	e.fs.onStep = func() { steps.Add(1) }
	got, err := e.fs.Scan(context.Background(), "vol", ScanOptions{Wait: func(context.Context) error {
		waits.Add(1)
		return nil
	}})
	require.NoError(t, err)
	assert.Equal(t, uint64(41), got.Inodes)
	assert.Equal(t, steps.Load(), waits.Load(), "one wait per system call")

	stop := errors.New("rate limiter closed")
	n := 0
	_, err = e.fs.Scan(context.Background(), "vol", ScanOptions{Wait: func(context.Context) error {
		if n++; n > 10 {
			return stop
		}
		return nil
	}})
	require.ErrorIs(t, err, stop)
}

// TestScanHungExport: a call that doesn't answer ends the scan within the
// timeout, as every other call does.
func TestScanHungExport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, os.MkdirAll(e.in("vol/a/b"), 0o755))
	f := New(e.root, 100*time.Millisecond)
	block := make(chan struct{})
	defer close(block)
	var steps atomic.Int32
	f.onStep = func() {
		if steps.Add(1) == 3 {
			<-block
		}
	}
	start := time.Now()
	_, err := f.Scan(context.Background(), "vol", ScanOptions{})
	require.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "after counting")
	assert.Less(t, time.Since(start), 2*time.Second)
}

// TestScanLinksBound: past MaxLinks, further hard-linked files are counted
// for each link, and the tally says so.
func TestScanLinksBound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, os.Mkdir(e.in("vol"), 0o755))
	for i := range 4 {
		write(t, e.in(fmt.Sprintf("vol/f%d", i)), 10)
		require.NoError(t, os.Link(e.in(fmt.Sprintf("vol/f%d", i)), e.in(fmt.Sprintf("vol/l%d", i))))
	}
	got, err := e.fs.Scan(context.Background(), "vol", ScanOptions{})
	require.NoError(t, err)
	assert.Equal(t, uint64(5), got.Inodes)
	assert.False(t, got.LinksOverflow)
	got, err = e.fs.Scan(context.Background(), "vol", ScanOptions{MaxLinks: 2})
	require.NoError(t, err)
	assert.Equal(t, uint64(7), got.Inodes, "two files remembered, the other two counted twice")
	assert.True(t, got.LinksOverflow)
}
