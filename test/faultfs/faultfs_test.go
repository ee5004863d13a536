package faultfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestMain fails the run if any test left a faultfs mounted.
func TestMain(m *testing.M) {
	code := m.Run()
	left, err := Mounts()
	if err != nil {
		fmt.Fprintf(os.Stderr, "reading /proc/self/mountinfo: %v\n", err)
		code = 1
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "faultfs mounts left behind: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// mount mounts a loopback of a new temporary directory.
func mount(t *testing.T) *FS {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "backing")
	require.NoError(t, os.Mkdir(backing, 0o755))
	return Mount(t, backing, Options{})
}

// inBackground runs fn in a goroutine and returns a channel with its error.
func inBackground(fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	return done
}

func waitDone(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still blocked after 10s", what)
		return nil
	}
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLoopback(t *testing.T) {
	f := mount(t)
	require.NoError(t, os.MkdirAll(filepath.Join(f.Dir, "a", "b"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(f.Dir, "a", "b", "file"), []byte("data"), 0o640))
	data, err := os.ReadFile(filepath.Join(f.Backing, "a", "b", "file"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(data))

	require.NoError(t, os.Rename(filepath.Join(f.Dir, "a", "b"), filepath.Join(f.Dir, "a", "c")))
	assert.DirExists(t, filepath.Join(f.Backing, "a", "c"))
	// RENAME_NOREPLACE reaches the backing directory: the target appears
	// there after the kernel looked it up (and found nothing), while the
	// rename is held.
	h := f.Hang(Match{Ops: []Op{OpRename}})
	done := inBackground(func() error {
		return unix.Renameat2(unix.AT_FDCWD, filepath.Join(f.Dir, "a", "c"), unix.AT_FDCWD, filepath.Join(f.Dir, "a", "d"), unix.RENAME_NOREPLACE)
	})
	require.NoError(t, h.WaitBlocked(timeout(t), 1))
	require.NoError(t, os.Mkdir(filepath.Join(f.Backing, "a", "d"), 0o755))
	h.Clear()
	assert.ErrorIs(t, waitDone(t, done, "rename"), syscall.EEXIST)
	assert.DirExists(t, filepath.Join(f.Backing, "a", "c"))

	entries, err := os.ReadDir(filepath.Join(f.Dir, "a"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{"c", "d"}, names)

	// The mode is the caller's, minus only the caller's umask.
	old := unix.Umask(0)
	err = os.Mkdir(filepath.Join(f.Dir, "open"), 0o777)
	unix.Umask(old)
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(f.Backing, "open"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o777), fi.Mode().Perm())

	require.NoError(t, os.RemoveAll(filepath.Join(f.Dir, "a")))
	assert.NoDirExists(t, filepath.Join(f.Backing, "a"))
}

func TestHang(t *testing.T) {
	f := mount(t)
	require.NoError(t, os.Mkdir(filepath.Join(f.Backing, "slow"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(f.Backing, "fast"), 0o755))

	t.Run("every call", func(t *testing.T) {
		h := f.Hang(Match{})
		done := inBackground(func() error { _, err := os.Stat(filepath.Join(f.Dir, "fast")); return err })
		require.NoError(t, h.WaitBlocked(timeout(t), 1))
		select {
		case err := <-done:
			t.Fatalf("stat returned (%v) while hung", err)
		default:
		}
		h.Clear()
		assert.NoError(t, waitDone(t, done, "stat after release"))
		assert.Zero(t, h.Blocked())
	})

	t.Run("one prefix", func(t *testing.T) {
		h := f.Hang(Match{Path: "slow"})
		defer h.Clear()
		done := inBackground(func() error { return os.Mkdir(filepath.Join(f.Dir, "slow", "x"), 0o755) })
		require.NoError(t, h.WaitBlocked(timeout(t), 1))
		// Calls elsewhere go on.
		require.NoError(t, os.Mkdir(filepath.Join(f.Dir, "fast", "x"), 0o755))
		_, err := os.Stat(filepath.Join(f.Dir, "fast", "x"))
		require.NoError(t, err)
		select {
		case err := <-done:
			t.Fatalf("mkdir below the hung prefix returned (%v)", err)
		default:
		}
		assert.NoDirExists(t, filepath.Join(f.Backing, "slow", "x"))
		h.Clear()
		assert.NoError(t, waitDone(t, done, "mkdir after release"))
		assert.DirExists(t, filepath.Join(f.Backing, "slow", "x"))
	})
}

func TestMatch(t *testing.T) {
	for name, c := range map[string]struct {
		m     Match
		op    Op
		paths []string
		want  bool
	}{
		"zero matches all":     {Match{}, OpLookup, []string{""}, true},
		"op selected":          {Match{Ops: []Op{OpMkdir, OpRmdir}}, OpRmdir, []string{"a"}, true},
		"op not selected":      {Match{Ops: []Op{OpMkdir}}, OpLookup, []string{"a"}, false},
		"path itself":          {Match{Path: "a/b"}, OpLookup, []string{"a/b"}, true},
		"below path":           {Match{Path: "a/b"}, OpLookup, []string{"a/b/c"}, true},
		"sibling with prefix":  {Match{Path: "a/b"}, OpLookup, []string{"a/bc"}, false},
		"parent":               {Match{Path: "a/b"}, OpLookup, []string{"a"}, false},
		"root":                 {Match{Path: "a"}, OpStatfs, []string{""}, false},
		"rename's new name":    {Match{Path: "z"}, OpRename, []string{"a", "z/y"}, true},
		"op and path, op miss": {Match{Ops: []Op{OpMkdir}, Path: "a"}, OpLookup, []string{"a"}, false},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, c.want, c.m.matches(c.op, c.paths))
		})
	}
}

func TestFail(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC, syscall.ESTALE, syscall.EACCES} {
		t.Run(errno.Error(), func(t *testing.T) {
			f := mount(t)
			require.NoError(t, os.Mkdir(filepath.Join(f.Backing, "d"), 0o755))

			// Selected operations: mkdir fails, stat and rmdir don't.
			ft := f.Fail(errno, Match{Ops: []Op{OpMkdir}})
			err := os.Mkdir(filepath.Join(f.Dir, "d", "new"), 0o755)
			assert.ErrorIs(t, err, errno)
			assert.NoDirExists(t, filepath.Join(f.Backing, "d", "new"))
			_, err = os.Stat(filepath.Join(f.Dir, "d"))
			assert.NoError(t, err)
			// The kernel retries a path walk that met ESTALE once,
			// revalidating every component (retry_estale).
			wantHits := int64(1)
			if errno == syscall.ESTALE {
				wantHits = 2
			}
			assert.Equal(t, wantHits, ft.Hits())
			ft.Clear()
			require.NoError(t, os.Mkdir(filepath.Join(f.Dir, "d", "new"), 0o755))

			// Every call, below a prefix.
			ft = f.Fail(errno, Match{Path: "d/new"})
			_, err = os.Stat(filepath.Join(f.Dir, "d", "new"))
			assert.ErrorIs(t, err, errno)
			assert.ErrorIs(t, os.Remove(filepath.Join(f.Dir, "d", "new")), errno)
			_, err = os.Stat(filepath.Join(f.Dir, "d"))
			assert.NoError(t, err)
			ft.Clear()

			// Every call.
			ft = f.Fail(errno, Match{})
			_, err = os.ReadDir(filepath.Join(f.Dir, "d"))
			assert.ErrorIs(t, err, errno)
			err = os.WriteFile(filepath.Join(f.Dir, "file"), nil, 0o644)
			assert.ErrorIs(t, err, errno)
			ft.Clear()
			require.NoError(t, os.Remove(filepath.Join(f.Dir, "d", "new")))
			assert.NoDirExists(t, filepath.Join(f.Backing, "d", "new"))
		})
	}

	t.Run("write of a full export", func(t *testing.T) {
		f := mount(t)
		full := f.Fail(syscall.ENOSPC, Match{Ops: Allocating})
		fd, err := os.OpenFile(filepath.Join(f.Dir, "file"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		assert.ErrorIs(t, err, syscall.ENOSPC)
		if err == nil {
			fd.Close()
		}
		full.Clear()
		fd, err = os.OpenFile(filepath.Join(f.Dir, "file"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		require.NoError(t, err)
		defer fd.Close()
		full = f.Fail(syscall.ENOSPC, Match{Ops: []Op{OpWrite}})
		defer full.Clear()
		_, err = fd.Write([]byte("x"))
		assert.ErrorIs(t, err, syscall.ENOSPC)
	})
}

func TestDelay(t *testing.T) {
	f := mount(t)
	const delay = 200 * time.Millisecond
	mkdir := func(name string) time.Duration {
		start := time.Now()
		require.NoError(t, os.Mkdir(filepath.Join(f.Dir, name), 0o755))
		return time.Since(start)
	}
	before := mkdir("before")
	d := f.Delay(delay, Match{Ops: []Op{OpMkdir}})
	during := mkdir("during")
	d.Clear()
	after := mkdir("after")
	t.Logf("mkdir took %v before, %v with a %v delay, %v after", before, during, delay, after)
	assert.GreaterOrEqual(t, during, delay)
	assert.Less(t, before, delay)
	assert.Less(t, after, delay)
	assert.Equal(t, int64(1), d.Hits())
}

func TestRootSquash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("root_squash maps uid 0: run as root")
	}
	// Give the process a supplementary group, which the workers inherit,
	// to see that a squashed caller does not keep it.
	groups, err := unix.Getgroups()
	require.NoError(t, err)
	const rootGroup = 4242
	require.NoError(t, syscall.Setgroups(append([]int{rootGroup}, groups...)))
	t.Cleanup(func() { require.NoError(t, syscall.Setgroups(groups)) })

	f := mount(t)
	for name, mode := range map[string]os.FileMode{"locked": 0o755, "group": 0o775, "open": 0o777} {
		require.NoError(t, os.Mkdir(filepath.Join(f.Backing, name), mode))
		require.NoError(t, os.Chmod(filepath.Join(f.Backing, name), mode))
	}
	require.NoError(t, os.Chown(filepath.Join(f.Backing, "group"), 0, rootGroup))
	require.NoError(t, os.WriteFile(filepath.Join(f.Backing, "file"), nil, 0o644))

	restore := f.RootSquash(Nobody)
	err = os.Chown(filepath.Join(f.Dir, "file"), 1000, 1000)
	assert.ErrorIs(t, err, syscall.EPERM, "chown as squashed root")
	err = os.Chmod(filepath.Join(f.Dir, "file"), 0o600)
	assert.ErrorIs(t, err, syscall.EPERM, "chmod of root's file as squashed root")
	err = os.Mkdir(filepath.Join(f.Dir, "locked", "x"), 0o755)
	assert.ErrorIs(t, err, syscall.EACCES, "mkdir in root's 0755 directory")
	// Root's supplementary groups are gone too.
	err = os.Mkdir(filepath.Join(f.Dir, "group", "x"), 0o755)
	assert.ErrorIs(t, err, syscall.EACCES, "mkdir in a 0775 directory of one of root's groups")
	assert.ErrorIs(t, unix.Access(filepath.Join(f.Dir, "locked"), unix.W_OK), syscall.EACCES)

	require.NoError(t, os.Mkdir(filepath.Join(f.Dir, "open", "x"), 0o755))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(f.Backing, "open", "x"), &st))
	assert.Equal(t, Nobody.UID, st.Uid)
	assert.Equal(t, Nobody.GID, st.Gid)
	// The owner may chown to itself and chmod; not give it away.
	require.NoError(t, os.Chmod(filepath.Join(f.Dir, "open", "x"), 0o700))
	assert.NoError(t, os.Chown(filepath.Join(f.Dir, "open", "x"), int(Nobody.UID), int(Nobody.GID)))
	assert.ErrorIs(t, os.Chown(filepath.Join(f.Dir, "open", "x"), 0, 0), syscall.EPERM)

	restore()
	require.NoError(t, os.Chown(filepath.Join(f.Dir, "file"), 1000, 1000))
	require.NoError(t, os.Mkdir(filepath.Join(f.Dir, "locked", "x"), 0o755))
	require.NoError(t, unix.Stat(filepath.Join(f.Backing, "locked", "x"), &st))
	assert.Equal(t, uint32(0), st.Uid)
}

// TestUnmountedAtEnd: a test that ends with a call hung, or with a file open
// on the mount, leaves nothing mounted and no caller blocked.
func TestUnmountedAtEnd(t *testing.T) {
	var dir string
	var done <-chan error
	t.Run("hung", func(t *testing.T) {
		f := mount(t)
		dir = f.Dir
		h := f.Hang(Match{})
		done = inBackground(func() error { _, err := os.Stat(filepath.Join(f.Dir, "x")); return err })
		require.NoError(t, h.WaitBlocked(timeout(t), 1))
	})
	err := waitDone(t, done, "stat hung when the test ended")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	mounted, err := Mounted(dir)
	require.NoError(t, err)
	assert.False(t, mounted, "%s still mounted", dir)

	var closed <-chan error
	t.Run("busy", func(t *testing.T) {
		f := mount(t)
		dir = f.Dir
		fd, err := os.Open(f.Dir)
		require.NoError(t, err)
		// Closed once the mount is detached, so its server can end.
		closed = inBackground(func() error {
			for {
				if m, err := Mounted(f.Dir); err != nil || !m {
					return errors.Join(err, fd.Close())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	})
	assert.NoError(t, waitDone(t, closed, "detach of the busy mount"))
	mounted, err = Mounted(dir)
	require.NoError(t, err)
	assert.False(t, mounted, "%s still mounted", dir)
}

// TestEveryLoopbackMethodOverridden: a LoopbackNode method reached through
// embedding would resolve its relative path against the process's working
// directory, not the backing directory.
func TestEveryLoopbackMethodOverridden(t *testing.T) {
	inode := map[string]bool{}
	for i := range reflect.TypeFor[*gofs.Inode]().NumMethod() {
		inode[reflect.TypeFor[*gofs.Inode]().Method(i).Name] = true
	}
	var promoted []string
	lt, nt := reflect.TypeFor[*gofs.LoopbackNode](), reflect.TypeFor[*node]()
	for i := range lt.NumMethod() {
		name := lt.Method(i).Name
		if inode[name] {
			continue
		}
		m, ok := nt.MethodByName(name)
		require.True(t, ok, name)
		file, _ := runtime.FuncForPC(m.Func.Pointer()).FileLine(m.Func.Pointer())
		if !strings.HasSuffix(file, "/faultfs/node.go") {
			promoted = append(promoted, name+" ("+file+")")
		}
	}
	sort.Strings(promoted)
	assert.Empty(t, promoted, "LoopbackNode methods node does not override")
}
