package framework

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestMountTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "fs")
	parent := t
	t.Run("mounted", func(t *testing.T) {
		MountTmpfs(t, dir, 4<<20)
		var st unix.Statfs_t
		require.NoError(t, unix.Statfs(dir, &st))
		assert.Equal(t, int64(unix.TMPFS_MAGIC), int64(st.Type))
		assert.Equal(t, int64(4<<20), int64(st.Blocks)*st.Bsize)
		free, err := FreeBytes(dir)
		require.NoError(t, err)
		assert.Equal(t, int64(4<<20), free)

		require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644))
		free, err = FreeBytes(dir)
		require.NoError(t, err)
		assert.Equal(t, int64(3<<20), free)
		assert.Error(t, os.WriteFile(filepath.Join(dir, "big"), make([]byte, 4<<20), 0o644), "size= limits it")

		require.NoError(t, RemountReadOnly(dir, true))
		err = os.Mkdir(filepath.Join(dir, "d"), 0o755)
		assert.ErrorIs(t, err, unix.EROFS, "read-only stops root")
		require.NoError(t, RemountReadOnly(dir, false))
		require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))

		// Busy at cleanup: detached all the same.
		f, err := os.Open(filepath.Join(dir, "f"))
		require.NoError(t, err)
		parent.Cleanup(func() { _ = f.Close() })
	})
	assert.Equal(t, dev(t, filepath.Dir(dir)), dev(t, dir), "unmounted when the test ended")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)
	assert.NoError(t, UnmountTmpfs(dir), "not mounted is not an error")
}

func dev(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st))
	return st.Dev
}
