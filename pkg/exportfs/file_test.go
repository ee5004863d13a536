package exportfs

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOwnFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const rel = ".own/log"
	_, err := e.fs.ReadFile(ctx, rel)
	require.ErrorIs(t, err, fs.ErrNotExist)

	require.NoError(t, e.fs.AppendFile(ctx, rel, []byte("a\n")))
	require.NoError(t, e.fs.AppendFile(ctx, rel, []byte("b\n")))
	got, err := e.fs.ReadFile(ctx, rel)
	require.NoError(t, err)
	assert.Equal(t, "a\nb\n", string(got))
	fi, err := os.Lstat(e.in(".own"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o700, fi.Mode())

	require.NoError(t, e.fs.ReplaceFile(ctx, rel, []byte("c\n")))
	got, err = e.fs.ReadFile(ctx, rel)
	require.NoError(t, err)
	assert.Equal(t, "c\n", string(got))
	names, err := readDirNames(e.in(".own"))
	require.NoError(t, err)
	assert.Equal(t, []string{"log"}, names, "no temporary file left behind")
}

func TestOwnFilesMissingRoot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := New(e.in("not-mounted"), time.Second)
	_, err := f.ReadFile(context.Background(), ".own/log")
	require.ErrorContains(t, err, "check that the NFS export is mounted")
	assert.NotErrorIs(t, err, fs.ErrNotExist, "a missing root is not an empty file")
}

func TestOwnFilesRefuseOtherPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, rel := range []string{"log", "dir/log", ".own/sub/log", ".own"} {
		_, err := e.fs.ReadFile(ctx, rel)
		require.ErrorIs(t, err, ErrInvalidPath, rel)
		require.ErrorIs(t, e.fs.AppendFile(ctx, rel, []byte("x")), ErrInvalidPath, rel)
		require.ErrorIs(t, e.fs.ReplaceFile(ctx, rel, []byte("x")), ErrInvalidPath, rel)
	}
}

func TestOwnFilesNeverFollowLinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		require.NoError(t, os.Symlink(e.outside, e.in(".own")))
		before := snapshot(t, e.outside)
		require.ErrorIs(t, e.fs.AppendFile(ctx, ".own/secret", []byte("x")), ErrSymlink)
		require.ErrorIs(t, e.fs.ReplaceFile(ctx, ".own/secret", []byte("x")), ErrSymlink)
		_, err := e.fs.ReadFile(ctx, ".own/secret")
		require.ErrorIs(t, err, ErrSymlink)
		assert.Equal(t, before, snapshot(t, e.outside))
	})
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		require.NoError(t, os.Mkdir(e.in(".own"), 0o700))
		require.NoError(t, os.Symlink(filepath.Join(e.outside, "secret"), e.in(".own/log")))
		before := snapshot(t, e.outside)
		require.ErrorIs(t, e.fs.AppendFile(ctx, ".own/log", []byte("x")), ErrSymlink)
		_, err := e.fs.ReadFile(ctx, ".own/log")
		require.ErrorIs(t, err, ErrSymlink)
		assert.Equal(t, before, snapshot(t, e.outside))
	})
	t.Run("fifo", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		require.NoError(t, os.Mkdir(e.in(".own"), 0o700))
		require.NoError(t, syscall.Mkfifo(e.in(".own/log"), 0o600))
		_, err := e.fs.ReadFile(ctx, ".own/log")
		require.ErrorContains(t, err, "a named pipe, not a regular file")
	})
}

func TestMkdirAllExisting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	made, err := e.fs.MkdirAll(ctx, "ns/a/pvc", DirOptions{Mode: 0o777}, Existing{})
	require.NoError(t, err)
	assert.True(t, made.Created)
	assert.Equal(t, []string{"ns", "ns/a"}, made.Parents)
	assert.Equal(t, lstatNode(t, e.in("ns/a/pvc")).Ino, made.Ino)

	// An admin's directory: refused before anything about it changes.
	require.NoError(t, os.Mkdir(e.in("backups"), 0o700))
	require.NoError(t, os.WriteFile(e.in("backups/db"), []byte("x"), 0o600))
	before := snapshot(t, e.in("backups"))
	for name, existing := range map[string]Existing{"none": {}, "other inode": {Ino: made.Ino}} {
		_, err = e.fs.MkdirAll(ctx, "backups", DirOptions{Mode: 0o777}, existing)
		require.ErrorIs(t, err, fs.ErrExist, name)
		assert.Equal(t, before, snapshot(t, e.in("backups")), name)
	}

	// The directory made for this volume, by its inode; or any, if asked.
	again, err := e.fs.MkdirAll(ctx, "ns/a/pvc", DirOptions{Mode: 0o750}, Existing{Ino: made.Ino})
	require.NoError(t, err)
	assert.False(t, again.Created)
	assert.Empty(t, again.Parents)
	assert.Equal(t, os.ModeDir|0o750, lstatNode(t, e.in("ns/a/pvc")).Mode)
	_, err = e.fs.MkdirAll(ctx, "backups", DirOptions{Mode: 0o750}, Existing{Any: true})
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o750, lstatNode(t, e.in("backups")).Mode)
}

func TestRmdir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	mkdirs(t, e.in("ns/full"), e.in("ns/empty"))
	require.NoError(t, os.WriteFile(e.in("ns/full/f"), []byte("x"), 0o600))
	require.NoError(t, os.Symlink(e.outside, e.in("link")))

	require.NoError(t, e.fs.Rmdir(ctx, "ns/empty"))
	assert.NoDirExists(t, e.in("ns/empty"))
	require.ErrorIs(t, e.fs.Rmdir(ctx, "ns/empty"), fs.ErrNotExist)
	require.ErrorIs(t, e.fs.Rmdir(ctx, "ns/full"), fs.ErrExist)
	assert.FileExists(t, e.in("ns/full/f"))
	require.ErrorIs(t, e.fs.Rmdir(ctx, "link"), ErrSymlink)
	require.ErrorIs(t, e.fs.Rmdir(ctx, "link/sub"), ErrSymlink)
	assert.DirExists(t, e.outside)
}
