package ledger

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
)

func newStore(t *testing.T) (*exportfs.FS, string) {
	t.Helper()
	root := t.TempDir()
	return exportfs.New(root, 5*time.Second), root
}

func reopen(t *testing.T, store Store) *Ledger {
	t.Helper()
	l, err := Open(context.Background(), store)
	require.NoError(t, err)
	return l
}

func TestRecordsSurviveReopening(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root := newStore(t)
	l := reopen(t, store)
	assert.Empty(t, l.At("ns/a"))
	assert.NoFileExists(t, filepath.Join(root, File), "reading creates nothing")

	stamp := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	require.NoError(t, l.Append(ctx,
		Record{Kind: Volume, Dir: "ns/a", PV: "pv-a"},
		Record{Kind: Parent, Dir: "ns"},
	))
	require.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: "ns/a", PV: "pv-a", Ino: 42}))
	require.NoError(t, l.Append(ctx,
		Record{Kind: Volume, Dir: "ns/b", PV: "pv-b", Ino: 43},
		Record{Kind: Archive, Dir: "ns/archived-c-1", PV: "pv-c", From: "ns/c", Time: stamp},
		Record{Kind: Retained, Dir: "other/d", PV: "pv-d"},
	))
	require.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: "ns/b", PV: "pv-b", Drop: true}))

	for name, l := range map[string]*Ledger{"written": l, "reopened": reopen(t, store)} {
		assert.Equal(t, []Record{{Kind: Volume, Dir: "ns/a", PV: "pv-a", Ino: 42}}, l.At("ns/a"), name)
		assert.Empty(t, l.At("ns/b"), name)
		assert.Equal(t, 2, l.Below("ns"), "%s: the volume and the archive, not the parent", name)
		assert.Equal(t, 1, l.Below("other"), name)
		assert.Equal(t, 0, l.Below("ns/a"), name)
		r, ok := l.Around("ns")
		assert.True(t, ok, name)
		assert.Contains(t, []string{"ns/a", "ns/archived-c-1"}, r.Dir, name)
		r, ok = l.Around("other/d/inner")
		assert.True(t, ok, "%s: inside a retained directory", name)
		assert.Equal(t, Retained, r.Kind, name)
		_, ok = l.Around("ns/x")
		assert.False(t, ok, "%s: beside others, below a parent: free", name)
		_, ok = l.Around("ns/a")
		assert.False(t, ok, "%s: the record at the directory itself is At's", name)
		assert.Equal(t, stamp, l.At("ns/archived-c-1")[0].Time, name)
	}
}

func TestCompaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root := newStore(t)
	l := reopen(t, store)
	require.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: "kept", PV: "pv-kept", Ino: 1}))
	for i := range 300 {
		dir := fmt.Sprintf("ns/v-%d", i)
		require.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: dir, PV: "pv"}))
		require.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: dir, PV: "pv", Drop: true}))
	}
	data, err := os.ReadFile(filepath.Join(root, File))
	require.NoError(t, err)
	lines := bytes.Count(data, []byte("\n"))
	assert.LessOrEqual(t, lines, 2+compactSlack+2, "rewritten when it grows past twice its live size")
	again := reopen(t, store)
	assert.Equal(t, []Record{{Kind: Volume, Dir: "kept", PV: "pv-kept", Ino: 1}}, again.At("kept"))
	assert.Equal(t, 0, again.Below("ns"))
	entries, err := os.ReadDir(filepath.Join(root, filepath.Dir(File)))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files left")
}

func TestTornLastLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root := newStore(t)
	require.NoError(t, os.Mkdir(filepath.Join(root, filepath.Dir(File)), 0o700))
	// A write cut short by a crash.
	require.NoError(t, os.WriteFile(filepath.Join(root, File), []byte(`{"kind":"volume","dir":"a","pv":"pv-a","ino":7}`+"\n"+`{"kind":"volu`), 0o600))
	l := reopen(t, store)
	assert.Equal(t, 1, l.Skipped())
	require.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: "b", PV: "pv-b", Ino: 8}))
	again := reopen(t, store)
	assert.Len(t, again.At("a"), 1)
	assert.Equal(t, []Record{{Kind: Volume, Dir: "b", PV: "pv-b", Ino: 8}}, again.At("b"), "not glued to the torn line")
	assert.Equal(t, 1, again.Skipped())
}

func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, _ := newStore(t)
	l := reopen(t, store)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			assert.NoError(t, l.Append(ctx, Record{Kind: Volume, Dir: fmt.Sprintf("ns/v-%d", i), PV: "pv", Ino: uint64(i + 1)}))
		})
	}
	wg.Wait()
	again := reopen(t, store)
	for _, led := range []*Ledger{l, again} {
		assert.Equal(t, 64, led.Below("ns"))
	}
}
