package exportfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The provisioner's defaults: --fs-timeout, and the library's deletion
// timeout (pkg/app).
const (
	defaultFSTimeout       = 30 * time.Second
	defaultDeletionTimeout = 10 * defaultFSTimeout
)

// countEntries counts the entries below dir (dir excluded), without paths,
// as a deep tree's paths exceed PATH_MAX. A missing dir has none.
func countEntries(t testing.TB, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0
	}
	require.NoError(t, err)
	return countFrom(t, fd)
}

func countFrom(t testing.TB, fd int) int {
	defer unix.Close(fd)
	buf := make([]byte, 8<<10)
	n := 0
	for {
		m, err := unix.Getdents(fd, buf)
		require.NoError(t, err)
		if m == 0 {
			return n
		}
		for off := 0; ; {
			name, typ, next, ok := nextDirent(buf, off, m)
			if !ok {
				break
			}
			off = next
			n++
			if typ == unix.DT_DIR {
				sub, err := openatName(fd, name, readFlags)
				require.NoError(t, err)
				n += countFrom(t, sub)
			}
		}
	}
}

func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// TestRemoveAllDeep removes a tree 15,000 levels deep of 255-byte names (a
// path of 3.8 MB) within the provisioner's default timeouts, and checks that
// descriptors are not held per level. It does not run in parallel, so that
// the descriptors it counts are its own.
func TestRemoveAllDeep(t *testing.T) {
	depth := 15000
	if testing.Short() {
		depth = 1000
	}
	e := newEnv(t)
	f := New(e.root, defaultFSTimeout)
	name := strings.Repeat("d", maxNameLen)
	mkdirs(t, e.in("pvc"))
	buildDeep(t, e.in("pvc"), depth, name)
	// Files and a side directory every 1000 levels.
	fd, err := unix.Open(e.in("pvc"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	for i := range depth {
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		unix.Close(fd)
		fd = next
		if i%1000 == 0 {
			require.NoError(t, unix.Mkdirat(fd, "side", 0o755))
			file, err := unix.Openat(fd, "file", unix.O_CREAT|unix.O_WRONLY, 0o644)
			require.NoError(t, err)
			unix.Close(file)
		}
	}
	unix.Close(fd)

	base := openFDs(t)
	var steps, most atomic.Int64
	f.onStep = func() {
		if steps.Add(1)%512 == 0 {
			if n := int64(openFDs(t)); n > most.Load() {
				most.Store(n)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultDeletionTimeout)
	defer cancel()
	start := time.Now()
	require.NoError(t, f.RemoveAll(ctx, "pvc"))
	t.Logf("removed %d levels in %s, %d steps, fds %d to %d", depth, time.Since(start), steps.Load(), base, most.Load())
	assert.NoFileExists(t, e.in("pvc"))
	entries, err := os.ReadDir(e.root)
	require.NoError(t, err)
	assert.Empty(t, entries)
	// The root, the parent and maxLevels+1 levels, one more for reading
	// /proc/self/fd: a few, not one per level.
	assert.LessOrEqual(t, most.Load()-int64(base), int64(16), "descriptors held")
}

// TestRemoveAllSwappedForLink replaces a directory by a symbolic link to
// outside between the removal reading its name and opening it: the link is
// removed, not followed.
func TestRemoveAllSwappedForLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mkdirs(t, e.in("pvc/d"))
	symlinks(t, e.outside, e.in("pvc/l"))
	outside := snapshot(t, e.outside)
	var steps atomic.Int64
	e.fs.onStep = func() {
		// Step 1 opens pvc, step 2 reads its entries.
		if steps.Add(1) == 2 {
			assert.NoError(t, unix.Renameat2(unix.AT_FDCWD, e.in("pvc/d"), unix.AT_FDCWD, e.in("pvc/l"), unix.RENAME_EXCHANGE))
		}
	}
	require.NoError(t, e.fs.RemoveAll(context.Background(), "pvc"))
	assert.NoFileExists(t, e.in("pvc"))
	assert.Equal(t, outside, snapshot(t, e.outside))
}

// TestRemoveAllResumes cancels a removal midway: what it removed stays
// removed, and the next attempt finishes.
func TestRemoveAllResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mkdirs(t, e.in("pvc"), e.in("sibling"))
	writeFiles(t, e.in("sibling/f"))
	total := buildSpread(t, e.in("pvc"), 2, 10, 20) + buildDeep(t, e.in("pvc"), 50, "deep")
	require.Equal(t, total, countEntries(t, e.in("pvc")))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var steps atomic.Int64
	e.fs.onStep = func() {
		if steps.Add(1) == 300 {
			cancel()
		}
	}
	err := e.fs.RemoveAll(ctx, "pvc")
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "after removing")
	assert.Contains(t, err.Error(), "the next attempt goes on from there")
	left := countEntries(t, e.in("pvc"))
	assert.Greater(t, left, 0)
	assert.Less(t, left, total-100, "progress was kept")

	// A fresh FS: the stopped work may still read the hook.
	require.NoError(t, New(e.root, defaultFSTimeout).RemoveAll(context.Background(), "pvc"))
	assert.NoDirExists(t, e.in("pvc"))
	assert.FileExists(t, e.in("sibling/f"))
}

// TestRemoveAllStepTimeout checks that the FS timeout bounds each step of a
// removal, not the whole of it.
func TestRemoveAllStepTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	t.Run("slow but steady", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		// Its own timeout, far above a step even on a loaded machine.
		const timeout = 500 * time.Millisecond
		f := New(e.root, timeout)
		mkdirs(t, e.in("pvc"))
		buildSpread(t, e.in("pvc"), 2, 5, 10)
		// Each system call takes 5 ms, as on a slow export; the whole
		// removal takes several timeouts.
		f.onStep = func() { time.Sleep(5 * time.Millisecond) }
		start := time.Now()
		require.NoError(t, f.RemoveAll(context.Background(), "pvc"))
		assert.Greater(t, time.Since(start), 2*timeout)
		assert.NoDirExists(t, e.in("pvc"))
	})
	t.Run("hangs midway", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		f := New(e.root, timeout)
		mkdirs(t, e.in("pvc"))
		buildSpread(t, e.in("pvc"), 2, 5, 10)
		block := make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(block) }) }
		t.Cleanup(release)
		var steps atomic.Int64
		f.onStep = func() {
			if steps.Add(1) == 50 {
				<-block
			}
		}
		start := time.Now()
		err := f.RemoveAll(context.Background(), "pvc")
		require.ErrorIs(t, err, ErrTimeout)
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.Contains(t, err.Error(), "no answer within 100ms after removing")
		assert.Contains(t, err.Error(), "may be hung or unreachable")
		release()
		require.Eventually(t, func() bool { return len(f.slots) == 0 && len(f.removals) == 0 }, 5*time.Second, time.Millisecond)
		// A fresh FS: the abandoned work may still read the hooks.
		require.NoError(t, New(e.root, timeout).RemoveAll(context.Background(), "pvc"))
		assert.NoDirExists(t, e.in("pvc"))
	})
}

// TestRemoveAllTenantRenames has a tenant move directories around inside its
// volume, and swap one with a link to outside, while the volume is removed:
// nothing outside changes and the removal completes.
func TestRemoveAllTenantRenames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mkdirs(t, e.in("sibling"))
	writeFiles(t, e.in("sibling/f"))
	vol := e.in("pvc")
	mkdirs(t, vol)
	buildSpread(t, vol, 3, 6, 5)
	buildDeep(t, e.in("pvc/dir-0"), 40, "deep")
	mkdirs(t, e.in("pvc/swap"))
	symlinks(t, e.outside, e.in("pvc/link"))
	outside := snapshot(t, e.outside)
	sibling := snapshot(t, e.in("sibling"))

	volfd, err := unix.Open(vol, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(volfd)
	var stop atomic.Bool
	var renamed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(1, 2))
		for i := 0; !stop.Load(); i++ {
			// Move a random directory into another random one, or back up.
			var dirs []string
			_ = filepath.WalkDir(vol, func(p string, d fs.DirEntry, err error) error {
				switch {
				case err != nil:
				case p == e.in("pvc/swap") || p == e.in("pvc/link"):
					// The other goroutine swaps these: paths through
					// them could lead the test itself outside.
					return filepath.SkipDir
				case d.IsDir() && p != vol && len(dirs) < 200:
					dirs = append(dirs, p)
				}
				return nil
			})
			if len(dirs) < 2 {
				continue
			}
			from, to := dirs[rnd.IntN(len(dirs))], dirs[rnd.IntN(len(dirs))]
			if i%3 == 0 {
				to = vol
			}
			if os.Rename(from, filepath.Join(to, filepath.Base(from)+"-m")) == nil {
				renamed.Add(1)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for !stop.Load() {
			_ = unix.Renameat2(volfd, "swap", volfd, "link", unix.RENAME_EXCHANGE)
		}
	}()

	// Yield at every step, so that the renames interleave with the removal.
	e.fs.onStep = runtime.Gosched
	var err2 error
	for range 20 {
		if err2 = e.fs.RemoveAll(context.Background(), "pvc"); err2 == nil {
			break
		}
		t.Logf("attempt: %v", err2)
	}
	stop.Store(true)
	wg.Wait()
	require.NoError(t, err2)
	assert.Positive(t, renamed.Load(), "the tenant renamed while the removal ran")
	assert.NoFileExists(t, vol)
	assert.Equal(t, outside, snapshot(t, e.outside))
	assert.Equal(t, sibling, snapshot(t, e.in("sibling")))
}

// TestRemoveAllMovedOut moves the directory being removed out of the volume
// midway (which only someone with access outside the volume can do): the
// removal never touches anything that was outside.
func TestRemoveAllMovedOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mkdirs(t, e.in("sibling"))
	writeFiles(t, e.in("sibling/f"))
	mkdirs(t, e.in("pvc"))
	buildSpread(t, e.in("pvc"), 3, 3, 10)
	outside := snapshot(t, e.outside)
	sibling := snapshot(t, e.in("sibling"))

	var steps atomic.Int64
	moved := ""
	e.fs.onStep = func() {
		if steps.Add(1) != 20 {
			return
		}
		// Move out the directory below pvc that the removal is in.
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			p, _ := os.Readlink("/proc/self/fd/" + fd.Name())
			if rest, ok := strings.CutPrefix(p, e.in("pvc")+"/"); ok && moved == "" {
				moved = strings.Split(rest, "/")[0]
			}
		}
		assert.NoError(t, os.Rename(e.in("pvc/"+moved), filepath.Join(e.outside, "moved")))
	}
	require.NoError(t, e.fs.RemoveAll(context.Background(), "pvc"))
	require.NotEmpty(t, moved, "the removal was below pvc at step 20")
	assert.NoFileExists(t, e.in("pvc"))
	after := snapshot(t, e.outside)
	for p := range after {
		if p == "moved" || strings.HasPrefix(p, "moved/") {
			delete(after, p) // what came from the volume
		}
	}
	// The rename into outside changed its times, not its identity.
	assert.Equal(t, outside["."].Ino, after["."].Ino)
	delete(outside, ".")
	delete(after, ".")
	assert.Equal(t, outside, after)
	assert.Equal(t, sibling, snapshot(t, e.in("sibling")))
}

// mount mounts a tmpfs (source "") or binds source at dir. On cleanup, it
// unmounts whatever is mounted below base, wherever the mount moved.
func mount(t *testing.T, base, source, dir string) {
	t.Helper()
	var err error
	if source == "" {
		err = unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m")
	} else {
		err = unix.Mount(source, dir, "", unix.MS_BIND, "")
	}
	if errors.Is(err, unix.EPERM) {
		t.Skip("mounting needs CAP_SYS_ADMIN")
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, m := range mountsBelow(t, base) {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	})
}

// mountsBelow lists the mount points below dir, from /proc/self/mountinfo.
func mountsBelow(t testing.TB, dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestRemoveAllMountPoints mounts filesystems below a volume: RemoveAll
// never descends into them, removes everything else and names them.
func TestRemoveAllMountPoints(t *testing.T) {
	if !isRoot() {
		t.Skip("mounting needs root")
	}
	t.Parallel()
	tests := map[string]struct {
		source string // "" for a tmpfs
		at     string // below pvc
	}{
		"tmpfs":                              {at: "a/tmpfs"},
		"bind mount from outside":            {source: "outside", at: "b/bind"},
		"tmpfs below the deepest open level": {at: strings.Repeat("x/", maxLevels+3) + "tmpfs"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			mkdirs(t, e.in("pvc/"+tt.at), e.in("pvc/c/d"))
			writeFiles(t, e.in("pvc/c/d/f"), e.in("pvc/f"))
			source := tt.source
			if source == "outside" {
				source = e.outside
			}
			mount(t, e.base, source, e.in("pvc/"+tt.at))
			writeFiles(t, e.in("pvc/"+tt.at+"/kept"))
			outside := snapshot(t, e.outside)

			err := e.fs.RemoveAll(context.Background(), "pvc")
			require.Error(t, err)
			// A deep mount point may have moved up with the directory
			// holding it.
			mounts := mountsBelow(t, e.base)
			require.Len(t, mounts, 1)
			assert.FileExists(t, filepath.Join(mounts[0], "kept"), "not descended into")
			assert.Contains(t, err.Error(), mounts[0]+" is a mount point")
			assert.Contains(t, err.Error(), "unmount it, then retry")
			assert.NoDirExists(t, e.in("pvc/c"), "everything else removed")
			assert.NoFileExists(t, e.in("pvc/f"))
			after := snapshot(t, e.outside)
			delete(outside, "kept") // the bound directory is outside too
			delete(after, "kept")
			assert.Equal(t, outside, after)

			require.NoError(t, unix.Unmount(mounts[0], unix.MNT_DETACH))
			require.NoError(t, e.fs.RemoveAll(context.Background(), "pvc"))
			assert.NoFileExists(t, e.in("pvc"))
		})
	}
	t.Run("the volume itself", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		mkdirs(t, e.in("pvc"))
		mount(t, e.base, "", e.in("pvc"))
		writeFiles(t, e.in("pvc/kept"))
		err := e.fs.RemoveAll(context.Background(), "pvc")
		require.Error(t, err)
		assert.Contains(t, err.Error(), e.in("pvc")+" is a mount point")
		assert.FileExists(t, e.in("pvc/kept"))
	})
}

// TestRemovalsLeaveSlots fills the FS with removals that do not finish: the
// short operations still run, and the removals beyond maxRemovals wait.
func TestRemovalsLeaveSlots(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.root, 10*time.Second)
	block := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(block) }) }
	t.Cleanup(release)
	f.onStep = func() { <-block }

	const removals = maxStuck + 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, removals)
	for i := range removals {
		rel := fmt.Sprintf("pvc-%d", i)
		mkdirs(t, e.in(rel))
		go func() { errs <- f.RemoveAll(ctx, rel) }()
	}
	require.Eventually(t, func() bool { return len(f.removals) == maxRemovals && len(f.slots) == maxRemovals },
		5*time.Second, time.Millisecond)

	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort()
	_, err := f.MkdirAll(short, "new/pvc", DirOptions{Mode: 0o755}, Existing{Any: true})
	require.NoError(t, err)
	require.NoError(t, f.CheckWritable(short))
	assert.Len(t, f.removals, maxRemovals)

	// The waiting removals give up with their ctx, as do the running ones.
	cancel()
	waiting := 0
	for range removals {
		err := <-errs
		require.ErrorIs(t, err, context.Canceled)
		if strings.Contains(err.Error(), "still waiting for one of the 32 removals") {
			waiting++
		}
	}
	// Which removals were still waiting when ctx ended depends on timing.
	assert.Positive(t, waiting)
	release()
	require.Eventually(t, func() bool { return len(f.slots) == 0 && len(f.removals) == 0 }, 5*time.Second, time.Millisecond)
}

func TestShownPath(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 300) + "/" + strings.Repeat("z", 300)
	for in, want := range map[string]string{
		"a/b":          "a/b",
		"new\nline":    `new\nline`,
		"bad\xffutf8":  `bad\xffutf8`,
		`quote"slash\`: `quote\"slash\\`,
		long:           strings.Repeat("a", maxShownPath/3) + "..." + strings.Repeat("z", maxShownPath-maxShownPath/3),
	} {
		assert.Equal(t, want, shownPath([]byte(in)), "%.40q", in)
	}
}
