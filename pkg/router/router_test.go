package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/placement"
)

// backend is a fake provisioner of one export.
type backend struct {
	name     string
	mu       sync.Mutex
	provided []string // PV names provisioned
	deleted  []string
	err      error // returned by Provision
	state    controller.ProvisioningState
	recorded map[string]bool
	server   bool // OnServer's answer
	source   *v1.PersistentVolume
}

func (b *backend) Provision(_ context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.provided = append(b.provided, opts.PVName)
	if b.err != nil {
		return nil, controller.ProvisioningFinished, b.err
	}
	if b.state == controller.ProvisioningInBackground {
		return nil, b.state, errors.New("copying")
	}
	return &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: opts.PVName}}, controller.ProvisioningFinished, nil
}

func (b *backend) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deleted = append(b.deleted, pv.Name)
	return nil
}

func (b *backend) VolumeAdded(*v1.PersistentVolume) {}
func (b *backend) Recorded(_ context.Context, pv string) (bool, error) {
	return b.recorded[pv], nil
}
func (b *backend) OnServer(context.Context, *v1.PersistentVolume) (bool, error) { return b.server, nil }
func (b *backend) CloneSourceVolume(context.Context, *v1.PersistentVolumeClaim) (*v1.PersistentVolume, error) {
	return b.source, nil
}
func (b *backend) CancelClones(context.Context) {}

type usage struct{ free uint64 }

func (u usage) Usage(context.Context) (exportfs.Usage, error) {
	return exportfs.Usage{FreeBytes: u.free, TotalBytes: u.free}, nil
}
func (u usage) Hung() (time.Time, int) { return time.Time{}, 0 }

type env struct {
	r        *Router
	fast     *backend
	bulk     *backend
	twin     *backend
	metrics  *metrics.Metrics
	backends map[string]*backend
}

// newEnv serves fast (10 GiB free), bulk (20 GiB free) and twin, on the
// same path as fast on another server.
func newEnv(t *testing.T) *env {
	t.Helper()
	set, err := exports.NewSet([]exports.Export{
		{Name: "fast", Server: "10.0.0.1", Path: "/ssd", Dir: "/exports/fast"},
		{Name: "bulk", Server: "10.0.0.2", Path: "/hdd", Dir: "/exports/bulk"},
		{Name: "twin", Server: "10.0.0.3", Path: "/ssd", Dir: "/exports/twin"},
	})
	require.NoError(t, err)
	e := &env{fast: &backend{name: "fast"}, bulk: &backend{name: "bulk"}, twin: &backend{name: "twin"}, metrics: metrics.New("fast", "bulk", "twin")}
	e.backends = map[string]*backend{"fast": e.fast, "bulk": e.bulk, "twin": e.twin}
	placer := placement.New(placement.Config{Exports: map[string]placement.Export{
		"fast": usage{10 << 30}, "bulk": usage{20 << 30}, "twin": usage{1 << 30},
	}})
	e.r = New(Config{
		Exports:   set,
		Backends:  map[string]Backend{"fast": e.fast, "bulk": e.bulk, "twin": e.twin},
		Placer:    placer,
		Metrics:   e.metrics,
		IsRefusal: func(error) bool { return false },
	})
	return e
}

func provisionOpts(uid string, params map[string]string, size string) controller.ProvisionOptions {
	return controller.ProvisionOptions{
		StorageClass: &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "sc"}, Parameters: params},
		PVName:       "pvc-" + uid,
		PVC: &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c" + uid, UID: types.UID(uid)},
			Spec: v1.PersistentVolumeClaimSpec{Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{
				v1.ResourceStorage: resource.MustParse(size),
			}}},
		},
	}
}

func (e *env) provisioned() map[string][]string {
	out := map[string][]string{}
	for name, b := range e.backends {
		if len(b.provided) > 0 {
			out[name] = b.provided
		}
	}
	return out
}

func TestProvisionRouting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("unknown export refused, nothing called", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,nope"}, "1Gi"))
		require.ErrorContains(t, err, `StorageClass "sc" names export "nope", which this provisioner doesn't serve: it serves "fast", "bulk", "twin"`)
		assert.Empty(t, e.provisioned())
		assert.EqualValues(t, 1, testutil.ToFloat64(e.metrics.Operations(metrics.OpProvision, metrics.Refused, metrics.NoExport)))
	})
	t.Run("no export parameter means default", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", nil, "1Gi"))
		require.ErrorContains(t, err, `names export "default", which this provisioner doesn't serve`)
	})
	t.Run("bad class refused", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast", "overcommitRatio": "2"}, "1Gi"))
		require.ErrorContains(t, err, `StorageClass "sc": invalid StorageClass parameters: parameter "overcommitRatio"`)
		assert.EqualValues(t, 1, testutil.ToFloat64(e.metrics.Operations(metrics.OpProvision, metrics.Refused, metrics.NoExport)))
	})
	t.Run("one export", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast"}, "1Gi"))
		require.NoError(t, err)
		assert.Equal(t, map[string][]string{"fast": {"pvc-1"}}, e.provisioned())
	})
	t.Run("most free", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,bulk"}, "1Gi"))
		require.NoError(t, err)
		assert.Equal(t, map[string][]string{"bulk": {"pvc-1"}}, e.provisioned())
	})
	t.Run("capacity refused on every export", func(t *testing.T) {
		e := newEnv(t)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,bulk", "capacityCheck": "true"}, "30Gi"))
		require.ErrorContains(t, err, `no export has room for the claim's 30Gi: export "fast" has 10Gi free`)
		assert.ErrorContains(t, err, `export "bulk" has 20Gi free`)
		assert.Empty(t, e.provisioned())
		assert.EqualValues(t, 1, testutil.ToFloat64(e.metrics.Operations(metrics.OpProvision, metrics.Refused, metrics.NoExport)))
	})
	t.Run("a timed-out attempt retries on its export", func(t *testing.T) {
		e := newEnv(t)
		e.bulk.err = fmt.Errorf("creating: %w", exportfs.ErrTimeout)
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,bulk"}, "1Gi"))
		require.ErrorIs(t, err, exportfs.ErrTimeout)
		e.bulk.err = nil
		// Fill bulk up in the placer's eyes: the retry must still go there.
		_, _, err = e.r.Provision(ctx, provisionOpts("big", map[string]string{"export": "bulk"}, "15Gi"))
		require.NoError(t, err)
		_, _, err = e.r.Provision(ctx, provisionOpts("other", map[string]string{"export": "fast,bulk"}, "1Gi"))
		require.NoError(t, err)
		require.Equal(t, []string{"pvc-other"}, e.fast.provided, "bulk now has less room than fast")
		_, _, err = e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,bulk"}, "1Gi"))
		require.NoError(t, err)
		assert.Equal(t, []string{"pvc-1", "pvc-big", "pvc-1"}, e.bulk.provided, "back to bulk")
	})
	t.Run("a clean failure is placed afresh", func(t *testing.T) {
		for _, fail := range []error{errors.New("permission denied"), fmt.Errorf("the export has not answered for 1m: %w", exportfs.ErrNotSent)} {
			e := newEnv(t)
			e.bulk.err = fail
			_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,bulk"}, "1Gi"))
			require.Error(t, err)
			_, ok := e.r.stuck("1")
			assert.False(t, ok, "%v", fail)
		}
	})
	t.Run("the ledger sends a retry back", func(t *testing.T) {
		e := newEnv(t)
		e.fast.recorded = map[string]bool{"pvc-1": true}
		_, _, err := e.r.Provision(ctx, provisionOpts("1", map[string]string{"export": "fast,bulk"}, "1Gi"))
		require.NoError(t, err)
		assert.Equal(t, map[string][]string{"fast": {"pvc-1"}}, e.provisioned(), "fast's ledger records pvc-1, though bulk has more free")
	})
	t.Run("a clone goes to its source's export", func(t *testing.T) {
		e := newEnv(t)
		src := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "src", Annotations: map[string]string{exports.Annotation: "fast"}},
			Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "10.0.0.1", Path: "/ssd/a"}}}}
		for _, b := range e.backends {
			b.source = src
		}
		opts := provisionOpts("1", map[string]string{"export": "bulk,fast"}, "1Gi")
		opts.PVC.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
		e.fast.state = controller.ProvisioningInBackground
		_, state, _ := e.r.Provision(ctx, opts)
		assert.Equal(t, controller.ProvisioningInBackground, state)
		for _, b := range e.backends {
			b.source = nil // a running copy is not looked up again
		}
		_, _, _ = e.r.Provision(ctx, opts)
		assert.Equal(t, map[string][]string{"fast": {"pvc-1", "pvc-1"}}, e.provisioned())

		e = newEnv(t)
		for _, b := range e.backends {
			b.source = src
		}
		_, _, err := e.r.Provision(ctx, provisionOpts("2", map[string]string{"export": "bulk"}, "1Gi"))
		require.NoError(t, err, "no data source: placed as usual")
		opts = provisionOpts("3", map[string]string{"export": "bulk"}, "1Gi")
		opts.PVC.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
		_, _, err = e.r.Provision(ctx, opts)
		require.ErrorContains(t, err, `the clone's source PersistentVolume "src" is on export "fast", which StorageClass "sc" doesn't name`)
	})
}

func TestDeleteRouting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pv := func(name, server, path string, ann map[string]string) *v1.PersistentVolume {
		return &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: server, Path: path}}}}
	}
	e := newEnv(t)
	e.twin.server = true // "nfs.example" is twin's server in DNS
	for _, p := range []*v1.PersistentVolume{
		pv("annotated", "10.0.0.2", "/hdd/a", map[string]string{exports.Annotation: "bulk"}),
		pv("by-path", "whatever", "/hdd/b", nil),
		pv("by-server", "10.0.0.1", "/ssd/c", nil),
		pv("by-dns", "nfs.example", "/ssd/d", nil),
		pv("on-none", "10.0.0.9", "/elsewhere/e", nil),
	} {
		require.NoError(t, e.r.Delete(ctx, p), p.Name)
	}
	assert.Equal(t, []string{"annotated", "by-path"}, e.bulk.deleted)
	assert.Equal(t, []string{"by-server", "on-none"}, e.fast.deleted, "on none: the first export refuses it, saying why")
	assert.Equal(t, []string{"by-dns"}, e.twin.deleted)

	err := e.r.Delete(ctx, pv("gone", "10.0.0.2", "/hdd/a", map[string]string{exports.Annotation: "gone"}))
	require.ErrorContains(t, err, `PV "gone" records export "gone" (annotation nfs.kube-nfs.io/export), which this provisioner doesn't serve`)
	e.fast.server = true
	err = e.r.Delete(ctx, pv("ambiguous", "nfs.example", "/ssd/f", nil))
	require.ErrorContains(t, err, "may be on exports fast and twin, which name one server")
}
