package clone

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// export is a temp-dir export with src (to fill) and an empty dst.
type export struct {
	root, src, dst string
}

func newExport(t testing.TB) export {
	t.Helper()
	root := t.TempDir()
	e := export{root: root, src: filepath.Join(root, "src"), dst: filepath.Join(root, "dst")}
	require.NoError(t, os.Mkdir(e.src, 0o755))
	require.NoError(t, os.Mkdir(e.dst, 0o700))
	return e
}

func (e export) copy(t testing.TB, opts Options) (Result, error) {
	t.Helper()
	return Copy(context.Background(), e.root, "src", "dst", opts)
}

func write(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
	require.NoError(t, os.Chmod(path, mode))
}

// settle gives every entry below dir distinct times, atimes in the future
// (after mtime and ctime), so that reading the source during the copy
// doesn't move them (relatime) and the comparison can be exact.
func settle(t testing.TB, dir string) {
	t.Helper()
	base := time.Now().Add(-3 * time.Hour)
	i := 0
	require.NoError(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		i++
		m := base.Add(time.Duration(i) * time.Second).Add(123456789)
		ts := []unix.Timespec{unix.NsecToTimespec(m.Add(5 * time.Hour).UnixNano()), unix.NsecToTimespec(m.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// entryInfo is what a faithful copy keeps of an entry.
type entryInfo struct {
	mode, uid, gid uint32
	size           int64
	atime, mtime   unix.Timespec
	target, data   string
}

// tree reads every entry below dir, and the groups of hard-linked paths.
func tree(t testing.TB, dir string) (map[string]entryInfo, [][]string) {
	t.Helper()
	out := map[string]entryInfo{}
	byIno := map[uint64][]string{}
	require.NoError(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		e := entryInfo{mode: st.Mode, uid: st.Uid, gid: st.Gid, atime: st.Atim, mtime: st.Mtim}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.size = st.Size
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			e.data = string(b)
		case unix.S_IFLNK:
			e.target, err = os.Readlink(p)
			require.NoError(t, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			byIno[st.Ino] = append(byIno[st.Ino], rel)
		}
		out[rel] = e
		return nil
	}))
	var groups [][]string
	for _, g := range byIno {
		groups = append(groups, g)
	}
	return out, groups
}

// assertSameTree checks that dst is a faithful copy of src, save what
// skip names.
func assertSameTree(t testing.TB, src, dst string, skip ...string) {
	t.Helper()
	want, wantLinks := tree(t, src)
	got, gotLinks := tree(t, dst)
	for _, s := range skip {
		delete(want, s)
	}
	require.Equal(t, len(want), len(got), "entries")
	for rel, w := range want {
		g, ok := got[rel]
		if !assert.True(t, ok, "missing %s", rel) {
			continue
		}
		// Reading the data for the comparison moves atimes afterwards;
		// tree reads src first, then dst, and both read times first.
		assert.Equal(t, w, g, "%s", rel)
	}
	norm := func(gs [][]string) []string {
		var out []string
		for _, g := range gs {
			out = append(out, strings.Join(sorted(g), ","))
		}
		return sorted(out)
	}
	assert.Equal(t, norm(wantLinks), norm(gotLinks), "hard-link groups")
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func blocks(t testing.TB, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(p, &st))
	return st.Blocks
}

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
