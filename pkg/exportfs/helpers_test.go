package exportfs

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// env is a temporary export root with a sibling directory that stands for
// everything outside the export.
type env struct {
	base    string // holds root and outside
	root    string
	outside string
	fs      *FS
}

func newEnv(t testing.TB) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	require.NoError(t, os.Mkdir(e.root, 0o755))
	require.NoError(t, os.Mkdir(e.outside, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.outside, "secret"), []byte("secret"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(e.outside, "sub"), 0o751))
	require.NoError(t, os.WriteFile(filepath.Join(e.outside, "sub", "data"), []byte("data"), 0o640))
	e.fs = New(e.root, 10*time.Second)
	return e
}

// in returns the absolute path of a slash-separated path below the root.
func (e *env) in(rel string) string { return filepath.Join(e.root, filepath.FromSlash(rel)) }

// node is what a snapshot records of one directory entry.
type node struct {
	Mode         fs.FileMode
	UID, GID     uint32
	Ino          uint64
	Ctime, Mtime syscall.Timespec
	Content      string // files
	Target       string // symbolic links
}

// snapshot records every entry below dir (dir included) without following
// symbolic links; any create, remove, rename, chmod or chown changes it.
func snapshot(t testing.TB, dir string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := lstatNode(t, path)
		switch {
		case n.Mode.IsRegular():
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			n.Content = string(b)
		case n.Mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			require.NoError(t, err)
			n.Target = target
		}
		rel, err := filepath.Rel(dir, path)
		require.NoError(t, err)
		out[rel] = n
		return nil
	})
	require.NoError(t, err)
	return out
}

func lstatNode(t testing.TB, path string) node {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return node{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Ino: st.Ino, Ctime: st.Ctim, Mtime: st.Mtim}
}

// slashState records what matters of "/" for tests that plant links to it:
// its attributes and the names in it.
type slashState struct {
	Node  node
	Names []string
}

func snapshotSlash(t testing.TB) slashState {
	t.Helper()
	n := lstatNode(t, "/")
	entries, err := os.ReadDir("/")
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return slashState{Node: n, Names: names}
}

// processUmask reads the umask without changing it.
func processUmask(t testing.TB) fs.FileMode {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			require.NoError(t, err)
			return fs.FileMode(m)
		}
	}
	t.Skip("umask not in /proc/self/status")
	return 0
}

func ptr(i int) *int { return &i }

func isRoot() bool { return os.Geteuid() == 0 }

func readDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, err
}
