package exportfs

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestNewRoot(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"/persistentvolumes", "/persistentvolumes"},
		{"/persistentvolumes/", "/persistentvolumes"},
		{"/a//b/../c", "/a/c"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, New(tt.in, 0).Root())
		})
	}
}

func TestMkdirAll(t *testing.T) {
	t.Parallel()
	umask := processUmask(t)
	tests := []struct {
		name     string
		existing []string // directories created beforehand, mode 0700
		rel      string
		mode     os.FileMode
		created  bool
	}{
		{name: "single", rel: "pvc", mode: 0o777, created: true},
		{name: "nested parents", rel: "ns/app/pvc", mode: 0o750, created: true},
		{name: "some parents exist", existing: []string{"ns"}, rel: "ns/app/pvc", mode: 0o700, created: true},
		{name: "setgid", rel: "ns/pvc", mode: 0o775 | os.ModeSetgid, created: true},
		{name: "sticky", rel: "ns/pvc", mode: 0o777 | os.ModeSticky, created: true},
		{name: "setuid setgid sticky", rel: "pvc", mode: 0o755 | os.ModeSetuid | os.ModeSetgid | os.ModeSticky, created: true},
		{name: "ModeDir ignored", rel: "pvc", mode: os.ModeDir | 0o711, created: true},
		{name: "mode zero", rel: "pvc", mode: 0, created: true},
		{name: "existing leaf gets mode", existing: []string{"ns", "ns/pvc"}, rel: "ns/pvc", mode: 0o777, created: false},
		{name: "existing leaf loses setgid", existing: []string{"pvc"}, rel: "pvc", mode: 0o755, created: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			for _, d := range tt.existing {
				require.NoError(t, os.Mkdir(e.in(d), 0o700))
				if d == tt.rel {
					require.NoError(t, os.Chmod(e.in(d), 0o700|os.ModeSetgid))
				}
				require.NoError(t, os.WriteFile(filepath.Join(e.in(d), "keep"), []byte("x"), 0o600))
			}
			made, err := e.fs.MkdirAll(context.Background(), tt.rel, DirOptions{Mode: tt.mode}, Existing{Any: true})
			require.NoError(t, err)
			assert.Equal(t, tt.created, made.Created)

			fi, err := os.Lstat(e.in(tt.rel))
			require.NoError(t, err)
			require.True(t, fi.IsDir())
			want := tt.mode &^ os.ModeDir
			assert.Equal(t, want, fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky), "leaf mode %v", fi.Mode())

			// New parents: 0777 minus the umask, like os.MkdirAll.
			for p := filepath.Dir(tt.rel); p != "."; p = filepath.Dir(p) {
				fi, err := os.Lstat(e.in(p))
				require.NoError(t, err)
				if !contains(tt.existing, p) {
					assert.Equal(t, os.ModeDir|(0o777&^umask), fi.Mode(), "parent %s", p)
				}
			}
			for _, d := range tt.existing {
				assert.FileExists(t, filepath.Join(e.in(d), "keep"), "contents of an existing directory are kept")
			}
			ok, err := e.fs.Exists(context.Background(), tt.rel)
			require.NoError(t, err)
			assert.True(t, ok)
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestMkdirAllUmask changes the process umask, so it is not parallel with
// other top-level tests.
func TestMkdirAllUmask(t *testing.T) {
	old := unix.Umask(0o077)
	t.Cleanup(func() { unix.Umask(old) })
	tests := []struct {
		name string
		mode os.FileMode
	}{
		{"world writable", 0o777},
		{"group setgid", 0o775 | os.ModeSetgid},
		{"sticky", 0o777 | os.ModeSticky},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			made, err := e.fs.MkdirAll(context.Background(), "parent/leaf", DirOptions{Mode: tt.mode}, Existing{})
			require.NoError(t, err)
			assert.True(t, made.Created)
			fi, err := os.Lstat(e.in("parent/leaf"))
			require.NoError(t, err)
			assert.Equal(t, os.ModeDir|tt.mode, fi.Mode())
			fi, err = os.Lstat(e.in("parent"))
			require.NoError(t, err)
			assert.Equal(t, os.ModeDir|0o700, fi.Mode(), "parents follow the umask")
		})
	}
}

func TestMkdirAllOwner(t *testing.T) {
	t.Parallel()
	if !isRoot() {
		t.Skip("chown needs root")
	}
	tests := []struct {
		name             string
		uid, gid         *int
		wantUID, wantGID uint32
	}{
		{name: "both", uid: ptr(12345), gid: ptr(23456), wantUID: 12345, wantGID: 23456},
		{name: "uid only", uid: ptr(12345), wantUID: 12345, wantGID: uint32(os.Getegid())},
		{name: "gid only", gid: ptr(23456), wantUID: uint32(os.Geteuid()), wantGID: 23456},
		{name: "neither", wantUID: uint32(os.Geteuid()), wantGID: uint32(os.Getegid())},
		{name: "zero", uid: ptr(0), gid: ptr(0), wantUID: 0, wantGID: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			mode := 0o770 | os.ModeSetgid
			_, err := e.fs.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: mode, UID: tt.uid, GID: tt.gid}, Existing{})
			require.NoError(t, err)
			n := lstatNode(t, e.in("ns/pvc"))
			assert.Equal(t, tt.wantUID, n.UID)
			assert.Equal(t, tt.wantGID, n.GID)
			assert.Equal(t, os.ModeDir|mode, n.Mode, "chown must not drop setgid")
			p := lstatNode(t, e.in("ns"))
			assert.Equal(t, uint32(os.Geteuid()), p.UID, "parents keep the process owner")

			// Existing directory: owner applied again.
			require.NoError(t, os.Chown(e.in("ns/pvc"), 1, 1))
			made, err := e.fs.MkdirAll(context.Background(), "ns/pvc", DirOptions{Mode: mode, UID: tt.uid, GID: tt.gid}, Existing{Any: true})
			require.NoError(t, err)
			assert.False(t, made.Created)
			n = lstatNode(t, e.in("ns/pvc"))
			if tt.uid != nil {
				assert.Equal(t, tt.wantUID, n.UID)
			}
			if tt.gid != nil {
				assert.Equal(t, tt.wantGID, n.GID)
			}
		})
	}
}

func TestMkdirAllBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts DirOptions
	}{
		{"symlink mode bit", DirOptions{Mode: os.ModeSymlink | 0o755}},
		{"device mode bit", DirOptions{Mode: os.ModeDevice | 0o755}},
		{"negative uid", DirOptions{Mode: 0o755, UID: ptr(-1)}},
		{"negative gid", DirOptions{Mode: 0o755, GID: ptr(-5)}},
		{"huge uid", DirOptions{Mode: 0o755, UID: ptr(1 << 32)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			_, err := e.fs.MkdirAll(context.Background(), "pvc", tt.opts, Existing{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), e.in("pvc"))
			assert.NoDirExists(t, e.in("pvc"))
		})
	}
}

func TestMkdirAllConcurrentCreators(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 16
	var wg sync.WaitGroup
	results := make([]Made, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.fs.MkdirAll(context.Background(), "a/b/c/d", DirOptions{Mode: 0o755}, Existing{Any: true})
		}()
	}
	wg.Wait()
	createdCount := 0
	for i := range n {
		require.NoError(t, errs[i])
		if results[i].Created {
			createdCount++
		}
	}
	assert.Equal(t, 1, createdCount, "exactly one caller creates the leaf")
}

func TestInvalidPath(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 256)
	tests := []struct{ name, rel string }{
		{"empty", ""},
		{"absolute", "/etc"},
		{"absolute root", "/"},
		{"dot", "."},
		{"dotdot", ".."},
		{"leading dotdot", "../outside"},
		{"inner dotdot", "a/../../outside"},
		{"trailing dotdot", "a/.."},
		{"inner dot", "a/./b"},
		{"leading dot", "./a"},
		{"double slash", "a//b"},
		{"trailing slash", "a/"},
		{"NUL", "a\x00b"},
		{"segment too long", "a/" + long},
		{"path too long", strings.Repeat("abcdefg/", 512) + "x"},
	}
	ops := map[string]func(f *FS, rel string) error{
		"MkdirAll": func(f *FS, rel string) error {
			_, err := f.MkdirAll(context.Background(), rel, DirOptions{Mode: 0o755}, Existing{})
			return err
		},
		"RemoveAll": func(f *FS, rel string) error { return f.RemoveAll(context.Background(), rel) },
		"Rename":    func(f *FS, rel string) error { return f.Rename(context.Background(), rel, "new") },
		"Exists": func(f *FS, rel string) error {
			ok, err := f.Exists(context.Background(), rel)
			assert.False(t, ok)
			return err
		},
	}
	for _, tt := range tests {
		for opName, op := range ops {
			t.Run(opName+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				require.NoError(t, os.Mkdir(e.in("a"), 0o755))
				before := snapshot(t, e.base)
				err := op(e.fs, tt.rel)
				require.ErrorIs(t, err, ErrInvalidPath)
				assert.Contains(t, err.Error(), e.root, "the message names the export")
				assert.Equal(t, before, snapshot(t, e.base))
			})
		}
	}
	// Validation accepts the limits themselves.
	t.Run("limits", func(t *testing.T) {
		t.Parallel()
		_, err := splitRel(strings.Repeat("a", 255))
		require.NoError(t, err)
		_, err = splitRel(strings.Repeat("abcdefg/", 511) + "abcdefgh")
		require.NoError(t, err)
		_, err = splitRel("..a/b..c/.d/e.")
		require.NoError(t, err)
	})
}

func TestRenameInvalidName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", ".", "..", "a/b", "/b", "a\x00", strings.Repeat("n", 256)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			require.NoError(t, os.Mkdir(e.in("pvc"), 0o755))
			before := snapshot(t, e.base)
			require.ErrorIs(t, e.fs.Rename(context.Background(), "pvc", name), ErrInvalidPath)
			assert.Equal(t, before, snapshot(t, e.base))
		})
	}
}

func TestRemoveAll(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env)
		rel   string
		keep  []string // paths below the root that must remain
	}{
		{
			name:  "empty directory",
			setup: func(t *testing.T, e *env) { mkdirs(t, e.in("ns/pvc")) },
			rel:   "ns/pvc",
			keep:  []string{"ns"},
		},
		{
			name: "tree with files",
			setup: func(t *testing.T, e *env) {
				mkdirs(t, e.in("pvc/a/b/c"), e.in("pvc/d"), e.in("sibling"))
				writeFiles(t, e.in("pvc/f"), e.in("pvc/a/f"), e.in("pvc/a/b/c/f"), e.in("pvc/d/.hidden"), e.in("sibling/f"))
			},
			rel:  "pvc",
			keep: []string{"sibling/f"},
		},
		{
			name: "read-only and odd modes inside",
			setup: func(t *testing.T, e *env) {
				if !isRoot() {
					t.Skip("removing read-only directories needs root")
				}
				mkdirs(t, e.in("pvc/ro/inner"))
				writeFiles(t, e.in("pvc/ro/inner/f"))
				require.NoError(t, os.Chmod(e.in("pvc/ro/inner"), 0o500))
				require.NoError(t, os.Chmod(e.in("pvc/ro"), 0o500))
			},
			rel: "pvc",
		},
		{
			name: "special files inside",
			setup: func(t *testing.T, e *env) {
				mkdirs(t, e.in("pvc"))
				require.NoError(t, unix.Mkfifo(e.in("pvc/fifo"), 0o600))
				if l, err := net.ListenUnix("unix", &net.UnixAddr{Name: e.in("pvc/sock"), Net: "unix"}); err == nil {
					l.SetUnlinkOnClose(false)
					l.Close()
				}
				require.NoError(t, os.Link(filepath.Join(e.outside, "secret"), e.in("pvc/hardlink")))
			},
			rel: "pvc",
		},
		{
			name: "symlinks inside pointing outside",
			setup: func(t *testing.T, e *env) {
				mkdirs(t, e.in("pvc/sub"), e.in("other/data"))
				writeFiles(t, e.in("other/data/f"))
				symlinks(t,
					e.outside, e.in("pvc/to-outside"),
					filepath.Join(e.outside, "secret"), e.in("pvc/sub/to-secret"),
					"/", e.in("pvc/to-slash"),
					"../../other", e.in("pvc/sub/to-other"),
					"../../../outside", e.in("pvc/sub/relative-outside"),
					"/nonexistent/dangling", e.in("pvc/dangling"),
					".", e.in("pvc/self"),
					"..", e.in("pvc/up"),
				)
			},
			rel:  "pvc",
			keep: []string{"other/data/f"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			tt.setup(t, e)
			outside := snapshot(t, e.outside)
			slash := snapshotSlash(t)
			require.NoError(t, e.fs.RemoveAll(context.Background(), tt.rel))
			assert.NoFileExists(t, e.in(tt.rel))
			_, err := os.Lstat(e.in(tt.rel))
			assert.ErrorIs(t, err, fs.ErrNotExist)
			for _, k := range tt.keep {
				_, err := os.Lstat(e.in(k))
				assert.NoError(t, err, "%s must survive", k)
			}
			outsideAfter := snapshot(t, e.outside)
			if tt.name == "special files inside" {
				// Unlinking a hard link changes the link count and ctime of
				// the shared inode, nothing else.
				s, a := outside["secret"], outsideAfter["secret"]
				s.Ctime, a.Ctime = syscall.Timespec{}, syscall.Timespec{}
				assert.Equal(t, s, a)
				delete(outside, "secret")
				delete(outsideAfter, "secret")
			}
			assert.Equal(t, outside, outsideAfter)
			assert.Equal(t, slash, snapshotSlash(t))
			ok, err := e.fs.Exists(context.Background(), tt.rel)
			require.NoError(t, err)
			assert.False(t, ok)
		})
	}
}

func TestRemoveAllMissing(t *testing.T) {
	t.Parallel()
	for _, rel := range []string{"missing", "missing/parent/leaf", "exists/missing"} {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			mkdirs(t, e.in("exists"))
			before := snapshot(t, e.base)
			require.NoError(t, e.fs.RemoveAll(context.Background(), rel))
			assert.Equal(t, before, snapshot(t, e.base))
		})
	}
}

func TestRemoveAllRefusesRoot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mkdirs(t, e.in("pvc"))
	require.ErrorIs(t, e.fs.RemoveAll(context.Background(), ""), ErrInvalidPath)
	assert.DirExists(t, e.in("pvc"))
}

func TestRename(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(t *testing.T, e *env)
		rel     string
		newName string
		wantErr []error // nil: success
	}{
		{
			name:    "top level",
			setup:   func(t *testing.T, e *env) { mkdirs(t, e.in("pvc")); writeFiles(t, e.in("pvc/f")) },
			rel:     "pvc",
			newName: "archived-pvc",
		},
		{
			name:    "nested",
			setup:   func(t *testing.T, e *env) { mkdirs(t, e.in("ns/pvc")); writeFiles(t, e.in("ns/pvc/f")) },
			rel:     "ns/pvc",
			newName: "archived-pvc",
		},
		{
			name:    "collides with directory",
			setup:   func(t *testing.T, e *env) { mkdirs(t, e.in("ns/pvc"), e.in("ns/archived")) },
			rel:     "ns/pvc",
			newName: "archived",
			wantErr: []error{fs.ErrExist},
		},
		{
			name: "collides with non-empty directory",
			setup: func(t *testing.T, e *env) {
				mkdirs(t, e.in("ns/pvc"), e.in("ns/archived"))
				writeFiles(t, e.in("ns/archived/f"))
			},
			rel:     "ns/pvc",
			newName: "archived",
			wantErr: []error{fs.ErrExist},
		},
		{
			name:    "collides with file",
			setup:   func(t *testing.T, e *env) { mkdirs(t, e.in("pvc")); writeFiles(t, e.in("archived")) },
			rel:     "pvc",
			newName: "archived",
			wantErr: []error{fs.ErrExist},
		},
		{
			name: "collides with symlink",
			setup: func(t *testing.T, e *env) {
				mkdirs(t, e.in("pvc"))
				symlinks(t, e.outside, e.in("archived"))
			},
			rel:     "pvc",
			newName: "archived",
			wantErr: []error{fs.ErrExist},
		},
		{
			name: "collides with dangling symlink",
			setup: func(t *testing.T, e *env) {
				mkdirs(t, e.in("pvc"))
				symlinks(t, "/nonexistent", e.in("archived"))
			},
			rel:     "pvc",
			newName: "archived",
			wantErr: []error{fs.ErrExist},
		},
		{
			name:    "same name",
			setup:   func(t *testing.T, e *env) { mkdirs(t, e.in("pvc")) },
			rel:     "pvc",
			newName: "pvc",
			wantErr: []error{fs.ErrExist},
		},
		{
			name:    "missing",
			setup:   func(t *testing.T, e *env) {},
			rel:     "pvc",
			newName: "archived",
			wantErr: []error{fs.ErrNotExist},
		},
		{
			name:    "missing parent",
			setup:   func(t *testing.T, e *env) {},
			rel:     "ns/pvc",
			newName: "archived",
			wantErr: []error{fs.ErrNotExist},
		},
		{
			name:    "source is a file",
			setup:   func(t *testing.T, e *env) { writeFiles(t, e.in("pvc")) },
			rel:     "pvc",
			newName: "archived",
			wantErr: []error{ErrNotDirectory},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			tt.setup(t, e)
			before := snapshot(t, e.base)
			err := e.fs.Rename(context.Background(), tt.rel, tt.newName)
			if tt.wantErr != nil {
				for _, want := range tt.wantErr {
					require.ErrorIs(t, err, want)
				}
				assert.Equal(t, before, snapshot(t, e.base), "nothing changes")
				return
			}
			require.NoError(t, err)
			newRel := filepath.Join(filepath.Dir(tt.rel), tt.newName)
			after := snapshot(t, e.base)
			oldKey, newKey := filepath.Join("root", tt.rel), filepath.Join("root", newRel)
			assert.NotContains(t, after, oldKey)
			assert.Equal(t, before[oldKey].Ino, after[newKey].Ino)
			assert.Equal(t, before[filepath.Join(oldKey, "f")].Ino, after[filepath.Join(newKey, "f")].Ino)
		})
	}
}

// TestCheckThenRename covers the fallback used where RENAME_NOREPLACE is not
// supported (NFS).
func TestCheckThenRename(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		target  func(t *testing.T, path string)
		wantErr error
	}{
		{name: "free", target: func(*testing.T, string) {}},
		{name: "directory", target: func(t *testing.T, p string) { mkdirs(t, p) }, wantErr: unix.EEXIST},
		{name: "file", target: func(t *testing.T, p string) { writeFiles(t, p) }, wantErr: unix.EEXIST},
		{name: "dangling symlink", target: func(t *testing.T, p string) { symlinks(t, "/nonexistent", p) }, wantErr: unix.EEXIST},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			mkdirs(t, e.in("old"))
			tt.target(t, e.in("new"))
			before := snapshot(t, e.base)
			fd, err := unix.Open(e.root, unix.O_PATH|unix.O_DIRECTORY, 0)
			require.NoError(t, err)
			defer unix.Close(fd)
			err = checkThenRename(fd, "old", "new")
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Equal(t, before, snapshot(t, e.base))
				assert.ErrorIs(t, e.fs.renameErr("old", "new", err), fs.ErrExist)
				return
			}
			require.NoError(t, err)
			assert.DirExists(t, e.in("new"))
			assert.NoDirExists(t, e.in("old"))
		})
	}
}

func TestExists(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(t *testing.T, e *env)
		rel     string
		want    bool
		wantErr error
	}{
		{name: "directory", setup: func(t *testing.T, e *env) { mkdirs(t, e.in("a/b")) }, rel: "a/b", want: true},
		{name: "missing", setup: func(t *testing.T, e *env) {}, rel: "a"},
		{name: "missing parent", setup: func(t *testing.T, e *env) {}, rel: "a/b/c"},
		{name: "file", setup: func(t *testing.T, e *env) { writeFiles(t, e.in("a")) }, rel: "a", wantErr: ErrNotDirectory},
		{name: "file as parent", setup: func(t *testing.T, e *env) { writeFiles(t, e.in("a")) }, rel: "a/b", wantErr: ErrNotDirectory},
		{name: "fifo", setup: func(t *testing.T, e *env) { require.NoError(t, unix.Mkfifo(e.in("a"), 0o600)) }, rel: "a", wantErr: ErrNotDirectory},
		{name: "symlink to dir", setup: func(t *testing.T, e *env) { mkdirs(t, e.in("d")); symlinks(t, "d", e.in("a")) }, rel: "a", wantErr: ErrSymlink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			tt.setup(t, e)
			got, err := e.fs.Exists(context.Background(), tt.rel)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Contains(t, err.Error(), e.root)
				assert.False(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u, err := e.fs.Usage(context.Background())
	require.NoError(t, err)
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(e.root, &st))
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	assert.Equal(t, st.Blocks*unit, u.TotalBytes)
	assert.NotZero(t, u.TotalBytes)
	assert.LessOrEqual(t, u.FreeBytes, u.TotalBytes)
	assert.InDelta(t, float64(st.Bavail*unit), float64(u.FreeBytes), float64(64<<20), "free space moves a little between calls")
	assert.Equal(t, st.Files, u.TotalInodes)
	assert.LessOrEqual(t, u.FreeInodes, u.TotalInodes)

	t.Run("missing root", func(t *testing.T) {
		t.Parallel()
		_, err := New(filepath.Join(e.base, "missing"), 0).Usage(context.Background())
		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.Contains(t, err.Error(), "mounted")
	})
}

func TestCheckWritable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		root    func(t *testing.T, e *env) string
		wantErr error // nil: writable
		anyErr  bool
	}{
		{name: "writable", root: func(t *testing.T, e *env) string { return e.root }},
		{name: "root through a symlink is trusted", root: func(t *testing.T, e *env) string {
			symlinks(t, e.root, filepath.Join(e.base, "link"))
			return filepath.Join(e.base, "link")
		}},
		{name: "missing", root: func(t *testing.T, e *env) string { return filepath.Join(e.base, "missing") }, wantErr: fs.ErrNotExist},
		{name: "file", root: func(t *testing.T, e *env) string { return filepath.Join(e.outside, "secret") }, wantErr: ErrNotDirectory},
		{name: "read-only by mode", root: func(t *testing.T, e *env) string {
			if isRoot() {
				t.Skip("root ignores directory modes; see the immutable case")
			}
			require.NoError(t, os.Chmod(e.root, 0o555))
			t.Cleanup(func() { os.Chmod(e.root, 0o755) })
			return e.root
		}, wantErr: fs.ErrPermission},
		{name: "read-only by immutable attribute", root: func(t *testing.T, e *env) string {
			setImmutable(t, e.root)
			return e.root
		}, anyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			root := tt.root(t, e)
			err := New(root, 0).CheckWritable(context.Background())
			switch {
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
				assert.Contains(t, err.Error(), root)
			case tt.anyErr:
				require.Error(t, err)
				assert.Contains(t, err.Error(), root)
			default:
				require.NoError(t, err)
			}
			entries, err := os.ReadDir(e.root)
			require.NoError(t, err)
			assert.Empty(t, entries, "no probe file is left behind")
		})
	}
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h.
const fsImmutableFL = 0x10

// setImmutable sets FS_IMMUTABLE_FL on dir, which stops even root from
// creating entries in it, and clears it on cleanup; it skips the test where
// the filesystem or the capabilities do not allow it.
func setImmutable(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("file attributes not supported here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL)); err != nil {
		t.Skipf("cannot set the immutable attribute: %v", err)
	}
	t.Cleanup(func() {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err == nil {
			_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags))
			unix.Close(fd)
		}
	})
}

func TestErrorsAreWrapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	writeFiles(t, e.in("file"))
	_, err := e.fs.MkdirAll(context.Background(), "file/pvc", DirOptions{Mode: 0o755}, Existing{})
	require.ErrorIs(t, err, ErrNotDirectory)
	msg := err.Error()
	assert.Equal(t, strings.ToLower(msg[:1]), msg[:1], "lowercase")
	assert.Contains(t, msg, e.in("file/pvc"), "names the requested path")
	assert.Contains(t, msg, e.in("file")+" is a regular file", "names the offending component")
	assert.False(t, errors.Is(err, ErrSymlink))
}

func mkdirs(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		require.NoError(t, os.MkdirAll(p, 0o755))
	}
}

func writeFiles(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		require.NoError(t, os.WriteFile(p, []byte("content of "+filepath.Base(p)), 0o644))
	}
}

// symlinks takes pairs of target, link.
func symlinks(t testing.TB, pairs ...string) {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		require.NoError(t, os.Symlink(pairs[i], pairs[i+1]))
	}
}

// TestLongPathsMakeShortMessages: the error for a 4 KiB path, refused
// after it resolved, shows it by its start and end.
func TestLongPathsMakeShortMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var parts []string
	for range 16 {
		parts = append(parts, strings.Repeat("d", 250))
	}
	rel := strings.Join(parts, "/")
	require.NoError(t, os.MkdirAll(e.in(rel), 0o755))
	_, err := e.fs.MkdirAll(context.Background(), rel, DirOptions{Mode: 0o755}, Existing{})
	require.ErrorIs(t, err, fs.ErrExist)
	assert.Less(t, len(err.Error()), 1024, "message of %d bytes for a %d-byte path", len(err.Error()), len(rel))
	assert.Contains(t, err.Error(), "...")
}

// TestMkdirAllAdoptsFreshEmpty: with EmptySince, an empty directory that
// changed since then is adopted; one holding anything, or older, is not.
func TestMkdirAllAdoptsFreshEmpty(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.NoError(t, os.Mkdir(e.in("old"), 0o700))
	since := time.Now().Add(time.Second) // after "old" changed, to the second
	time.Sleep(1100 * time.Millisecond)
	require.NoError(t, os.Mkdir(e.in("fresh"), 0o700))
	require.NoError(t, os.Mkdir(e.in("full"), 0o700))
	require.NoError(t, os.WriteFile(e.in("full/f"), nil, 0o600))
	opts := DirOptions{Mode: 0o755}

	made, err := e.fs.MkdirAll(context.Background(), "fresh", opts, Existing{EmptySince: since})
	require.NoError(t, err)
	assert.False(t, made.Created)
	info, err := os.Stat(e.in("fresh"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), info.Mode().Perm())
	for _, dir := range []string{"old", "full"} {
		_, err := e.fs.MkdirAll(context.Background(), dir, opts, Existing{EmptySince: since})
		require.ErrorIs(t, err, fs.ErrExist, dir)
		info, err := os.Stat(e.in(dir))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "%s left alone", dir)
	}
	_, err = e.fs.MkdirAll(context.Background(), "fresh", opts, Existing{})
	require.ErrorIs(t, err, fs.ErrExist, "without EmptySince")
}
