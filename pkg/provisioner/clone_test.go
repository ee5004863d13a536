package provisioner

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/clone"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// cloneEnv is an env that clones, with the source claim "src" of namespace
// "ns" Bound to a PV of ours whose directory holds a file.
type cloneEnv struct {
	*env
	client  *fake.Clientset
	sc      *storagev1.StorageClass
	src     *v1.PersistentVolumeClaim
	srcPV   *v1.PersistentVolume
	srcDir  string
	mu      sync.Mutex
	patches []string
}

func newCloneEnv(t *testing.T, mutate func(src *v1.PersistentVolumeClaim, pv *v1.PersistentVolume)) *cloneEnv {
	t.Helper()
	e := &cloneEnv{env: newEnv(t, testPath), sc: class("nfs", nil)}
	src := claim("ns", "src", "uid-src")
	src.Spec.StorageClassName = &e.sc.Name
	pv, err := e.provision(t, e.sc, src)
	require.NoError(t, err)
	pv.Annotations[annProvisionedBy] = e.sc.Provisioner
	e.srcDir = pv.Annotations[AnnDirectory]
	require.NoError(t, os.WriteFile(filepath.Join(e.root, e.srcDir, "data"), []byte("to be cloned"), 0o640))
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, e.srcDir, "sub"), 0o755))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(e.root, e.srcDir, "sub", "link")))
	src.Status.Phase = v1.ClaimBound
	src.Spec.VolumeName = pv.Name
	src.ResourceVersion = "1"
	src.Status.Capacity = v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}
	if mutate != nil {
		mutate(src, pv)
	}
	e.src, e.srcPV = src, pv
	e.client = fake.NewSimpleClientset(src, pv)
	e.client.PrependReactor("patch", "persistentvolumeclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.patches = append(e.patches, string(a.(k8stesting.PatchAction).GetPatch()))
		return false, nil, nil
	})
	e.p.cfg.Clone = &CloneConfig{Client: e.client, Root: e.root}
	return e
}

func (e *cloneEnv) cloneClaim(name, uid string, mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := claim("ns", name, uid)
	c.Spec.StorageClassName = &e.sc.Name
	c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	c.Spec.DataSourceRef = &v1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	for _, m := range mutate {
		m(c)
	}
	return c
}

// await calls Provision as the library does until it is finished.
func (e *cloneEnv) await(t *testing.T, pvc *v1.PersistentVolumeClaim) (*v1.PersistentVolume, error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pv, state, err := e.p.Provision(context.Background(), opts(e.sc, pvc))
		if state != controller.ProvisioningInBackground {
			return pv, err
		}
		require.Error(t, err, "in the background: an error the library retries on")
		require.True(t, time.Now().Before(deadline), "copy still running: %v", err)
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *cloneEnv) finalizers(t *testing.T) []string {
	t.Helper()
	src, err := e.client.CoreV1().PersistentVolumeClaims("ns").Get(context.Background(), "src", metav1.GetOptions{})
	require.NoError(t, err)
	return src.Finalizers
}

func TestCloneCopiesThenReturnsTheVolume(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	pvc := e.cloneClaim("copy", "uid-copy")
	pv, state, err := e.p.Provision(context.Background(), opts(e.sc, pvc))
	assert.Nil(t, pv)
	assert.Equal(t, controller.ProvisioningInBackground, state)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `copying PersistentVolumeClaim "src" into the new volume`)

	pv, err = e.await(t, pvc)
	require.NoError(t, err)
	require.NotNil(t, pv)
	dir := pv.Annotations[AnnDirectory]
	assert.Equal(t, "ns-copy-pvc-uid-copy", dir)
	b, err := os.ReadFile(filepath.Join(e.root, dir, "data"))
	require.NoError(t, err)
	assert.Equal(t, "to be cloned", string(b))
	target, err := os.Readlink(filepath.Join(e.root, dir, "sub", "link"))
	require.NoError(t, err)
	assert.Equal(t, "/etc/passwd", target)
	fi, err := os.Stat(filepath.Join(e.root, dir))
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o777, fi.Mode(), "the class's mode on the root, not the source's")

	e.mu.Lock()
	patches := slices.Clone(e.patches)
	e.mu.Unlock()
	require.Len(t, patches, 2, "finalizer added, then removed")
	assert.Contains(t, patches[0], FinalizerCloneSource)
	assert.Contains(t, patches[0], `"resourceVersion":"1"`, "added at the version the checks read")
	assert.NotContains(t, patches[1], FinalizerCloneSource)
	assert.NotContains(t, e.finalizers(t), FinalizerCloneSource)
	assert.InDelta(t, 2, e.count(metrics.OpProvision, metrics.Success), 0, "the source and the clone")

	// Like the library: the PV appears, and the job is forgotten.
	require.NoError(t, e.volumes.Add(pv))
	e.p.VolumeAdded(pv)
	e.p.mu.Lock()
	assert.Empty(t, e.p.clones)
	assert.Empty(t, e.p.reserved)
	e.p.mu.Unlock()
}

func TestCloneSourceRefusals(t *testing.T) {
	t.Parallel()
	now := metav1.Now()
	block := v1.PersistentVolumeBlock
	cases := map[string]struct {
		source  func(*v1.PersistentVolumeClaim, *v1.PersistentVolume)
		clone   func(*v1.PersistentVolumeClaim)
		wantErr string
	}{
		"missing": {
			clone:   func(c *v1.PersistentVolumeClaim) { c.Spec.DataSourceRef.Name = "nope" },
			wantErr: `source PersistentVolumeClaim "nope" of the clone does not exist in namespace "ns"`,
		},
		"other namespace": {
			clone:   func(c *v1.PersistentVolumeClaim) { ns := "other"; c.Spec.DataSourceRef.Namespace = &ns },
			wantErr: "only a claim of the same namespace can be cloned",
		},
		"being deleted": {
			source: func(s *v1.PersistentVolumeClaim, _ *v1.PersistentVolume) {
				s.DeletionTimestamp = &now
				s.Finalizers = []string{"x"}
			},
			wantErr: "is being deleted",
		},
		"pending": {
			source:  func(s *v1.PersistentVolumeClaim, _ *v1.PersistentVolume) { s.Status.Phase = v1.ClaimPending },
			wantErr: `is not Bound (phase "Pending")`,
		},
		"other class": {
			source: func(s *v1.PersistentVolumeClaim, _ *v1.PersistentVolume) {
				other := "slow"
				s.Spec.StorageClassName = &other
			},
			wantErr: `is of StorageClass "slow", the clone of "nfs"`,
		},
		"block": {
			clone:   func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block },
			wantErr: "has volumeMode Filesystem, the clone Block",
		},
		"smaller": {
			source: func(s *v1.PersistentVolumeClaim, _ *v1.PersistentVolume) {
				s.Status.Capacity = v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")}
			},
			wantErr: "the clone requests 1Gi, less than the 2Gi",
		},
		"not our PV": {
			source: func(_ *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) {
				pv.Annotations[annProvisionedBy] = "other.example.com/nfs"
			},
			wantErr: `which provisioner "example.com/nfs" did not make`,
		},
		"PV of another claim": {
			source:  func(_ *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) { pv.Spec.ClaimRef.UID = "someone-else" },
			wantErr: "is not bound to source PersistentVolumeClaim",
		},
		"PV on another export": {
			source:  func(_ *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) { pv.Spec.NFS.Path = "/elsewhere/x" },
			wantErr: `which is not a directory of this provisioner's export "/srv/nfs"`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newCloneEnv(t, tc.source)
			before := snapshot(t, e.root)
			var mutate []func(*v1.PersistentVolumeClaim)
			if tc.clone != nil {
				mutate = append(mutate, tc.clone)
			}
			pv, state, err := e.p.Provision(context.Background(), opts(e.sc, e.cloneClaim("copy", "uid-copy", mutate...)))
			assert.Nil(t, pv)
			assert.Equal(t, controller.ProvisioningFinished, state)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Equal(t, before, snapshot(t, e.root), "nothing created")
			assert.Empty(t, e.patches, "the source is left alone")
			assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)
		})
	}
}

func TestCloneRefusesSharingClasses(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	e.sc = class("nfs", map[string]string{"allowSharedPath": "true"})
	_, state, err := e.p.Provision(context.Background(), opts(e.sc, e.cloneClaim("copy", "uid-copy")))
	assert.Equal(t, controller.ProvisioningFinished, state)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a clone needs a new, empty directory of its own")
}

// TestCloneFailureLeavesNothing: a copy that fails removes its partial
// copy, its records and the finalizer, and the next call starts afresh.
func TestCloneFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	// The source's directory vanished from the export.
	require.NoError(t, os.RemoveAll(filepath.Join(e.root, e.srcDir)))
	before := snapshot(t, e.root)
	pvc := e.cloneClaim("copy", "uid-copy")
	pv, err := e.await(t, pvc)
	assert.Nil(t, pv)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `copying PersistentVolumeClaim "src" into directory "ns-copy-pvc-uid-copy"`)
	after := snapshot(t, e.root)
	for p := range after {
		if filepath.Base(p) == "ledger.jsonl" {
			delete(after, p)
		}
	}
	for p := range before {
		if filepath.Base(p) == "ledger.jsonl" {
			delete(before, p)
		}
	}
	assert.Equal(t, before, after, "the partial copy is gone")
	assert.NotContains(t, e.finalizers(t), FinalizerCloneSource)
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Failed), 0)
	e.p.mu.Lock()
	assert.Empty(t, e.p.clones)
	assert.NotContains(t, e.p.reserved, "pvc-uid-copy")
	e.p.mu.Unlock()

	// Once the source is back, the retry clones.
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, e.srcDir), 0o777))
	pv, err = e.await(t, pvc)
	require.NoError(t, err)
	assert.NotNil(t, pv)
}

// TestCloneCancelled: CancelClones stops a copy; it cleans up like a
// failure.
func TestCloneCancelled(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	release := make(chan struct{})
	// Hold the copy until it was cancelled.
	e.p.beforeCopy = func() { <-release }
	pvc := e.cloneClaim("copy", "uid-copy")
	_, state, _ := e.p.Provision(context.Background(), opts(e.sc, pvc))
	require.Equal(t, controller.ProvisioningInBackground, state)
	fi, err := os.Stat(filepath.Join(e.root, "ns-copy-pvc-uid-copy"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o700, fi.Mode(), "private while it is copied")
	go func() { time.Sleep(50 * time.Millisecond); close(release) }()
	e.p.CancelClones(context.Background())
	pv, err := e.await(t, pvc)
	assert.Nil(t, pv)
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, e.finalizers(t), FinalizerCloneSource, "left for the next leader, who may be copying already")
	_, err = os.Stat(filepath.Join(e.root, "ns-copy-pvc-uid-copy"))
	require.NoError(t, err, "left for the next leader, who may be copying into it already")

	// The next leader takes it over (it is still empty), clones, and
	// releases the source.
	e.restart()
	pv, err = e.await(t, pvc)
	require.NoError(t, err)
	assert.NotNil(t, pv)
	assert.NotContains(t, e.finalizers(t), FinalizerCloneSource)
}

// TestCloneAfterACrash: a provisioner that stopped mid-copy left a partial
// copy (and the finalizer); the next one's first attempt finds it, removes
// it and fails, and its retry clones.
func TestCloneAfterACrash(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	release := make(chan struct{})
	e.p.beforeCopy = func() { <-release }
	pvc := e.cloneClaim("copy", "uid-copy")
	_, state, _ := e.p.Provision(context.Background(), opts(e.sc, pvc))
	require.Equal(t, controller.ProvisioningInBackground, state)
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "ns-copy-pvc-uid-copy", "partial"), []byte("half"), 0o644))
	assert.Contains(t, e.finalizers(t), FinalizerCloneSource)

	old := e.p
	e.restart()
	e.p.beforeCopy = nil
	// The old one stopped, as pause or death would stop it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	old.CancelClones(ctx)
	pv, err := e.await(t, pvc)
	require.Error(t, err)
	assert.Nil(t, pv)
	assert.ErrorContains(t, err, "destination not empty")
	pv, err = e.await(t, pvc)
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(e.root, pv.Annotations[AnnDirectory], "partial"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	b, err := os.ReadFile(filepath.Join(e.root, pv.Annotations[AnnDirectory], "data"))
	require.NoError(t, err)
	assert.Equal(t, "to be cloned", string(b))
	assert.NotContains(t, e.finalizers(t), FinalizerCloneSource)

	// The old copy, released late, was cancelled: it touches nothing.
	close(release)
	old.CancelClones(context.Background())
	_, err = os.Stat(filepath.Join(e.root, pv.Annotations[AnnDirectory], "data"))
	assert.NoError(t, err, "the old replica's late failure kept its hands off")
}

// TestCloneTwiceFromOneSource: the finalizer stays until the last copy
// from the source ends.
func TestCloneTwiceFromOneSource(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	var mu sync.Mutex
	gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
	n := 0
	e.p.beforeCopy = func() {
		mu.Lock()
		g := gates[n]
		n++
		mu.Unlock()
		<-g
	}
	one, two := e.cloneClaim("one", "uid-one"), e.cloneClaim("two", "uid-two")
	for _, c := range []*v1.PersistentVolumeClaim{one, two} {
		_, state, _ := e.p.Provision(context.Background(), opts(e.sc, c))
		require.Equal(t, controller.ProvisioningInBackground, state)
	}
	close(gates[0])
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return n == 2
	}, 5*time.Second, time.Millisecond)
	// One of them is done (which one: whichever ran the first hook).
	require.Eventually(t, func() bool {
		_, s1, _ := e.p.Provision(context.Background(), opts(e.sc, one))
		_, s2, _ := e.p.Provision(context.Background(), opts(e.sc, two))
		return s1 != s2
	}, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, e.finalizers(t), FinalizerCloneSource, "the other copy still runs")
	close(gates[1])
	_, err := e.await(t, one)
	require.NoError(t, err)
	_, err = e.await(t, two)
	require.NoError(t, err)
	assert.NotContains(t, e.finalizers(t), FinalizerCloneSource)
}

func TestCloneGetsTheClassModeAndOwner(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners")
	}
	e := newCloneEnv(t, nil)
	e.sc = class("nfs", map[string]string{"mode": "0750", "uid": "1000", "gid": "2000"})
	pv, err := e.await(t, e.cloneClaim("copy", "uid-copy"))
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(e.root, pv.Annotations[AnnDirectory]))
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o750, fi.Mode())
	uid, gid := ownerOf(t, fi)
	assert.Equal(t, 1000, uid)
	assert.Equal(t, 2000, gid)
	fi, err = os.Lstat(filepath.Join(e.root, pv.Annotations[AnnDirectory], "data"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode(), "the entries keep the source's")
}

// TestCloneOfATooDeepTreeIsRefused: the source's fault, counted as refused,
// and nothing is left.
func TestCloneOfATooDeepTreeIsRefused(t *testing.T) {
	t.Parallel()
	e := newCloneEnv(t, nil)
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, e.srcDir, "sub", "deeper"), 0o755))
	e.p.cfg.Clone.Options.MaxDepth = 1
	pv, err := e.await(t, e.cloneClaim("copy", "uid-copy"))
	assert.Nil(t, pv)
	require.ErrorIs(t, err, clone.ErrTooDeep)
	assert.Contains(t, err.Error(), "more than 1 levels deep")
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)
	_, err = os.Stat(filepath.Join(e.root, "ns-copy-pvc-uid-copy"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
