package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/incumbent"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// blockingProvisioner provisions and deletes once release is closed.
type blockingProvisioner struct {
	release chan struct{}
	mu      sync.Mutex
	calls   int
}

func (b *blockingProvisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	<-b.release
	return &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: opts.PVName}}, controller.ProvisioningFinished, nil
}

func (b *blockingProvisioner) Delete(context.Context, *v1.PersistentVolume) error {
	<-b.release
	return errors.New("export hung")
}

func (b *blockingProvisioner) callCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// An operation counts from Provision until the library's create of its PV
// returns; a closed gate starts none.
func TestGateTracksOperationsUntilThePVIsWritten(t *testing.T) {
	t.Parallel()
	logger, ctx := ktesting.NewTestContext(t)
	inner := &blockingProvisioner{release: make(chan struct{})}
	g := newGate(inner, logger)
	client := withPVWrites(fake.NewClientset(), g)

	_, _, err := g.Provision(ctx, controller.ProvisionOptions{PVName: "pvc-early"})
	var ignored *controller.IgnoredError
	require.ErrorAs(t, err, &ignored, "closed before it ever opened")
	assert.Equal(t, 0, inner.callCount())

	g.setOpen(true, "")
	provisioned := make(chan *v1.PersistentVolume)
	go func() {
		pv, _, err := g.Provision(ctx, controller.ProvisionOptions{PVName: "pvc-1"})
		assert.NoError(t, err)
		provisioned <- pv
	}()
	deleted := make(chan error)
	go func() { deleted <- g.Delete(ctx, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-old"}}) }()
	require.Eventually(t, func() bool { return g.inFlight() == 2 }, 5*time.Second, time.Millisecond)

	g.setOpen(false, "shutting down")
	_, _, err = g.Provision(ctx, controller.ProvisionOptions{PVName: "pvc-2"})
	require.ErrorAs(t, err, &ignored)
	assert.Equal(t, "shutting down", ignored.Reason)
	require.ErrorAs(t, g.Delete(ctx, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-3"}}), &ignored)
	assert.Equal(t, 1, inner.callCount(), "a closed gate calls nothing")

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	assert.Equal(t, 2, g.wait(short), "wait ends with the context while operations run")

	close(inner.release)
	assert.Error(t, <-deleted)
	pv := <-provisioned
	assert.Equal(t, 1, g.inFlight(), "the failed delete is done; the provision waits for its PV")

	// Not ours (a background retry of the library's): no effect.
	_, err = client.CoreV1().PersistentVolumes().Create(ctx, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-other"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, 1, g.inFlight())

	waited := make(chan int)
	go func() { waited <- g.wait(ctx) }()
	_, err = client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	require.NoError(t, err)
	select {
	case n := <-waited:
		assert.Equal(t, 0, n)
	case <-time.After(5 * time.Second):
		t.Fatalf("wait still blocks after the PV was created; %d in flight", g.inFlight())
	}
}

// A successful Delete ends when the library's delete of the PV returns.
func TestGateEndsADeleteWithThePV(t *testing.T) {
	t.Parallel()
	logger, ctx := ktesting.NewTestContext(t)
	inner := &fakeProvisioner{}
	g := newGate(inner, logger)
	g.setOpen(true, "")
	pv := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1"}}
	client := withPVWrites(fake.NewClientset(pv), g)
	require.NoError(t, g.Delete(ctx, pv))
	assert.Equal(t, 1, g.inFlight())
	require.NoError(t, client.CoreV1().PersistentVolumes().Delete(ctx, "pvc-1", metav1.DeleteOptions{}))
	assert.Equal(t, 0, g.inFlight())
}

type fakeProvisioner struct{}

func (fakeProvisioner) Provision(context.Context, controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	return nil, controller.ProvisioningFinished, errors.New("not used")
}
func (fakeProvisioner) Delete(context.Context, *v1.PersistentVolume) error { return nil }

// syncClock is a settable now() safe for the actor's goroutine.
type syncClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *syncClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *syncClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

const electionName = "example.com-nfs"

func incumbentEndpoints(renew time.Time) *v1.Endpoints {
	return &v1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "nfs", Name: electionName, Annotations: map[string]string{
		incumbent.LeaderAnnotation: fmt.Sprintf(`{"holderIdentity":"nfs-client-provisioner-7c9_0a1b","leaseDurationSeconds":15,"acquireTime":"2026-12-02T10:00:00Z","renewTime":%q}`, renew.UTC().Format(time.RFC3339)),
	}}}
}

// gaugeValue reads one of our gauges from the registry.
func gaugeValue(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// endpointReads counts the actor's readings of the incumbent's record.
func endpointReads(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "endpoints" && a.GetVerb() == "get" {
			n++
		}
	}
	return n
}

// waitReadings waits until the actor has read the record n more times, so
// that a claim it must not provision has had every chance to be.
func waitReadings(ctx context.Context, t *testing.T, client *fake.Clientset, n int) {
	t.Helper()
	target := endpointReads(client) + n
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return endpointReads(client) >= target, nil
	}))
}

func waitPV(ctx context.Context, t *testing.T, client *fake.Clientset, name string) {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return err == nil, nil
	}), "PV %s", name)
}

// While the incumbent's record is live nothing is provisioned, before this
// replica first acts and after an incumbent comes back; once the record
// lapses, the claims waiting get their volumes.
func TestNoProvisioningWhileTheIncumbentLeads(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	renewed := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	clk := &syncClock{t: renewed.Add(time.Second)}
	root := t.TempDir()
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs"}, Provisioner: provisionerName}
	client := fake.NewClientset(class, incumbentEndpoints(renewed))
	m := metrics.New()
	startActing(ctx, t, client, root, incumbent.NewChecker(client.CoreV1(), "nfs", electionName, "me", clk.now), m)

	pvcs := client.CoreV1().PersistentVolumeClaims("team-a")
	_, err := pvcs.Create(ctx, testClaim("first", nil), metav1.CreateOptions{})
	require.NoError(t, err)
	waitReadings(ctx, t, client, 5)
	assert.Equal(t, 1.0, gaugeValue(t, m, "nfs_provisioner_waiting_for_incumbent"))
	assert.Equal(t, 0.0, gaugeValue(t, m, "nfs_provisioner_leader"))
	_, err = client.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-first", metav1.GetOptions{})
	assert.Error(t, err, "no PV while the incumbent leads")
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries, "no directory while the incumbent leads")

	clk.set(renewed.Add(15 * time.Second))
	waitPV(ctx, t, client, "pvc-uid-first")
	assert.DirExists(t, filepath.Join(root, "team-a-first-pvc-uid-first"))
	assert.Equal(t, 0.0, gaugeValue(t, m, "nfs_provisioner_waiting_for_incumbent"))
	assert.Equal(t, 1.0, gaugeValue(t, m, "nfs_provisioner_leader"))

	// It comes back (a rollback): we pause, then resume once it lapses.
	back := renewed.Add(time.Minute)
	_, err = client.CoreV1().Endpoints("nfs").Update(ctx, incumbentEndpoints(back), metav1.UpdateOptions{})
	require.NoError(t, err)
	clk.set(back.Add(time.Second))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return gaugeValue(t, m, "nfs_provisioner_waiting_for_incumbent") == 1 && gaugeValue(t, m, "nfs_provisioner_leader") == 0, nil
	}), "paused for the incumbent")
	_, err = pvcs.Create(ctx, testClaim("second", nil), metav1.CreateOptions{})
	require.NoError(t, err)
	waitReadings(ctx, t, client, 5)
	_, err = client.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-second", metav1.GetOptions{})
	assert.Error(t, err, "no PV while the incumbent leads again")
	assert.NoDirExists(t, filepath.Join(root, "team-a-second-pvc-uid-second"))

	require.NoError(t, client.CoreV1().Endpoints("nfs").Delete(ctx, electionName, metav1.DeleteOptions{}))
	waitPV(ctx, t, client, "pvc-uid-second")
	assert.DirExists(t, filepath.Join(root, "team-a-second-pvc-uid-second"))
}

// failingChecker never reads the record.
type failingChecker struct{ calls atomic.Int64 }

func (f *failingChecker) Check(context.Context) (incumbent.Status, error) {
	f.calls.Add(1)
	return incumbent.Status{}, errors.New("endpoints is forbidden")
}
func (*failingChecker) Object() string { return "nfs/" + electionName }

// Not knowing whether the incumbent runs is not knowing it stopped.
func TestNoProvisioningWhileTheRecordCannotBeRead(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs"}, Provisioner: provisionerName}
	client := fake.NewClientset(class)
	m := metrics.New()
	checker := &failingChecker{}
	startActing(ctx, t, client, t.TempDir(), checker, m)
	_, err := client.CoreV1().PersistentVolumeClaims("team-a").Create(ctx, testClaim("c", nil), metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return checker.calls.Load() >= 10, nil
	}))
	assert.Equal(t, 1.0, gaugeValue(t, m, "nfs_provisioner_waiting_for_incumbent"))
	_, err = client.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-c", metav1.GetOptions{})
	assert.Error(t, err)
	assert.Equal(t, 0.0, gaugeValue(t, m, "nfs_provisioner_leader"))
}

// Volume expansion is gated like provisioning: nothing is resized while the
// incumbent leads, before this replica first acts or after the incumbent
// comes back.
func TestNoResizeWhileTheIncumbentLeads(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	renewed := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	clk := &syncClock{t: renewed.Add(time.Second)}
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs"}, Provisioner: provisionerName, AllowVolumeExpansion: ptr(true)}
	pvc := testClaim("data", nil)
	pvc.Spec.VolumeName = "pv-data"
	pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("10Gi")
	// As a replica that stopped after the first step leaves it: the
	// controller goes on from its cached copy, which must be whole.
	pvc.Annotations[v1.LastAppliedConfigAnnotation] = `{"kind":"PersistentVolumeClaim"}`
	pvc.Status = v1.PersistentVolumeClaimStatus{
		Phase:                     v1.ClaimBound,
		Capacity:                  v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")},
		AllocatedResources:        v1.ResourceList{v1.ResourceStorage: resource.MustParse("10Gi")},
		AllocatedResourceStatuses: map[v1.ResourceName]v1.ClaimResourceStatus{v1.ResourceStorage: v1.PersistentVolumeClaimControllerResizeInProgress},
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-data", Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:               v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")},
			PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "10.0.0.5", Path: "/srv/nfs/team-a-data"}},
			ClaimRef:               &v1.ObjectReference{Namespace: "team-a", Name: "data", UID: pvc.UID},
			StorageClassName:       "nfs",
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	client := fake.NewClientset(class, pv, pvc, incumbentEndpoints(renewed))
	startActing(ctx, t, client, t.TempDir(), incumbent.NewChecker(client.CoreV1(), "nfs", electionName, "me", clk.now), metrics.New())

	pvCapacity := func() string {
		pv, err := client.CoreV1().PersistentVolumes().Get(ctx, "pv-data", metav1.GetOptions{})
		require.NoError(t, err)
		return pv.Spec.Capacity.Storage().String()
	}
	waitCapacity := func(want string) {
		t.Helper()
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			c, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
			return err == nil && pvCapacity() == want && c.Status.Capacity.Storage().String() == want, err
		}), "resized to %s", want)
	}
	waitReadings(ctx, t, client, 5)
	assert.Equal(t, "2Gi", pvCapacity(), "no resize while the incumbent leads")

	clk.set(renewed.Add(15 * time.Second))
	waitCapacity("10Gi")
	waitForEvent(ctx, t, client, "data", "VolumeResizeSuccessful")
	c, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "true", c.Annotations["volume.kubernetes.io/node-expansion-not-required"])
	assert.Contains(t, c.Annotations, v1.LastAppliedConfigAnnotation, "kubectl's annotation is kept")

	// It comes back: a new request waits until it lapses again.
	back := renewed.Add(time.Minute)
	_, err = client.CoreV1().Endpoints("nfs").Update(ctx, incumbentEndpoints(back), metav1.UpdateOptions{})
	require.NoError(t, err)
	clk.set(back.Add(time.Second))
	waitReadings(ctx, t, client, 3)
	c, err = client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
	require.NoError(t, err)
	c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("20Gi")
	_, err = client.CoreV1().PersistentVolumeClaims("team-a").Update(ctx, c, metav1.UpdateOptions{})
	require.NoError(t, err)
	waitReadings(ctx, t, client, 5)
	assert.Equal(t, "10Gi", pvCapacity(), "no resize while the incumbent leads again")

	require.NoError(t, client.CoreV1().Endpoints("nfs").Delete(ctx, electionName, metav1.DeleteOptions{}))
	waitCapacity("20Gi")
}

// cancellingProvisioner counts CancelClones calls.
type cancellingProvisioner struct {
	blockingProvisioner
	cancelled atomic.Int32
	waited    atomic.Int32
}

func (c *cancellingProvisioner) CancelClones(ctx context.Context) {
	c.cancelled.Add(1)
	if ctx.Err() == nil {
		c.waited.Add(1)
	}
}

// Pausing stops the copies of clones: waiting for them when stopping
// gracefully, not when the Lease is lost.
func TestPauseCancelsClones(t *testing.T) {
	t.Parallel()
	logger, ctx := ktesting.NewTestContext(t)
	inner := &cancellingProvisioner{blockingProvisioner: blockingProvisioner{release: make(chan struct{})}}
	a := &actor{logger: logger, gate: newGate(inner, logger), grace: time.Second, metrics: metrics.New()}
	a.pause(ctx, "stopping")
	assert.Equal(t, int32(1), inner.cancelled.Load())
	assert.Equal(t, int32(1), inner.waited.Load())
	lost, cancel := context.WithCancel(ctx)
	cancel()
	a.pause(lost, "Lease lost")
	assert.Equal(t, int32(2), inner.cancelled.Load())
	assert.Equal(t, int32(1), inner.waited.Load(), "a lost Lease waits for nothing")
}
