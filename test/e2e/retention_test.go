package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestArchiveRetention: with a short --archive-retention, the archive of a
// released volume goes once it is older, while a live volume, a retained
// directory and archived-* look-alikes nobody recorded all stay.
func TestArchiveRetention(t *testing.T) {
	const retention = 4 * time.Second
	e := newEnv(t, envOptions{})
	p := e.startProvisioner("--archive-retention=" + retention.String())
	const ns = "team-a"
	e.namespace(ns)
	e.class("archive", map[string]string{"onDelete": "archive"})
	e.class("retain", map[string]string{"onDelete": "retain"})
	e.claim(ns, "live", "archive")
	_, live := e.waitBound(ns, "live", 30*time.Second)
	e.claim(ns, "gone", "archive")
	_, gone := e.waitBound(ns, "gone", 30*time.Second)
	e.claim(ns, "kept", "retain")
	_, kept := e.waitBound(ns, "kept", 30*time.Second)
	lookalikes := []string{"archived-" + ns + "-old", "archived-backup-20250101-000000"}
	for _, d := range lookalikes {
		require.NoError(t, os.Mkdir(filepath.Join(e.exportDir, d), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, d, "data"), []byte("admin's"), 0o600))
	}

	for _, c := range []string{"gone", "kept"} {
		require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, c, metav1.DeleteOptions{}))
	}
	e.waitPVGone(gone.Name, 30*time.Second)
	goneDir := ns + "-gone-" + gone.Name
	archived := e.findArchives(goneDir)
	require.Len(t, archived, 1)
	made := time.Now()
	t.Logf("archived %s", archived[0])

	removed := waitMetric(t, e.ctx, p, `nfs_provisioner_archives_removed_total{export="default"}`, func(v float64) bool { return v == 1 })
	t.Logf("archive removed %v after it was made (retention %v); removed_total %v", time.Since(made).Round(100*time.Millisecond), retention, removed)
	assert.NoDirExists(t, filepath.Join(e.exportDir, archived[0]))
	assert.DirExists(t, filepath.Join(e.exportDir, ns+"-live-"+live.Name))
	assert.DirExists(t, filepath.Join(e.exportDir, ns+"-kept-"+kept.Name), "retained, not archived")
	for _, d := range lookalikes {
		data, err := os.ReadFile(filepath.Join(e.exportDir, d, "data"))
		require.NoError(t, err, "%s: not this provisioner's archive", d)
		assert.Equal(t, "admin's", string(data))
	}
	_, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Zero(t, metricValue(t, body, `nfs_provisioner_archives{export="default"}`))
}
