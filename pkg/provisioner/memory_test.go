package provisioner

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// deepDir is a directory of volpath.MaxDepth segments of segLen bytes that
// shares no ancestor with that of any other i, so each of its segments is
// a key of its own in the ancestor index: the worst case.
func deepDir(i, segLen int) string {
	segs := make([]string, volpath.MaxDepth)
	for j := range segs {
		s := fmt.Sprintf("%05d-%02d-", i, j)
		segs[j] = s + strings.Repeat("x", segLen-len(s))
	}
	return strings.Join(segs, "/")
}

// cacheCost fills a PV informer's indexer, with the provisioner's Indexers,
// with n compacted PVs at dirOf(i), and returns the heap the PVs and the
// indexer (its store and indices) take per PV.
func cacheCost(t *testing.T, n int, dirOf func(i int) string) (objects, indexer uint64) {
	t.Helper()
	c := NewCompactor(testProvisioner, testSet(testPath))
	indexers := Indexers(testSet(testPath))
	pvs := make([]*v1.PersistentVolume, n)
	start := liveHeap()
	for i := range pvs {
		dir := dirOf(i)
		pvs[i] = c.Compact(fullPV(fmt.Sprintf("pvc-%08d-1111-2222-3333-444455556666", i), testServer, volpath.NFSPath(testPath, dir), ours(dir, "delete")))
	}
	filled := liveHeap()
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, indexers)
	for _, pv := range pvs {
		require.NoError(t, store.Add(pv))
	}
	indexed := liveHeap()
	runtime.KeepAlive(pvs)
	runtime.KeepAlive(store)
	return (filled - start) / uint64(n), (indexed - filled) / uint64(n)
}

// TestCacheMemoryOfDeepPaths measures what 10,000 PVs at the depth limit
// (1,000 with -short) cost in the informer cache, and that the index costs
// the same whether their names are short or long: its keys are substrings
// of spec.nfs.path, so its size grows with the depth (bounded by MaxDepth),
// not with the depth times the length. Not parallel: it reads the heap.
func TestCacheMemoryOfDeepPaths(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	const longSeg = 127 // 32 segments: a 4095-byte directory, just within MaxPathBytes
	longObjects, longIndexer := cacheCost(t, n, func(i int) string { return deepDir(i, longSeg) })
	shortObjects, shortIndexer := cacheCost(t, n, func(i int) string { return deepDir(i, 12) })
	typObjects, typIndexer := cacheCost(t, n, func(i int) string { return fmt.Sprintf("team-%02d/data-mysql-%d", i%50, i) })
	t.Logf("%d PVs, %d segments of %d bytes: PVs %d B each, indexer %d B each, %.1f MiB in all",
		n, volpath.MaxDepth, longSeg, longObjects, longIndexer, float64(longObjects+longIndexer)*float64(n)/(1<<20))
	t.Logf("%d PVs, %d segments of 12 bytes: PVs %d B each, indexer %d B each", n, volpath.MaxDepth, shortObjects, shortIndexer)
	t.Logf("%d PVs at <namespace>/<claim> in 50 namespaces: PVs %d B each, indexer %d B each, %.1f MiB in all",
		n, typObjects, typIndexer, float64(typObjects+typIndexer)*float64(n)/(1<<20))

	assert.Less(t, longIndexer, shortIndexer+512, "the index must not copy the path per key")
	assert.Less(t, longObjects+longIndexer, uint64(24<<10), "a deep PV costs under 24 KiB in the cache")
}

// TestLongAnnotationGivesShortMessage: a claim's 250 KiB annotation used by
// the pathPattern must not become a 250 KiB Event on every retry.
func TestLongAnnotationGivesShortMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.annotations.example.com/dir}"})
	for name, value := range map[string]string{
		"too long":        strings.Repeat("a", 250<<10),
		"too deep":        strings.Repeat("a/", 100) + "a",
		"long and broken": strings.Repeat("a/", 120<<10) + "..",
	} {
		pvc := claim("ns", "c", "u1")
		pvc.Annotations = map[string]string{"example.com/dir": value}
		_, err := e.provision(t, sc, pvc)
		require.Error(t, err, name)
		assert.Less(t, len(err.Error()), 512, "%s: %.1000s", name, err)
		assert.Contains(t, err.Error(), "refusing the claim's directory", name)
	}

	// A valid 4 KiB path refused further on, on the export, too.
	var parts []string
	for range 15 {
		parts = append(parts, strings.Repeat("d", 250))
	}
	long := strings.Join(parts, "/")
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, long), 0o755))
	pvc := claim("ns", "c", "u2")
	pvc.Annotations = map[string]string{"example.com/dir": long}
	_, err := e.provision(t, class("free", map[string]string{"pathPattern": "${.PVC.annotations.example.com/dir}"}), pvc)
	require.ErrorContains(t, err, "already exists and was not made for this claim")
	assert.Less(t, len(err.Error()), 2048, "%d bytes for a %d-byte path", len(err.Error()), len(long))
}
