package exportfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzMkdirAllConfined runs MkdirAll and RemoveAll on arbitrary paths in a
// root full of planted symbolic links and checks that nothing outside the
// root changes and that every error is a documented one.
//
// The links never point at "/" or anywhere outside the test's temporary
// directory, so a regression cannot damage the machine running the fuzzer.
func FuzzMkdirAllConfined(f *testing.F) {
	for _, seed := range []string{
		"pvc", "ns/pvc", "a/b/c", "a/b", "a",
		"link", "link/pvc", "link/sub", "link/sub/data",
		"a/up", "a/up/outside", "a/up/a", "a/out", "a/out/sub",
		"rel", "rel/sub", "dangling", "dangling/x", "self", "self/self/x",
		"other", "other/b", "file", "file/x", "a/file/x",
		"", ".", "..", "../outside", "a/../../outside", "/etc", "/", "a//b", "a/", "a/./b",
		"a\x00b", strings.Repeat("x", 256), strings.Repeat("d/", 100) + "leaf",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		e := newEnv(t)
		mkdirs(t, e.in("a/b"))
		writeFiles(t, e.in("file"), e.in("a/file"))
		symlinks(t,
			e.outside, e.in("link"), // absolute, outside
			"..", e.in("a/up"), // relative, to the root
			"../../outside", e.in("a/out"), // relative, outside
			"../outside", e.in("rel"), // relative, outside
			filepath.Join(e.outside, "missing"), e.in("dangling"), // dangling, outside
			".", e.in("self"), // loop
			"a", e.in("other"), // inside
		)
		outside := snapshot(t, e.outside)
		rootNode := lstatNode(t, e.root)
		baseNames, err := readDirNames(e.base)
		require.NoError(t, err)

		ctx := context.Background()
		documented := func(err error) bool {
			return err == nil || errors.Is(err, ErrInvalidPath) || errors.Is(err, ErrSymlink) || errors.Is(err, ErrNotDirectory)
		}

		made, err := e.fs.MkdirAll(ctx, rel, DirOptions{Mode: 0o700}, Existing{Any: true})
		require.True(t, documented(err), "MkdirAll(%q): undocumented error %v", rel, err)
		if err == nil {
			requireRealDirs(t, e.root, rel)
			ok, err := e.fs.Exists(ctx, rel)
			require.NoError(t, err)
			require.True(t, ok)
		} else {
			require.False(t, made.Created)
		}

		err = e.fs.RemoveAll(ctx, rel)
		require.True(t, documented(err), "RemoveAll(%q): undocumented error %v", rel, err)
		if err == nil {
			ok, err := e.fs.Exists(ctx, rel)
			if err == nil {
				require.False(t, ok, "RemoveAll(%q) left it behind", rel)
			}
		}

		assert.Equal(t, outside, snapshot(t, e.outside), "outside changed for %q", rel)
		root := lstatNode(t, e.root)
		assert.Equal(t, rootNode.Mode, root.Mode, "root mode changed for %q", rel)
		assert.Equal(t, rootNode.UID, root.UID)
		assert.Equal(t, rootNode.GID, root.GID)
		names, err := readDirNames(e.base)
		require.NoError(t, err)
		assert.Equal(t, baseNames, names, "entries appeared beside the root for %q", rel)
	})
}

// requireRealDirs checks that every component of rel below root is a real
// directory, not a symbolic link.
func requireRealDirs(t *testing.T, root, rel string) {
	t.Helper()
	p := root
	for _, part := range strings.Split(rel, "/") {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		require.NoError(t, err)
		require.True(t, fi.IsDir(), "%s is %v", p, fi.Mode())
	}
}
