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
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/resize"
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

// refuseAbove is a feasibility check refusing sizes above max.
type refuseAbove resource.Quantity

func (r refuseAbove) Check(_ context.Context, pv *v1.PersistentVolume, _ *v1.PersistentVolumeClaim, size resource.Quantity) error {
	if max := resource.Quantity(r); size.Cmp(max) > 0 {
		return fmt.Errorf("volume %s cannot grow to %s: only %s free", pv.Name, size.String(), max.String())
	}
	return nil
}

// TestResizeInfeasibleThenLowered runs pkg/resize in the test, with a check
// the binary does not have yet, against the real API server: the refusal
// and the recovery by lowering the request are accepted as external-resizer
// writes them.
func TestResizeInfeasibleThenLowered(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	e.namespace("team-a")
	e.class("nfs", nil, allowExpansion)
	e.claim("team-a", "data", "nfs")
	_, pv := e.waitBound("team-a", "data", 30*time.Second)
	p.Terminate(10 * time.Second)

	factory := informers.NewSharedInformerFactory(e.client, 0)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	classes := factory.Storage().V1().StorageClasses()
	classes.Informer()
	informersCtx, stopInformers := context.WithCancel(e.ctx)
	factory.Start(informersCtx.Done())
	defer func() {
		stopInformers()
		factory.Shutdown()
	}()
	require.True(t, cache.WaitForCacheSync(e.ctx.Done(), claims.HasSynced, classes.Informer().HasSynced))
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: e.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	m := metrics.New()
	c := resize.New(resize.Config{
		ProvisionerName: provisionerName, Client: e.client, Claims: claims, Classes: classes.Lister(),
		Recorder: broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "resize-e2e"}), Metrics: m,
		Feasibility: refuseAbove(resource.MustParse("5Gi")),
	})
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	defer func() {
		stop()
		<-done
	}()

	e.requestSize("team-a", "data", "100Gi")
	e.waitEvent("team-a", "data", "VolumeResizeFailed", "volume "+pv.Name+" cannot grow to 100Gi: only 5Gi free", 30*time.Second)
	pvc, err := e.client.CoreV1().PersistentVolumeClaims("team-a").Get(e.ctx, "data", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1.PersistentVolumeClaimControllerResizeInfeasible, pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage])
	assert.Equal(t, "100Gi", pvc.Status.AllocatedResources.Storage().String())
	assert.Equal(t, "1Gi", pvc.Status.Capacity.Storage().String())
	var reason string
	for _, cond := range pvc.Status.Conditions {
		if cond.Type == v1.PersistentVolumeClaimControllerResizeError {
			reason = cond.Message
		}
	}
	assert.Contains(t, reason, "cannot grow to 100Gi")
	got, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, pv.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "1Gi", got.Spec.Capacity.Storage().String(), "no PV change")

	// The API server refuses going back to status.capacity, and accepts
	// anything above it.
	patch := `{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}`
	_, err = e.client.CoreV1().PersistentVolumeClaims("team-a").Patch(e.ctx, "data", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.Error(t, err)
	t.Logf("lowering to status.capacity: %v", err)
	e.requestSize("team-a", "data", "4Gi")
	e.assertResized(e.waitCapacity("team-a", "data", "4Gi", 30*time.Second), "4Gi")
}

// TestResizeGatedLikeProvisioning: no resize while a live incumbent record
// pauses the leader; after a graceful handover the new leader resizes.
func TestResizeGatedLikeProvisioning(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.namespace("team-a")
	e.class("nfs", nil, allowExpansion)
	r1 := e.startElectionReplica()
	e.waitLeaseHolder(r1.id, 30*time.Second)
	e.claim("team-a", "data", "nfs")
	e.waitBound("team-a", "data", 30*time.Second)

	inc := &fakeIncumbent{e: e, holder: "nfs-client-provisioner-6d8f9_0b1c2d3e"}
	inc.renew()
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return gaugeOf(ctx, r1.p, "nfs_provisioner_waiting_for_incumbent") == 1 && electionLeaderMetricValue(ctx, r1.p) == 0, nil
	}), "not paused for the incumbent")
	e.requestSize("team-a", "data", "5Gi")
	inc.leadFor(4*time.Second, func() {
		t.Helper()
		pvc, err := e.client.CoreV1().PersistentVolumeClaims("team-a").Get(e.ctx, "data", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "1Gi", pvc.Status.Capacity.Storage().String(), "resized while the incumbent leads")
		assert.NotContains(t, pvc.Status.AllocatedResourceStatuses, v1.ResourceStorage, "resize started while the incumbent leads")
	})
	stopped := inc.lastWrite
	e.assertResized(e.waitCapacity("team-a", "data", "5Gi", 30*time.Second), "5Gi")
	t.Logf("resized %s after the incumbent's last renewal (lease %s)", time.Since(stopped).Round(time.Millisecond), incumbentLease)

	// Graceful handover: the standby takes over and resizes.
	r2 := e.startElectionReplica()
	e.waitStandingBy(r2, r1, 30*time.Second)
	r1.p.Terminate(10 * time.Second)
	e.waitLeaseHolder(r2.id, 30*time.Second)
	start := time.Now()
	e.requestSize("team-a", "data", "8Gi")
	e.assertResized(e.waitCapacity("team-a", "data", "8Gi", 30*time.Second), "8Gi")
	t.Logf("after the handover, patch to status.capacity updated: %s", time.Since(start).Round(time.Millisecond))
	assert.Contains(t, r2.p.Log(), "Volume expanded")
}
