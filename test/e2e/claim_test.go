package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestClaimThroughStorageClass(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	e.namespace("team-a")
	e.class("nfs", nil, withMountOptions("nfsvers=4.1"))
	e.claim("team-a", "data", "nfs")

	pvc, pv := e.waitBound("team-a", "data", 30*time.Second)
	dir := "team-a-data-" + pv.Name
	assert.Equal(t, e.nfs.Server, pv.Spec.NFS.Server)
	assert.Equal(t, e.nfs.ExportPath+"/"+dir, pv.Spec.NFS.Path)
	assert.Equal(t, resource.MustParse("1Gi"), pv.Spec.Capacity[v1.ResourceStorage])
	assert.Equal(t, []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, pv.Spec.AccessModes)
	assert.Equal(t, []string{"nfsvers=4.1"}, pv.Spec.MountOptions)
	assert.Equal(t, v1.PersistentVolumeReclaimDelete, pv.Spec.PersistentVolumeReclaimPolicy)
	assert.Equal(t, pvc.UID, pv.Spec.ClaimRef.UID)
	assert.Equal(t, provisionerName, pv.Annotations["pv.kubernetes.io/provisioned-by"])
	e.assertReachable(pv, dir)

	code, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="success"} 1`)
	assert.Contains(t, body, "nfs_provisioner_leader 1")
	assert.Contains(t, body, "nfs_provisioner_export_free_bytes")
	assert.Contains(t, body, "controller_persistentvolumeclaim_provision_total")
	code, _, err = p.Get(e.ctx, "/readyz")
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.False(t, strings.Contains(p.Log(), "forbidden"), "the deploy/ RBAC is enough: no forbidden request in the log")
}
