package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

func allowExpansion(sc *storagev1.StorageClass) {
	allow := true
	sc.AllowVolumeExpansion = &allow
}

// requestSize patches the claim's storage request, as kubectl patch does.
func (e *env) requestSize(ns, name, size string) {
	e.t.Helper()
	patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":%q}}}}`, size)
	_, err := e.client.CoreV1().PersistentVolumeClaims(ns).Patch(e.ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(e.t, err)
}

// waitCapacity waits until the claim's status.capacity is size, and returns
// the claim.
func (e *env) waitCapacity(ns, name, size string, timeout time.Duration) *v1.PersistentVolumeClaim {
	e.t.Helper()
	want := resource.MustParse(size)
	var pvc *v1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(e.ctx, 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var err error
		pvc, err = e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return want.Cmp(pvc.Status.Capacity[v1.ResourceStorage]) == 0, nil
	})
	require.NoError(e.t, err, "claim %s/%s not resized to %s: %+v", ns, name, size, pvc.Status)
	return pvc
}

// assertResized checks the end state external-resizer leaves: PV and claim
// at size, no resize conditions or status, node expansion marked not
// required.
func (e *env) assertResized(pvc *v1.PersistentVolumeClaim, size string) {
	e.t.Helper()
	want := resource.MustParse(size)
	pv, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	require.NoError(e.t, err)
	assert.Zero(e.t, want.Cmp(pv.Spec.Capacity[v1.ResourceStorage]), "PV capacity %s", pv.Spec.Capacity.Storage())
	assert.Zero(e.t, want.Cmp(pvc.Status.Capacity[v1.ResourceStorage]), "claim capacity %s", pvc.Status.Capacity.Storage())
	for _, c := range pvc.Status.Conditions {
		assert.NotContains(e.t, []v1.PersistentVolumeClaimConditionType{v1.PersistentVolumeClaimResizing, v1.PersistentVolumeClaimFileSystemResizePending, v1.PersistentVolumeClaimControllerResizeError}, c.Type, "condition left: %+v", c)
	}
	assert.NotContains(e.t, pvc.Status.AllocatedResourceStatuses, v1.ResourceStorage)
	assert.Zero(e.t, want.Cmp(pvc.Status.AllocatedResources[v1.ResourceStorage]), "allocatedResources %v", pvc.Status.AllocatedResources)
	assert.Equal(e.t, "true", pvc.Annotations["volume.kubernetes.io/node-expansion-not-required"])
	e.waitEvent(pvc.Namespace, pvc.Name, "VolumeResizeSuccessful", "Resize volume succeeded", 10*time.Second)
}

// TestResize expands a bound claim the way a user does, on a class that
// allows it, and measures the time from the patch to the claim's new
// capacity.
func TestResize(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	e.namespace("team-a")
	e.class("nfs", nil, allowExpansion)
	e.claim("team-a", "data", "nfs")
	_, pv := e.waitBound("team-a", "data", 30*time.Second)
	dir := "team-a-data-" + pv.Name
	before, err := os.ReadDir(filepath.Join(e.exportDir, dir))
	require.NoError(t, err)

	var took []time.Duration
	for _, size := range []string{"10Gi", "25Gi"} {
		start := time.Now()
		e.requestSize("team-a", "data", size)
		pvc := e.waitCapacity("team-a", "data", size, 30*time.Second)
		took = append(took, time.Since(start))
		e.assertResized(pvc, size)
	}
	t.Logf("patch of the request to status.capacity updated (poll every 20ms): 1Gi->10Gi %s, 10Gi->25Gi %s", took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))

	// The controller-manager handed the claim to us.
	e.waitEvent("team-a", "data", "ExternalExpanding", "", 10*time.Second)
	code, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `nfs_provisioner_resizes_total{outcome="success"} 2`)
	assert.Contains(t, body, `nfs_provisioner_resizes_total{outcome="error"} 0`)

	// Bookkeeping only: the directory is the same and still reachable.
	after, err := os.ReadDir(filepath.Join(e.exportDir, dir))
	require.NoError(t, err)
	assert.Equal(t, len(before), len(after))
	e.assertReachable(pv, dir)
}

// TestResizeRequestedWhileStopped: a request made while no replica runs is
// completed by the next one to lead.
func TestResizeRequestedWhileStopped(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	e.namespace("team-a")
	e.class("nfs", nil, allowExpansion)
	e.claim("team-a", "data", "nfs")
	e.waitBound("team-a", "data", 30*time.Second)
	p.Terminate(10 * time.Second)

	e.requestSize("team-a", "data", "3Gi")
	start := time.Now()
	e.startProvisioner()
	pvc := e.waitCapacity("team-a", "data", "3Gi", 60*time.Second)
	t.Logf("replica start to status.capacity updated: %s", time.Since(start).Round(time.Millisecond))
	e.assertResized(pvc, "3Gi")
}
