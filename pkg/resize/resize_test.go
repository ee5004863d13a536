package resize

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

const (
	ours     = "example.com/nfs"
	claimKey = "team-a/data"
)

func class(name, provisioner string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner, AllowVolumeExpansion: ptr(true)}
}

func ptr[T any](v T) *T { return &v }

// boundClaim is team-a/data, bound to pv-1, asking for request, with 1Gi.
func boundClaim(request string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "data", UID: "uid-data", ResourceVersion: "7"},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: ptr("nfs"),
			VolumeName:       "pv-1",
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(request)}},
		},
		Status: v1.PersistentVolumeClaimStatus{
			Phase:    v1.ClaimBound,
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
		},
	}
}

// nfsVolume is pv-1 of 1Gi, ours, bound to team-a/data.
func nfsVolume() *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1", Annotations: map[string]string{AnnProvisionedBy: ours}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "10.0.0.5", Path: "/srv/nfs/team-a-data-pv-1"}},
			ClaimRef:                      &v1.ObjectReference{Namespace: "team-a", Name: "data", UID: "uid-data"},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
			StorageClassName:              "nfs",
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
}

type fixture struct {
	t        *testing.T
	ctx      context.Context
	client   *fake.Clientset
	claims   cache.SharedIndexInformer
	recorder *record.FakeRecorder
	metrics  *metrics.Metrics
	ctrl     *Controller
	now      time.Time
}

// newFixture holds the objects in the fake API and the claims in the
// informer's cache (not started: sync reads the cache, and tests put what
// the informer would hold there).
func newFixture(t *testing.T, feasibility Feasibility, objs ...runtime.Object) *fixture {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	f := &fixture{t: t, ctx: ctx, client: fake.NewClientset(objs...), recorder: record.NewFakeRecorder(20), metrics: metrics.New(),
		now: time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)}
	f.claims = informers.NewSharedInformerFactory(f.client, 0).Core().V1().PersistentVolumeClaims().Informer()
	classes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.PersistentVolumeClaim:
			require.NoError(t, f.claims.GetIndexer().Add(o))
		case *storagev1.StorageClass:
			require.NoError(t, classes.Add(o))
		}
	}
	f.ctrl = New(Config{
		ProvisionerName: ours, Client: f.client, Claims: f.claims, Classes: storagelisters.NewStorageClassLister(classes),
		Recorder: f.recorder, Metrics: f.metrics, Feasibility: feasibility,
		InfeasibleRetry: time.Minute, Now: func() time.Time { return f.now },
	})
	return f
}

func (f *fixture) sync() (time.Duration, error) {
	f.t.Helper()
	return f.ctrl.sync(f.ctx, claimKey)
}

func (f *fixture) claim() *v1.PersistentVolumeClaim {
	f.t.Helper()
	pvc, err := f.client.CoreV1().PersistentVolumeClaims("team-a").Get(f.ctx, "data", metav1.GetOptions{})
	require.NoError(f.t, err)
	return pvc
}

func (f *fixture) volume() *v1.PersistentVolume {
	f.t.Helper()
	pv, err := f.client.CoreV1().PersistentVolumes().Get(f.ctx, "pv-1", metav1.GetOptions{})
	require.NoError(f.t, err)
	return pv
}

// writes lists the writes made, as "verb resource[/subresource]".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "list" || a.GetVerb() == "get" || a.GetVerb() == "watch" {
			continue
		}
		s := a.GetVerb() + " " + a.GetResource().Resource
		if a.GetSubresource() != "" {
			s += "/" + a.GetSubresource()
		}
		out = append(out, s)
	}
	return out
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// assertExpanded checks the end state of a resize to size.
func (f *fixture) assertExpanded(size string) {
	f.t.Helper()
	want := resource.MustParse(size)
	pv := f.volume()
	assert.Zero(f.t, want.Cmp(pv.Spec.Capacity[v1.ResourceStorage]), "PV capacity %s", pv.Spec.Capacity.Storage())
	pvc := f.claim()
	assert.Zero(f.t, want.Cmp(pvc.Status.Capacity[v1.ResourceStorage]), "claim capacity %s", pvc.Status.Capacity.Storage())
	assert.Empty(f.t, pvc.Status.Conditions, "resize conditions cleared")
	assert.NotContains(f.t, pvc.Status.AllocatedResourceStatuses, v1.ResourceStorage)
	assert.Zero(f.t, want.Cmp(pvc.Status.AllocatedResources[v1.ResourceStorage]), "allocated %v", pvc.Status.AllocatedResources)
	assert.Equal(f.t, "true", pvc.Annotations[AnnNodeExpansionNotRequired])
	assert.Equal(f.t, "nfs", *pvc.Spec.StorageClassName, "spec untouched")
}

func counter(m *metrics.Metrics, outcome string) float64 {
	return testutil.ToFloat64(m.Resizes(outcome))
}

func TestFreshRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, class("nfs", ours), nfsVolume(), boundClaim("10Gi"))
	after, err := f.sync()
	require.NoError(t, err)
	assert.Zero(t, after)
	f.assertExpanded("10Gi")
	assert.Equal(t, []string{"patch persistentvolumeclaims/status", "patch persistentvolumes", "update persistentvolumeclaims", "patch persistentvolumeclaims/status"}, f.writes())
	assert.Equal(t, []string{"Normal VolumeResizing External resizer is resizing volume pv-1", "Normal VolumeResizeSuccessful Resize volume succeeded"}, f.events())
	assert.Equal(t, 1.0, counter(f.metrics, metrics.Success))
	assert.Equal(t, 0.0, counter(f.metrics, metrics.Failed))

	// The status patches carry the claim's resourceVersion, as
	// external-resizer's do; the PV patch only the capacity.
	var patches []string
	for _, a := range f.client.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			patches = append(patches, string(p.GetPatch()))
		}
	}
	require.Len(t, patches, 3)
	assert.Contains(t, patches[0], `"resourceVersion":"7"`)
	assert.Contains(t, patches[0], `"allocatedResourceStatuses":{"storage":"ControllerResizeInProgress"}`)
	assert.Contains(t, patches[0], `"type":"Resizing"`)
	assert.JSONEq(t, `{"spec":{"capacity":{"storage":"10Gi"}}}`, patches[1])
	assert.Contains(t, patches[2], `"resourceVersion"`)
	assert.Contains(t, patches[2], `"capacity":{"storage":"10Gi"}`)

	// Done: another pass writes nothing.
	require.NoError(t, f.claims.GetIndexer().Update(f.claim()))
	f.client.ClearActions()
	_, err = f.sync()
	require.NoError(t, err)
	assert.Empty(t, f.writes())
}

// inProgress is the claim as step 1 leaves it.
func inProgress(request string) *v1.PersistentVolumeClaim {
	pvc := boundClaim(request)
	pvc.Status.AllocatedResources = v1.ResourceList{v1.ResourceStorage: resource.MustParse(request)}
	pvc.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{v1.ResourceStorage: v1.PersistentVolumeClaimControllerResizeInProgress}
	pvc.Status.Conditions = []v1.PersistentVolumeClaimCondition{{Type: v1.PersistentVolumeClaimResizing, Status: v1.ConditionTrue}}
	return pvc
}

func TestRestartAfterTheClaimStatusStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, class("nfs", ours), nfsVolume(), inProgress("10Gi"))
	_, err := f.sync()
	require.NoError(t, err)
	f.assertExpanded("10Gi")
	assert.Equal(t, []string{"patch persistentvolumes", "update persistentvolumeclaims", "patch persistentvolumeclaims/status"}, f.writes(), "step 1 is not repeated")
	assert.Equal(t, []string{"Normal VolumeResizeSuccessful Resize volume succeeded"}, f.events())
}

func TestRestartAfterThePVStep(t *testing.T) {
	t.Parallel()
	pv := nfsVolume()
	pv.Spec.Capacity[v1.ResourceStorage] = resource.MustParse("10Gi")
	f := newFixture(t, nil, class("nfs", ours), pv, inProgress("10Gi"))
	_, err := f.sync()
	require.NoError(t, err)
	f.assertExpanded("10Gi")
	assert.Equal(t, []string{"update persistentvolumeclaims", "patch persistentvolumeclaims/status"}, f.writes(), "the PV is not patched again")
}

func TestRestartAfterTheAnnotation(t *testing.T) {
	t.Parallel()
	pv := nfsVolume()
	pv.Spec.Capacity[v1.ResourceStorage] = resource.MustParse("10Gi")
	pvc := inProgress("10Gi")
	pvc.Annotations = map[string]string{AnnNodeExpansionNotRequired: "true"}
	f := newFixture(t, nil, class("nfs", ours), pv, pvc)
	_, err := f.sync()
	require.NoError(t, err)
	f.assertExpanded("10Gi")
	assert.Equal(t, []string{"patch persistentvolumeclaims/status"}, f.writes())
}

// refuseAbove refuses sizes above max.
type refuseAbove struct{ max resource.Quantity }

func (r refuseAbove) Check(_ context.Context, pv *v1.PersistentVolume, _ *v1.PersistentVolumeClaim, size resource.Quantity) error {
	if size.Cmp(r.max) > 0 {
		return errors.New("export has 5Gi free, volume " + pv.Name + " cannot grow to " + size.String())
	}
	return nil
}

func TestInfeasibleThenLowered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, refuseAbove{resource.MustParse("5Gi")}, class("nfs", ours), nfsVolume(), boundClaim("100Gi"))
	after, err := f.sync()
	require.NoError(t, err)
	assert.Equal(t, time.Minute, after, "looked at again after InfeasibleRetry")
	assert.Equal(t, "1Gi", f.volume().Spec.Capacity.Storage().String(), "no PV change")
	pvc := f.claim()
	assert.Equal(t, v1.PersistentVolumeClaimControllerResizeInfeasible, pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage])
	assert.Equal(t, "100Gi", pvc.Status.AllocatedResources.Storage().String())
	assert.Equal(t, "1Gi", pvc.Status.Capacity.Storage().String())
	var failed *v1.PersistentVolumeClaimCondition
	for i, c := range pvc.Status.Conditions {
		if c.Type == v1.PersistentVolumeClaimControllerResizeError {
			failed = &pvc.Status.Conditions[i]
		}
	}
	require.NotNil(t, failed, "%+v", pvc.Status.Conditions)
	assert.Equal(t, "failed to expand pvc with export has 5Gi free, volume pv-1 cannot grow to 100Gi", failed.Message)
	assert.Equal(t, []string{"patch persistentvolumeclaims/status", "patch persistentvolumeclaims/status"}, f.writes())
	events := f.events()
	require.Len(t, events, 2)
	assert.Equal(t, "Warning VolumeResizeFailed export has 5Gi free, volume pv-1 cannot grow to 100Gi", events[1])
	assert.Equal(t, 1.0, counter(f.metrics, metrics.Infeasible))

	// Any update of the claim meanwhile: no new check, Event or write.
	require.NoError(t, f.claims.GetIndexer().Update(pvc))
	f.client.ClearActions()
	f.now = f.now.Add(20 * time.Second)
	after, err = f.sync()
	require.NoError(t, err)
	assert.Equal(t, 40*time.Second, after)
	assert.Empty(t, f.writes())
	assert.Empty(t, f.events())

	// Once InfeasibleRetry has passed, the same size is checked again, and
	// refused again without rewriting the claim.
	f.now = f.now.Add(time.Minute)
	_, err = f.sync()
	require.NoError(t, err)
	assert.Empty(t, f.writes(), "the claim already says so")
	assert.Equal(t, []string{"Warning VolumeResizeFailed export has 5Gi free, volume pv-1 cannot grow to 100Gi"}, f.events())

	// The user lowers the request (the API server allows down to just
	// above status.capacity): the infeasible state clears and the smaller
	// size is done.
	pvc = f.claim()
	pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("5Gi")
	pvc, err = f.client.CoreV1().PersistentVolumeClaims("team-a").Update(f.ctx, pvc, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.claims.GetIndexer().Update(pvc))
	_, err = f.sync()
	require.NoError(t, err)
	f.assertExpanded("5Gi")
	assert.Equal(t, 1.0, counter(f.metrics, metrics.Success))
}

func TestNotOurs(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		class  *storagev1.StorageClass
		mutate func(*v1.PersistentVolume)
	}{
		"another provisioner's class": {class: class("nfs", "other.example.com/csi")},
		"another provisioner's PV": {class: class("nfs", ours), mutate: func(pv *v1.PersistentVolume) {
			pv.Annotations[AnnProvisionedBy] = "other.example.com/nfs"
		}},
		"not an NFS PV": {class: class("nfs", ours), mutate: func(pv *v1.PersistentVolume) {
			pv.Spec.NFS = nil
			pv.Spec.CSI = &v1.CSIPersistentVolumeSource{Driver: ours, VolumeHandle: "h"}
		}},
		"PV bound to another claim": {class: class("nfs", ours), mutate: func(pv *v1.PersistentVolume) {
			pv.Spec.ClaimRef.UID = "uid-other"
		}},
		"no class": {class: class("other", ours)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pv := nfsVolume()
			if tc.mutate != nil {
				tc.mutate(pv)
			}
			f := newFixture(t, nil, tc.class, pv, boundClaim("10Gi"))
			_, err := f.sync()
			require.NoError(t, err)
			assert.Empty(t, f.writes())
			assert.Empty(t, f.events())
			assert.Equal(t, "1Gi", f.volume().Spec.Capacity.Storage().String())
		})
	}
}

// A stale claim fails the status patch with a conflict: nothing else is
// written and the error says so, for a rate-limited retry.
func TestConflictIsRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, class("nfs", ours), nfsVolume(), boundClaim("10Gi"))
	f.client.PrependReactor("patch", "persistentvolumeclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "persistentvolumeclaims"}, "data", errors.New("the object has been modified"))
	})
	_, err := f.sync()
	require.Error(t, err)
	assert.True(t, apierrors.IsConflict(err), "%v", err)
	assert.Contains(t, err.Error(), "recording on claim team-a/data that its volume grows to 10Gi")
	assert.Equal(t, []string{"patch persistentvolumeclaims/status"}, f.writes())
	assert.Equal(t, "1Gi", f.volume().Spec.Capacity.Storage().String())
}

// Run expands claims from the informer, and returns when its context ends.
func TestRunExpandsAndStops(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset(nfsVolume(), boundClaim("10Gi"))
	factory := informers.NewSharedInformerFactory(client, 0)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	classes := factory.Storage().V1().StorageClasses()
	classIndexer := classes.Informer().GetIndexer()
	require.NoError(t, classIndexer.Add(class("nfs", ours)))
	infCtx, stopInformers := context.WithCancel(ctx)
	defer stopInformers()
	go claims.Run(infCtx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), claims.HasSynced))

	c := New(Config{ProvisionerName: ours, Client: client, Claims: claims, Classes: classes.Lister(), Recorder: record.NewFakeRecorder(10), Metrics: metrics.New(), Workers: 2})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(runCtx)
	}()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		pvc, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
		return err == nil && pvc.Status.Capacity.Storage().String() == "10Gi", err
	}))
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}

	// Stopped: a new request is left alone.
	pvc, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
	require.NoError(t, err)
	pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("20Gi")
	_, err = client.CoreV1().PersistentVolumeClaims("team-a").Update(ctx, pvc, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		obj, ok, _ := claims.GetIndexer().GetByKey(claimKey)
		return ok && obj.(*v1.PersistentVolumeClaim).Spec.Resources.Requests.Storage().String() == "20Gi", nil
	}))
	time.Sleep(100 * time.Millisecond) // nothing to wait for: proving an absence
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, "pv-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "10Gi", pv.Spec.Capacity.Storage().String(), "no resize after Run returned")
}

// blockingCheck accepts every size once release is closed.
type blockingCheck struct {
	started chan struct{}
	release chan struct{}
}

// Check fails if its context ended meanwhile, as an API call would.
func (b blockingCheck) Check(ctx context.Context, _ *v1.PersistentVolume, _ *v1.PersistentVolumeClaim, _ resource.Quantity) error {
	select {
	case b.started <- struct{}{}:
	default:
	}
	<-b.release
	return ctx.Err()
}

// Stopping lets the step in flight finish and abandons the next; the next
// Run resumes from what the claim records.
func TestStopFinishesTheStepInFlightAndAbandonsTheRest(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset(nfsVolume(), boundClaim("10Gi"))
	factory := informers.NewSharedInformerFactory(client, 0)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	classes := factory.Storage().V1().StorageClasses()
	require.NoError(t, classes.Informer().GetIndexer().Add(class("nfs", ours)))
	infCtx, stopInformers := context.WithCancel(ctx)
	defer stopInformers()
	go claims.Run(infCtx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), claims.HasSynced))

	check := blockingCheck{started: make(chan struct{}, 1), release: make(chan struct{})}
	c := New(Config{ProvisionerName: ours, Client: client, Claims: claims, Classes: classes.Lister(), Recorder: record.NewFakeRecorder(10), Metrics: metrics.New(), Feasibility: check})
	run := func(ctx context.Context) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.Run(ctx)
		}()
		return done
	}
	runCtx, stop := context.WithCancel(ctx)
	done := run(runCtx)
	select {
	case <-check.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the feasibility check never ran")
	}
	stop()
	select {
	case <-done:
		t.Fatal("Run returned with a step in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(check.release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once the step finished")
	}
	pvc, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1.PersistentVolumeClaimControllerResizeInProgress, pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage], "step 1 landed")
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, "pv-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "1Gi", pv.Spec.Capacity.Storage().String(), "the PV step was abandoned")

	runCtx, stop = context.WithCancel(ctx)
	defer stop()
	run(runCtx)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		pvc, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
		return err == nil && pvc.Status.Capacity.Storage().String() == "10Gi" && len(pvc.Status.AllocatedResourceStatuses) == 0, err
	}), "the next Run resumes")
}
