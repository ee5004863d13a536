package provisioner

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
)

// TestRemoveArchive: the archives listed are those the provisioner made;
// removing one removes its tree and the parents made for it, and nothing an
// admin or the incumbent named archived-*.
func TestRemoveArchive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}", "onDelete": "archive"})
	pv, err := e.provision(t, sc, claim("ns", "data", "u1"))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, "ns/data/sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "ns/data/sub/f"), []byte("x"), 0o644))
	require.NoError(t, e.p.Delete(context.Background(), pv))
	require.NoError(t, e.volumes.Delete(pv))
	// Look-alikes: the incumbent's name, an admin's backup with a valid
	// stamp but no record.
	for _, d := range []string{"archived-ns-old", "archived-backup-20261122-100000"} {
		require.NoError(t, os.Mkdir(filepath.Join(e.root, d), 0o700))
	}

	got, err := e.p.Archives(context.Background())
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "ns/archived-data-20261122-100000", got[0].Dir)
	assert.Equal(t, "ns", got[0].NS)

	// A record whose name disagrees with its time is not acted on.
	bad := got[0]
	bad.Time = bad.Time.Add(-time.Second)
	require.ErrorContains(t, e.p.RemoveArchive(context.Background(), bad), "not an archive the ledger records under that name")
	require.DirExists(t, filepath.Join(e.root, got[0].Dir))

	require.NoError(t, e.p.RemoveArchive(context.Background(), got[0]))
	assert.NoDirExists(t, filepath.Join(e.root, "ns"), "the archive and the parent made for its volume")
	for _, d := range []string{"archived-ns-old", "archived-backup-20261122-100000"} {
		assert.DirExists(t, filepath.Join(e.root, d))
	}
	got, err = e.p.Archives(context.Background())
	require.NoError(t, err)
	assert.Empty(t, got)
	// Gone from the ledger: a second removal is refused.
	require.Error(t, e.p.RemoveArchive(context.Background(), ledger.Record{Kind: ledger.Archive, Dir: "ns/archived-data-20261122-100000", PV: pv.Name}))
}
