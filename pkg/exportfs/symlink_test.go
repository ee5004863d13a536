package exportfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// planted says what a test puts at one position of the path.
type planted string

const (
	linkOutside  planted = "symlink to outside"        // absolute, to a populated directory outside the root
	linkSlash    planted = "symlink to /"              // absolute, to the real "/"
	linkInside   planted = "symlink inside"            // relative, to another tenant's populated directory in the root
	linkDangling planted = "dangling symlink"          // absolute, to a missing path outside the root
	linkRelUp    planted = "relative symlink up"       // "../..": climbs out of the root by a relative path
	fileInstead  planted = "file instead of dir"       // a regular file
	fifoInstead  planted = "named pipe instead of dir" // a FIFO, which must not be opened (it would block)
)

// fsOp is one FS method under attack.
type fsOp struct {
	name string
	call func(ctx context.Context, f *FS, rel string, mode os.FileMode) error
}

var attackedOps = []fsOp{
	{"MkdirAll", func(ctx context.Context, f *FS, rel string, mode os.FileMode) error {
		made, err := f.MkdirAll(ctx, rel, DirOptions{Mode: mode}, Existing{Any: true})
		if made.Created {
			return fmt.Errorf("created must be false on a refused path")
		}
		return err
	}},
	{"RemoveAll", func(ctx context.Context, f *FS, rel string, _ os.FileMode) error {
		return f.RemoveAll(ctx, rel)
	}},
	{"Rename", func(ctx context.Context, f *FS, rel string, _ os.FileMode) error {
		return f.Rename(ctx, rel, "renamed")
	}},
	{"Exists", func(ctx context.Context, f *FS, rel string, _ os.FileMode) error {
		ok, err := f.Exists(ctx, rel)
		if ok {
			return fmt.Errorf("exists must be false on a refused path")
		}
		return err
	}},
}

// TestPlantedAtEveryPosition plants a symbolic link (or a non-directory) at
// every position of a three-segment path and checks that every operation
// refuses it and changes nothing anywhere: not in the root, not outside it,
// not in "/".
func TestPlantedAtEveryPosition(t *testing.T) {
	t.Parallel()
	// Unique segment names, so a link to "/" can be checked for creations.
	var rnd [4]byte
	_, _ = unix.Getrandom(rnd[:], 0)
	suffix := fmt.Sprintf("%x", rnd)
	parts := []string{"exportfs-test-ns-" + suffix, "exportfs-test-app-" + suffix, "exportfs-test-pvc-" + suffix}

	kinds := []planted{linkOutside, linkSlash, linkInside, linkDangling, linkRelUp, fileInstead, fifoInstead}
	for _, op := range attackedOps {
		for pos := range parts {
			for _, kind := range kinds {
				t.Run(fmt.Sprintf("%s/position %d/%s", op.name, pos, kind), func(t *testing.T) {
					t.Parallel()
					if kind == linkSlash && op.name == "RemoveAll" {
						// Canary: never aim RemoveAll at "/" unless it has
						// just refused the same link aimed at a scratch
						// directory.
						checkPlanted(t, op, parts, pos, linkOutside)
						if t.Failed() {
							t.Fatal("RemoveAll followed a link to a scratch directory; not trying one to /")
						}
					}
					checkPlanted(t, op, parts, pos, kind)
				})
			}
		}
	}
}

func checkPlanted(t *testing.T, op fsOp, parts []string, pos int, kind planted) {
	t.Helper()
	e := newEnv(t)
	rel := strings.Join(parts, "/")
	// Real directories before the planted position.
	if pos > 0 {
		mkdirs(t, e.in(strings.Join(parts[:pos], "/")))
	}
	// A populated directory that the remainder of the path resolves to if the
	// link is followed: a successful attack would change, remove or rename it.
	populate := func(dir string) {
		leaf := filepath.Join(append([]string{dir}, parts[pos+1:]...)...)
		mkdirs(t, leaf)
		writeFiles(t, filepath.Join(leaf, "tenant-data"))
		require.NoError(t, os.Chmod(leaf, 0o711))
	}
	at := e.in(strings.Join(parts[:pos+1], "/"))
	mode := os.FileMode(0o777)
	switch kind {
	case linkOutside:
		populate(filepath.Join(e.outside, "mirror"))
		symlinks(t, filepath.Join(e.outside, "mirror"), at)
	case linkSlash:
		symlinks(t, "/", at)
		// Should the link be followed anyway, chmod "/" to what it has.
		fi, err := os.Stat("/")
		require.NoError(t, err)
		mode = fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSticky)
	case linkInside:
		other := e.in("other-tenant")
		populate(other)
		target, err := filepath.Rel(filepath.Dir(at), other)
		require.NoError(t, err)
		symlinks(t, target, at)
	case linkDangling:
		symlinks(t, filepath.Join(e.outside, "missing"), at)
	case linkRelUp:
		populate(filepath.Join(e.outside, "mirror"))
		symlinks(t, strings.Repeat("../", pos+1)+"outside/mirror", at)
	case fileInstead:
		writeFiles(t, at)
	case fifoInstead:
		require.NoError(t, unix.Mkfifo(at, 0o600))
	}

	before := snapshot(t, e.base)
	slash := snapshotSlash(t)
	err := op.call(context.Background(), e.fs, rel, mode)

	switch kind {
	case fileInstead, fifoInstead:
		require.ErrorIs(t, err, ErrNotDirectory)
		assert.NotErrorIs(t, err, ErrSymlink)
	default:
		require.ErrorIs(t, err, ErrSymlink)
		assert.NotErrorIs(t, err, ErrNotDirectory)
		assert.Contains(t, err.Error(), at+" is a symbolic link", "the message names the link")
	}
	assert.Contains(t, err.Error(), e.in(rel), "the message names the requested path")
	assert.Equal(t, before, snapshot(t, e.base), "nothing changes inside or outside the root")
	assert.Equal(t, slash, snapshotSlash(t), "/ is unchanged")
	for _, p := range parts[1:] {
		_, err := os.Lstat("/" + p)
		assert.ErrorIs(t, err, fs.ErrNotExist, "nothing is created in /")
	}
}

// TestSwapRace replaces a directory on the path by a symbolic link to outside
// the root and back, atomically and continuously, while the operations run:
// whatever interleaving happens, nothing outside changes.
func TestSwapRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mkdirs(t, e.in("x/sub/leaf"), filepath.Join(e.outside, "sub", "leaf"))
	writeFiles(t, filepath.Join(e.outside, "sub", "leaf", "keep"))
	symlinks(t, e.outside, e.in("y"))
	before := snapshot(t, e.outside)

	ctx := context.Background()
	rootfd, err := unix.Open(e.root, unix.O_PATH|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(rootfd)

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			// x <-> y: x is alternately the real directory and the link.
			_ = unix.Renameat2(rootfd, "x", rootfd, "y", unix.RENAME_EXCHANGE)
		}
	}()

	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	okErr := func(err error) bool {
		return err == nil || errorsIsAny(err, ErrSymlink, fs.ErrNotExist, fs.ErrExist, ErrNotDirectory) ||
			strings.Contains(err.Error(), "changed while") || strings.Contains(err.Error(), "was moved while")
	}
	for i := range iterations {
		_, err := e.fs.MkdirAll(ctx, "x/sub/leaf", DirOptions{Mode: 0o700}, Existing{Any: true})
		assert.True(t, okErr(err), "MkdirAll: %v", err)
		_, err = e.fs.MkdirAll(ctx, fmt.Sprintf("x/sub/new-%d", i), DirOptions{Mode: 0o700}, Existing{})
		assert.True(t, okErr(err), "MkdirAll new: %v", err)
		err = e.fs.Rename(ctx, fmt.Sprintf("x/sub/new-%d", i), fmt.Sprintf("renamed-%d", i))
		assert.True(t, okErr(err), "Rename: %v", err)
		err = e.fs.RemoveAll(ctx, "x/sub")
		assert.True(t, okErr(err), "RemoveAll: %v", err)
		_, err = e.fs.Exists(ctx, "x/sub/leaf")
		assert.True(t, okErr(err), "Exists: %v", err)
	}
	stop.Store(true)
	wg.Wait()
	assert.Equal(t, before, snapshot(t, e.outside))
}

func errorsIsAny(err error, targets ...error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
