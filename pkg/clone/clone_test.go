package clone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func root(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners and make device nodes")
	}
}

// TestCopyFaithful copies every kind of entry and compares bytes, modes,
// owners, times, link targets and hard-link groups.
func TestCopyFaithful(t *testing.T) {
	t.Parallel()
	root(t)
	e := newExport(t)
	s := e.src
	write(t, s+"/plain", "hello\n", 0o644)
	write(t, s+"/private", "secret of the tenant", 0o600)
	write(t, s+"/setuid", "#!/bin/sh\n", 0o4755)
	write(t, s+"/none", "x", 0)
	write(t, s+"/empty", "", 0o640)
	write(t, s+"/a/b/c/deep", "deep", 0o644)
	require.NoError(t, os.Mkdir(s+"/emptydir", 0o711))
	require.NoError(t, os.Chown(s+"/private", 1234, 5678))
	require.NoError(t, os.Chown(s+"/a/b", 2000, 3000))
	// Hard links: three names in two directories.
	write(t, s+"/linked", "one inode", 0o644)
	require.NoError(t, os.Link(s+"/linked", s+"/a/linked2"))
	require.NoError(t, os.Link(s+"/linked", s+"/a/b/linked3"))
	// Symbolic links: relative, absolute, dangling, to the root, out of the
	// tenant's directory; and a hard link to a link.
	for name, target := range map[string]string{"rel": "plain", "abs": "/etc/passwd", "dangling": "nowhere/at/all", "slash": "/", "up": "../../other/secret", "dirlink": "a"} {
		require.NoError(t, os.Symlink(target, s+"/"+name))
	}
	require.NoError(t, unix.Fchownat(unix.AT_FDCWD, s+"/rel", 42, 43, unix.AT_SYMLINK_NOFOLLOW))
	require.NoError(t, os.Link(s+"/rel", s+"/a/rel-linked"))
	require.NoError(t, unix.Mkfifo(s+"/fifo", 0o620))
	// A read-only directory with contents: its mode comes after them.
	write(t, s+"/ro/inside", "in a read-only dir", 0o444)
	require.NoError(t, os.Chmod(s+"/ro", 0o555))
	// Sparse: 4 KiB of data, a 64 MiB hole, 4 KiB of data, a trailing hole.
	f, err := os.Create(s + "/sparse")
	require.NoError(t, err)
	_, err = f.WriteAt([]byte(strings.Repeat("a", 4096)), 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte(strings.Repeat("b", 4096)), 64<<20)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(80<<20))
	require.NoError(t, f.Close())
	// Skipped: a device node and a socket.
	require.NoError(t, unix.Mknod(s+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	l, err := net.Listen("unix", s+"/sock")
	require.NoError(t, err)
	defer l.Close()
	settle(t, s)

	var last Progress
	res, err := e.copy(t, Options{Progress: func(p Progress) { last = p }})
	require.NoError(t, err)
	assertSameTree(t, s, e.dst, "null", "sock")
	assert.Equal(t, int64(2), res.Skipped, "device and socket")
	assert.Equal(t, int64(3), res.HardLinks, "two links to linked, one to rel")
	assert.Zero(t, res.Changed)
	assert.Zero(t, res.OwnersDenied)
	assert.Equal(t, res.Progress, last, "the last progress report is the total")
	_, err = os.Lstat(e.dst + "/null")
	assert.ErrorIs(t, err, os.ErrNotExist)

	assert.Less(t, blocks(t, e.dst+"/sparse"), int64(1024), "sparse stays sparse: 8 KiB of data in 512-byte blocks, not 80 MiB")
	assert.Equal(t, int64(8192+len("hello\n")+len("secret of the tenant")+len("#!/bin/sh\n")+1+4+len("one inode")+len("in a read-only dir")), res.Bytes, "data bytes only, each inode once")
}

// TestCopyNeverFollowsLinks: links to / and to another tenant's directory
// are copied as links; nothing they point to is read.
func TestCopyNeverFollowsLinks(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	other := filepath.Join(e.root, "other")
	write(t, other+"/secret", "another tenant's data", 0o644)
	// Its atime before its mtime: reading it would move the atime.
	old := []unix.Timespec{unix.NsecToTimespec(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()), unix.NsecToTimespec(time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())}
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, other+"/secret", old, 0))
	require.NoError(t, os.Symlink("/", e.src+"/root"))
	require.NoError(t, os.Symlink("../other", e.src+"/neighbour"))
	require.NoError(t, os.Symlink("../other/secret", e.src+"/secret"))
	require.NoError(t, os.Symlink(other+"/secret", e.src+"/secret-abs"))

	res, err := e.copy(t, Options{})
	require.NoError(t, err)
	assert.Equal(t, int64(4), res.Entries)
	assert.Zero(t, res.Bytes)
	for name, target := range map[string]string{"root": "/", "neighbour": "../other", "secret": "../other/secret", "secret-abs": other + "/secret"} {
		got, err := os.Readlink(e.dst + "/" + name)
		require.NoError(t, err)
		assert.Equal(t, target, got)
	}
	var st unix.Stat_t
	require.NoError(t, unix.Stat(other+"/secret", &st))
	assert.Equal(t, old[0], st.Atim, "the other tenant's file was never read")
}

// TestCopyFIFONamedLikeAFile: a FIFO is recreated, never opened (opening
// one for reading without a writer would block).
func TestCopyFIFONamedLikeAFile(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	require.NoError(t, unix.Mkfifo(e.src+"/data.csv", 0o644))
	done := make(chan error, 1)
	go func() { _, err := e.copy(t, Options{}); done <- err }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the copy blocked on a FIFO")
	}
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(e.dst+"/data.csv", &st))
	assert.Equal(t, uint32(unix.S_IFIFO), st.Mode&unix.S_IFMT)
	assert.Equal(t, uint32(0o644), st.Mode&0o7777)
}

// TestCopySwappedEntries: an entry replaced after its lstat, before it is
// opened, is left out, never followed, and doesn't block the copy.
func TestCopySwappedEntries(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		make func(t *testing.T, p string)
		swap func(p, other string) error
	}{
		"file for a symlink to another tenant's file": {
			make: func(t *testing.T, p string) { write(t, p, "mine", 0o644) },
			swap: func(p, other string) error {
				return errors.Join(os.Remove(p), os.Symlink(other+"/secret", p))
			},
		},
		"file for a FIFO": {
			make: func(t *testing.T, p string) { write(t, p, "mine", 0o644) },
			swap: func(p, _ string) error { return errors.Join(os.Remove(p), unix.Mkfifo(p, 0o644)) },
		},
		"directory for a symlink to another tenant's directory": {
			make: func(t *testing.T, p string) { write(t, p+"/inside", "mine", 0o644) },
			swap: func(p, other string) error { return errors.Join(os.RemoveAll(p), os.Symlink(other, p)) },
		},
		"directory for a symlink to /": {
			make: func(t *testing.T, p string) { require.NoError(t, os.Mkdir(p, 0o755)) },
			swap: func(p, _ string) error { return errors.Join(os.Remove(p), os.Symlink("/", p)) },
		},
		"file for another file": {
			make: func(t *testing.T, p string) { write(t, p, "mine", 0o644) },
			swap: func(p, other string) error { return os.Rename(other+"/secret", p) },
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newExport(t)
			other := filepath.Join(e.root, "other")
			write(t, other+"/secret", "another tenant's data", 0o644)
			tc.make(t, e.src+"/victim")
			write(t, e.src+"/z-after", "copied", 0o644)
			hooks := &hooks{afterStat: func(rel string) {
				if rel == "victim" {
					require.NoError(t, tc.swap(e.src+"/victim", other))
				}
			}}
			done := make(chan struct{})
			var res Result
			var err error
			go func() { defer close(done); res, err = e.copy(t, Options{hooks: hooks}) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the copy blocked")
			}
			require.NoError(t, err)
			assert.Equal(t, int64(1), res.Changed)
			_, err = os.Lstat(e.dst + "/victim")
			assert.ErrorIs(t, err, os.ErrNotExist, "left out")
			b, err := os.ReadFile(e.dst + "/z-after")
			require.NoError(t, err)
			assert.Equal(t, "copied", string(b), "the copy went on")
			assertNoSecret(t, e.dst)
		})
	}
}

// assertNoSecret checks that no byte of the other tenant's file landed in
// dir.
func assertNoSecret(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.False(t, contains(b, "another tenant"), "%s holds the other tenant's data", p)
		return nil
	}))
}

// TestCopyDeepTreeReopens copies a tree deeper than the open window, with
// entries before and after each subdirectory, so that every level is
// closed, reopened and resumed where it stopped.
func TestCopyDeepTreeReopens(t *testing.T) {
	t.Parallel()
	for _, open := range []int{2, 3, 7} {
		t.Run(fmt.Sprint(open), func(t *testing.T) {
			t.Parallel()
			e := newExport(t)
			p := e.src
			for i := range 60 {
				for j := range 5 {
					write(t, fmt.Sprintf("%s/f%d-%d", p, i, j), fmt.Sprintf("level %d file %d", i, j), 0o644)
				}
				require.NoError(t, os.Mkdir(fmt.Sprintf("%s/side%d", p, i), 0o750))
				write(t, fmt.Sprintf("%s/side%d/x", p, i), "side", 0o600)
				p = fmt.Sprintf("%s/d%d", p, i)
				require.NoError(t, os.Mkdir(p, 0o755))
			}
			settle(t, e.src)
			res, err := e.copy(t, Options{OpenLevels: open})
			require.NoError(t, err)
			assertSameTree(t, e.src, e.dst)
			assert.Equal(t, int64(60*8), res.Entries)
		})
	}
}

// TestCopyReopenFindsMovedDirectory: a directory the copy closed and
// moved meanwhile fails the copy instead of sending it elsewhere.
func TestCopyReopenFindsMovedDirectory(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	write(t, e.src+"/a/b/c/d/file", "x", 0o644)
	write(t, e.src+"/a/z", "after", 0o644)
	other := filepath.Join(e.root, "other")
	write(t, other+"/b/secret", "another tenant's data", 0o644)
	hooks := &hooks{afterStat: func(rel string) {
		if rel == "a/b/c/d/file" {
			// a/b is closed by now (window of 2): replace it.
			require.NoError(t, os.Rename(e.src+"/a/b", e.root+"/moved"))
			require.NoError(t, os.Rename(other+"/b", e.src+"/a/b"))
		}
	}}
	_, err := e.copy(t, Options{OpenLevels: 2, hooks: hooks})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "moved or replaced during the copy")
	assertNoSecret(t, e.dst)
}

// TestCopyRefusesTooDeep: 15,000 levels, beyond MaxDepth, fail fast and
// cleanly; below the limit they copy.
func TestCopyRefusesTooDeep(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	const levels = 15000
	deepen(t, e.src, levels)
	start := time.Now()
	_, err := e.copy(t, Options{})
	require.ErrorIs(t, err, ErrTooDeep)
	assert.Contains(t, err.Error(), "more than 4096 levels deep")
	assert.Less(t, len(err.Error()), 600, "the path in the message is shortened")
	t.Logf("refused after %s", time.Since(start))
	if testing.Short() {
		return
	}
	e2 := export{root: e.root, src: e.src, dst: e.root + "/dst2"}
	require.NoError(t, os.Mkdir(e2.dst, 0o700))
	start = time.Now()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := Copy(context.Background(), e.root, "src", "dst2", Options{MaxDepth: levels + 1})
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	assert.Equal(t, int64(levels), res.Entries)
	assert.Equal(t, levels, depth(t, e2.dst))
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("copied %d levels in %s, allocating %d KiB in all (test included)", levels, time.Since(start), allocated>>10)
	// A frame and a name per level, and the reopen walks' garbage; not the
	// tree's paths (15,000 levels of "d/" would be quadratic).
	assert.Less(t, allocated, uint64(64<<20))
}

// deepen makes a chain of n directories "d" below dir, through descriptors
// (the path is longer than PATH_MAX).
func deepen(t testing.TB, dir string, n int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	for range n {
		require.NoError(t, unix.Mkdirat(fd, "d", 0o755))
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
}

func depth(t testing.TB, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	n := 0
	for {
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		if err != nil {
			return n
		}
		fd = next
		n++
	}
}

func TestCopyManyFiles(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	for i := range 3000 {
		write(t, fmt.Sprintf("%s/d%02d/f%04d", e.src, i%40, i), fmt.Sprint(i), 0o644)
	}
	settle(t, e.src)
	res, err := e.copy(t, Options{})
	require.NoError(t, err)
	assert.Equal(t, int64(3040), res.Entries)
	assertSameTree(t, e.src, e.dst)
}

func TestCopyHardLinksPastTheCap(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	// All first names in a, read before any second name in b (or the other
	// way round): 20 links outstanding at once.
	for i := range 20 {
		write(t, fmt.Sprintf("%s/a/f%02d", e.src, i), fmt.Sprint(i), 0o644)
		require.NoError(t, os.MkdirAll(e.src+"/b", 0o755))
		require.NoError(t, os.Link(fmt.Sprintf("%s/a/f%02d", e.src, i), fmt.Sprintf("%s/b/f%02d", e.src, i)))
	}
	perLink := linkOverhead + len("f00") + len("a") + 16
	res, err := e.copy(t, Options{MaxLinkBytes: 5 * perLink})
	require.NoError(t, err)
	assert.Equal(t, int64(5), res.HardLinks, "as many as fit")
	assert.Equal(t, int64(30), res.LinksCopied, "15 first copies past the cap and their 15 links")
	for i := range 20 {
		for _, d := range []string{"a", "b"} {
			b, err := os.ReadFile(fmt.Sprintf("%s/%s/f%02d", e.dst, d, i))
			require.NoError(t, err)
			assert.Equal(t, fmt.Sprint(i), string(b))
		}
	}
}

func TestCopyChownDenied(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	write(t, e.src+"/a/f", "x", 0o640)
	require.NoError(t, os.Symlink("f", e.src+"/a/l"))
	calls := 0
	hooks := &hooks{chown: func(int, string, int, int, int) error { calls++; return unix.EPERM }}
	res, err := e.copy(t, Options{hooks: hooks})
	require.NoError(t, err, "a squashed export keeps going")
	assert.Equal(t, int64(3), res.OwnersDenied)
	assert.Equal(t, 3, calls)
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(e.dst+"/a/f", &st))
	assert.Equal(t, uint32(0o640), st.Mode&0o7777, "modes are still copied")
}

func TestCopyCancelled(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	for i := range 100 {
		write(t, fmt.Sprintf("%s/f%03d", e.src, i), "x", 0o644)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := Copy(ctx, e.root, "src", "dst", Options{ProgressInterval: time.Nanosecond, Progress: func(p Progress) {
		if p.Entries == 10 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, int64(10), res.Entries)
}

func TestCopyRefusals(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		src, dst string
		setup    func(t *testing.T, e export)
		wantErr  string
	}{
		"destination not empty": {src: "src", dst: "dst", setup: func(t *testing.T, e export) { write(t, e.dst+"/x", "", 0o644) }, wantErr: "destination not empty"},
		"destination inside":    {src: "src", dst: "src/sub", wantErr: "lie inside one another"},
		"source inside":         {src: "dst/sub", dst: "dst", wantErr: "lie inside one another"},
		"same":                  {src: "src", dst: "src", wantErr: "lie inside one another"},
		"same through a link": {src: "src", dst: "alias", wantErr: "symbolic link",
			setup: func(t *testing.T, e export) { require.NoError(t, os.Symlink("src", e.root+"/alias")) }},
		"source is a link": {src: "alias", dst: "dst", wantErr: "symbolic link",
			setup: func(t *testing.T, e export) { require.NoError(t, os.Symlink("/etc", e.root+"/alias")) }},
		"link on the way": {src: "alias/x", dst: "dst", wantErr: "symbolic link",
			setup: func(t *testing.T, e export) { require.NoError(t, os.Symlink("/", e.root+"/alias")) }},
		"dot-dot":  {src: "src/../other", dst: "dst", wantErr: `segment ".." is not allowed`},
		"absolute": {src: "/etc", dst: "dst", wantErr: "not a relative path"},
		"empty":    {src: "", dst: "dst", wantErr: "empty path"},
		"missing":  {src: "nothing", dst: "dst", wantErr: "no such file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newExport(t)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			_, err := Copy(context.Background(), e.root, tc.src, tc.dst, Options{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestCopyLeavesMountPointsAndDevicesOut(t *testing.T) {
	t.Parallel()
	root(t)
	e := newExport(t)
	require.NoError(t, unix.Mknod(e.src+"/blk", unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	res, err := e.copy(t, Options{})
	require.NoError(t, err)
	assert.Equal(t, int64(1), res.Skipped)
	assert.Zero(t, res.Entries)
}

func TestCopyReadWriteFallback(t *testing.T) {
	t.Parallel()
	e := newExport(t)
	write(t, e.src+"/f", strings.Repeat("0123456789", 300000), 0o644)
	f, err := os.Create(e.src + "/sparse")
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("end"), 32<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	settle(t, e.src)
	res, err := e.copy(t, Options{hooks: &hooks{readWrite: true}})
	require.NoError(t, err)
	assertSameTree(t, e.src, e.dst)
	assert.Equal(t, int64(3000000+3), res.Bytes)
	assert.Less(t, blocks(t, e.dst+"/sparse"), int64(1024))
}

// TestCopyBoundedDescriptors counts the process's descriptors during a copy
// deeper than the window. Not parallel: it counts the whole process's.
func TestCopyBoundedDescriptors(t *testing.T) {
	e := newExport(t)
	p := e.src
	for i := range 100 {
		write(t, fmt.Sprintf("%s/f%d", p, i), "x", 0o644)
		p = fmt.Sprintf("%s/d%d", p, i)
	}
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		return len(ents)
	}
	base, most := fds(), 0
	const open = 8
	_, err := e.copy(t, Options{OpenLevels: open, hooks: &hooks{afterStat: func(string) { most = max(most, fds()) }}})
	require.NoError(t, err)
	// The hook runs after the lstat: a file's two descriptors aren't open
	// yet, and ReadDir holds one of its own.
	assert.LessOrEqual(t, most-base-1, 2*open, "descriptors held at once")
	assert.Greater(t, most-base-1, 2*open-4, "the window is used")
}
