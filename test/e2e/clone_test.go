package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCloneSourcesRefusedNeverEmpty: until cloning is supported, a claim
// asking for a copy of another claim, or for a snapshot, stays Pending with
// a Warning Event saying why, and gets no directory (never an empty
// volume); a claim left to a volume populator gets no Warning and no
// directory either.
func TestCloneSourcesRefusedNeverEmpty(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", nil)
	e.claim(ns, "src", "nfs")
	_, srcPV := e.waitBound(ns, "src", 30*time.Second)
	srcDir := ns + "-src-" + srcPV.Name
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, srcDir, "data"), []byte("to be cloned"), 0o644))
	before := e.exportEntries()

	snapGroup := "snapshot.storage.k8s.io"
	popGroup := "hello.example.com"
	e.claim(ns, "clone", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	})
	e.claim(ns, "from-snapshot", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &snapGroup, Kind: "VolumeSnapshot", Name: "snap"}
	})
	e.claim(ns, "populated", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &popGroup, Kind: "Hello", Name: "hello"}
	})

	ev := e.waitEvent(ns, "clone", "ProvisioningFailed", "can't clone volumes yet", 30*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, `PersistentVolumeClaim "src"`)
	t.Logf("Event on clone: %s", ev.Message)
	ev = e.waitEvent(ns, "from-snapshot", "ProvisioningFailed", "NFS subdirectories have no snapshots", 30*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("Event on from-snapshot: %s", ev.Message)

	// The populator's claim was seen by now (claims are worked on in
	// parallel and the others were refused); give it a few more seconds.
	time.Sleep(3 * time.Second)
	for _, ev := range e.events(ns, "populated") {
		assert.NotEqual(t, "Warning", ev.Type, "no Warning for a populator's claim: %s %s", ev.Reason, ev.Message)
		t.Logf("Event on populated: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
	for _, c := range []string{"clone", "from-snapshot", "populated"} {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, c, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1.ClaimPending, pvc.Status.Phase, c)
		assert.Empty(t, pvc.Spec.VolumeName, c)
	}
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pvs.Items, 1, "only the source's PV")
	assert.Equal(t, before, e.exportEntries(), "no directory for any of them")

	_, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Regexp(t, `nfs_provisioner_operations_total\{operation="provision",outcome="refused"\} [1-9]`, body)
	assert.Contains(t, body, `nfs_provisioner_operations_total{operation="provision",outcome="success"} 1`)
}
