package provisioner

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
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
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
)

const (
	testServer = "nfs.example.com"
	testPath   = "/srv/nfs"
)

// env is one provisioner on a temp-dir export, with in-memory PV and
// StorageClass caches standing in for the informers.
type env struct {
	root    string
	p       *Provisioner
	volumes cache.Indexer
	classes cache.Indexer
	metrics *metrics.Metrics
}

func newEnv(t *testing.T, exportPath string) *env {
	t.Helper()
	root := t.TempDir()
	volumes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, Indexers(testSet(exportPath)))
	classes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	m := metrics.New()
	p := New(Config{
		Name:       exports.DefaultName,
		Server:     testServer,
		ExportPath: exportPath,
		Export:     exportfs.New(root, 5*time.Second),
		Volumes:    volumes,
		Classes:    storagelisters.NewStorageClassLister(classes),
		Metrics:    m,
		Now:        func() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) },
		Resolver:   &fakeResolver{},
	})
	return &env{root: root, p: p, volumes: volumes, classes: classes, metrics: m}
}

// testSet is the one export named default of a provisioner's tests.
func testSet(exportPath string) *exports.Set {
	set, err := exports.NewSet([]exports.Export{{Name: exports.DefaultName, Server: testServer, Path: exportPath, Dir: "/persistentvolumes"}})
	if err != nil {
		panic(err)
	}
	return set
}

func class(name string, params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: name},
		Provisioner: "example.com/nfs",
		Parameters:  params,
	}
}

func claim(ns, name, uid string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{
				v1.ResourceStorage: resource.MustParse("1Gi"),
			}},
		},
	}
}

func opts(sc *storagev1.StorageClass, pvc *v1.PersistentVolumeClaim) controller.ProvisionOptions {
	return controller.ProvisionOptions{StorageClass: sc, PVC: pvc, PVName: "pvc-" + string(pvc.UID)}
}

// provision runs Provision and, like the library, adds the PV to the cache.
func (e *env) provision(t *testing.T, sc *storagev1.StorageClass, pvc *v1.PersistentVolumeClaim) (*v1.PersistentVolume, error) {
	t.Helper()
	pv, state, err := e.p.Provision(context.Background(), opts(sc, pvc))
	assert.Equal(t, controller.ProvisioningFinished, state)
	if err == nil {
		pv.Spec.ClaimRef = &v1.ObjectReference{Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID}
		pv.Spec.StorageClassName = sc.Name
		require.NoError(t, e.volumes.Add(pv))
		e.p.VolumeAdded(pv)
	}
	return pv, err
}

func (e *env) count(op, outcome string) float64 {
	return testutil.ToFloat64(e.metrics.Operations(op, outcome, exports.DefaultName))
}

// snapshot records every path and mode below dir, to prove nothing changed.
func snapshot(t *testing.T, dir string) map[string]os.FileMode {
	t.Helper()
	out := map[string]os.FileMode{}
	require.NoError(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out[p] = info.Mode()
		return nil
	}))
	return out
}

func TestProvisionDefaults(t *testing.T) {
	t.Parallel()
	for name, exportPath := range map[string]string{"plain": "/srv/nfs", "trailing slash": "/srv/nfs/", "root": "/"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, exportPath)
			reclaim := v1.PersistentVolumeReclaimRetain
			sc := class("nfs", nil)
			sc.ReclaimPolicy = &reclaim
			sc.MountOptions = []string{"nfsvers=4.1", "hard"}
			pvc := claim("team-a", "data", "uid-1")
			pv, err := e.provision(t, sc, pvc)
			require.NoError(t, err)

			dir := "team-a-data-pvc-uid-1"
			assert.Equal(t, "pvc-uid-1", pv.Name)
			assert.Equal(t, testServer, pv.Spec.NFS.Server)
			assert.Equal(t, filepath.Join(exportPath, dir), pv.Spec.NFS.Path)
			assert.Equal(t, resource.MustParse("1Gi"), pv.Spec.Capacity[v1.ResourceStorage])
			assert.Equal(t, []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, pv.Spec.AccessModes)
			assert.Equal(t, []string{"nfsvers=4.1", "hard"}, pv.Spec.MountOptions)
			assert.Equal(t, v1.PersistentVolumeReclaimRetain, pv.Spec.PersistentVolumeReclaimPolicy)
			assert.Equal(t, dir, pv.Annotations[AnnDirectory])
			assert.Equal(t, "archive", pv.Annotations[AnnOnDelete])

			info, err := os.Stat(filepath.Join(e.root, dir))
			require.NoError(t, err)
			assert.True(t, info.IsDir())
			assert.Equal(t, os.FileMode(0o777), info.Mode().Perm(), "incumbent's world-writable default")
			assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Success), 0)
		})
	}
}

func TestProvisionReclaimPolicyDefaultsToDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	pv, err := e.provision(t, class("nfs", nil), claim("ns", "c", "u"))
	require.NoError(t, err)
	assert.Equal(t, v1.PersistentVolumeReclaimDelete, pv.Spec.PersistentVolumeReclaimPolicy)
}

func TestProvisionParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	pvc := claim("team-a", "data-mysql-0", "uid-7")
	pvc.Labels = map[string]string{"app.kubernetes.io/name": "mysql"}
	sc := class("nfs", map[string]string{
		"pathPattern": "${.PVC.namespace}/${.PVC.labels.app.kubernetes.io/name}/${.PVC.name}",
		"mode":        "2770",
		"onDelete":    "retain",
	})
	if os.Geteuid() == 0 {
		sc.Parameters["uid"], sc.Parameters["gid"] = "1234", "5678"
	}
	pv, err := e.provision(t, sc, pvc)
	require.NoError(t, err)
	assert.Equal(t, "team-a/mysql/data-mysql-0", pv.Annotations[AnnDirectory])
	assert.Equal(t, "retain", pv.Annotations[AnnOnDelete])
	assert.Equal(t, "/srv/nfs/team-a/mysql/data-mysql-0", pv.Spec.NFS.Path)

	info, err := os.Stat(filepath.Join(e.root, "team-a/mysql/data-mysql-0"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o770)|os.ModeSetgid, info.Mode()&(os.ModePerm|os.ModeSetgid))
	if os.Geteuid() == 0 {
		uid, gid := ownerOf(t, info)
		assert.Equal(t, 1234, uid)
		assert.Equal(t, 5678, gid)
	}
}

func TestProvisionRefusals(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		class   map[string]string
		mutate  func(*v1.PersistentVolumeClaim)
		wantErr string
	}{
		"selector": {
			mutate:  func(c *v1.PersistentVolumeClaim) { c.Spec.Selector = &metav1.LabelSelector{} },
			wantErr: "remove spec.selector",
		},
		"unknown parameter": {
			class:   map[string]string{"archiveOnDelet": "false"},
			wantErr: `parameter "archiveOnDelet": unknown`,
		},
		"invalid onDelete": {
			class:   map[string]string{"onDelete": "shred"},
			wantErr: `"shred" is not one of delete, retain, archive`,
		},
		"dot-dot label": {
			class:   map[string]string{"pathPattern": "${.PVC.labels.dir}"},
			mutate:  func(c *v1.PersistentVolumeClaim) { c.Labels = map[string]string{"dir": ".."} },
			wantErr: `".." segment`,
		},
		"annotation climbing to /etc": {
			class:   map[string]string{"pathPattern": "${.PVC.annotations.p}"},
			mutate:  func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{"p": "x/../../../../etc"} },
			wantErr: `".." segment`,
		},
		"absolute annotation": {
			class:   map[string]string{"pathPattern": "${.PVC.annotations.p}"},
			mutate:  func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{"p": "/etc"} },
			wantErr: "absolute",
		},
		"missing label": {
			class:   map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.labels.team}/x"},
			wantErr: "empty segment",
		},
		"control character": {
			class:   map[string]string{"pathPattern": "${.PVC.annotations.p}"},
			mutate:  func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{"p": "a\nb"} },
			wantErr: "control character",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			before := snapshot(t, e.root)
			pvc := claim("ns", "c", "u")
			if tc.mutate != nil {
				tc.mutate(pvc)
			}
			pv, err := e.provision(t, class("nfs", tc.class), pvc)
			require.Error(t, err)
			assert.Nil(t, pv)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Equal(t, before, snapshot(t, e.root), "nothing created or changed on the export")
			assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)
		})
	}
}

func TestProvisionRefusesSymlinkOnTheWay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	outside := t.TempDir()
	require.NoError(t, os.Chmod(outside, 0o700))
	// A tenant with write access over NFS plants a link where another
	// claim's directory will be made.
	require.NoError(t, os.Symlink(outside, filepath.Join(e.root, "team-b")))
	before := snapshot(t, outside)

	_, err := e.provision(t, class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"}), claim("team-b", "data", "u"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is a symbolic link, refusing to follow it")
	assert.Equal(t, before, snapshot(t, outside))
	info, err := os.Stat(outside)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "target of the link not chmod-ed")
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)
}

func TestProvisionSharedDirectory(t *testing.T) {
	t.Parallel()
	pattern := map[string]string{"pathPattern": "shared/${.PVC.labels.app}"}
	e := newEnv(t, testPath)
	first := claim("ns", "a", "u1")
	first.Labels = map[string]string{"app": "web"}
	pv1, err := e.provision(t, class("nfs", pattern), first)
	require.NoError(t, err)

	second := claim("ns", "b", "u2")
	second.Labels = map[string]string{"app": "web"}
	_, err = e.provision(t, class("nfs", pattern), second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `directory "shared/web" is already used by PersistentVolume "`+pv1.Name+`"`)
	assert.Contains(t, err.Error(), "allowSharedPath")

	// A class that allows sharing doesn't get another class's directory.
	shared := map[string]string{"pathPattern": "shared/${.PVC.labels.app}", "allowSharedPath": "true"}
	_, err = e.provision(t, class("nfs-shared", shared), second)
	require.ErrorContains(t, err, `directory "shared/web" is used by PersistentVolume "`+pv1.Name+`" of StorageClass "nfs": allowSharedPath shares a directory only among the volumes of one class`)
	assert.InDelta(t, 2, e.count(metrics.OpProvision, metrics.Refused), 0)

	// Within the class, claims share it, whatever their namespace.
	second.Labels["app"] = "db"
	pv2, err := e.provision(t, class("nfs-shared", shared), second)
	require.NoError(t, err)
	third := claim("other-ns", "c", "u6")
	third.Labels = map[string]string{"app": "db"}
	pv3, err := e.provision(t, class("nfs-shared", shared), third)
	require.NoError(t, err)
	assert.Equal(t, pv2.Spec.NFS.Path, pv3.Spec.NFS.Path)

	// A directory nested inside another volume's, or holding one, is
	// refused, allowSharedPath or not: the owner of the outer directory
	// could replace the inner one with a symbolic link, which the NFS
	// server follows at mount time.
	for name, sc := range map[string]map[string]string{"not shared": pattern, "shared": shared} {
		nested := claim("ns", "c", "u3")
		nested.Labels = map[string]string{"app": "web/inner"}
		_, err = e.provision(t, class("nfs", sc), nested)
		require.ErrorContains(t, err, "volumes may not nest", name)
		sc = map[string]string{"pathPattern": "shared", "allowSharedPath": strconv.FormatBool(sc["allowSharedPath"] == "true")}
		_, err = e.provision(t, class("nfs", sc), claim("ns", "d", "u4"))
		require.ErrorContains(t, err, "volumes may not nest", name)
	}
	assert.NoDirExists(t, filepath.Join(e.root, "shared/web/inner"))

	// The same for volumes made by others, known only from their PVs.
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, "legacy/web"), 0o777))
	require.NoError(t, e.volumes.Add(incumbentPV(testServer, "/srv/nfs/legacy/web", "old")))
	inner := claim("ns", "e", "u5")
	inner.Labels = map[string]string{"app": "inner"}
	_, err = e.provision(t, class("nfs", map[string]string{"pathPattern": "legacy/web/${.PVC.labels.app}", "allowSharedPath": "true"}), inner)
	require.ErrorContains(t, err, `lies inside the directory of PersistentVolume "pvc-old": volumes may not nest`)
	assert.NoDirExists(t, filepath.Join(e.root, "legacy/web/inner"))
	// Nor is the incumbent's directory itself shared, even with its class.
	_, err = e.provision(t, class("old", map[string]string{"pathPattern": "legacy/web", "allowSharedPath": "true"}), claim("ns", "f", "u7"))
	require.ErrorContains(t, err, `is used by PersistentVolume "pvc-old", which this provisioner didn't make`)
}

func TestConcurrentClaimsForOneDirectory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "same"})
	// Without the informer having seen the first PV yet, the reservation
	// still guards the directory.
	_, _, err := e.p.Provision(context.Background(), opts(sc, claim("ns", "a", "u1")))
	require.NoError(t, err)
	_, _, err = e.p.Provision(context.Background(), opts(sc, claim("ns", "b", "u2")))
	require.ErrorContains(t, err, "being provisioned for PersistentVolume \"pvc-u1\"")
}

// restart is a new Provisioner on the same export and caches, as after a
// process restart or a change of leader.
func (e *env) restart() {
	e.p = New(e.p.cfg)
}

func TestProvisionIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.annotations.dir}"})
	pvc := claim("ns", "data", "u1")
	pvc.Annotations = map[string]string{"dir": "team/data"}
	// First attempt made the directory, then saving the PV failed, and the
	// process restarted: nothing of the first attempt is in memory.
	pv1, _, err := e.p.Provision(context.Background(), opts(sc, pvc))
	require.NoError(t, err)
	dir := filepath.Join(e.root, "team/data")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), []byte("kept"), 0o644))
	require.NoError(t, os.Chmod(dir, 0o700))

	// Another claim naming the same directory is refused, before and after
	// the restart, and the directory left as it is.
	other := claim("ns", "other", "u2")
	other.Annotations = map[string]string{"dir": "team/data"}
	_, err = e.provision(t, sc, other)
	require.ErrorContains(t, err, `directory "team/data" is being provisioned for PersistentVolume "pvc-u1"`)
	e.restart()
	_, err = e.provision(t, sc, other)
	require.ErrorContains(t, err, `directory "team/data" already exists and was not made for this claim`)
	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "not chmod-ed for another claim")

	// So is a directory that was there before, not made for this claim.
	require.NoError(t, os.Mkdir(filepath.Join(e.root, "foreign"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "foreign", "f"), []byte("x"), 0o600))
	before := snapshot(t, filepath.Join(e.root, "foreign"))
	foreign := claim("ns", "foreign", "u3")
	foreign.Annotations = map[string]string{"dir": "foreign"}
	_, err = e.provision(t, sc, foreign)
	require.ErrorContains(t, err, `directory "foreign" already exists and was not made for this claim`)
	assert.Equal(t, before, snapshot(t, filepath.Join(e.root, "foreign")), "not chmod-ed")

	// The retry of the first claim gets its directory back.
	pv2, _, err := e.p.Provision(context.Background(), opts(sc, pvc))
	require.NoError(t, err, "a retry for the same claim reuses its directory")
	assert.Equal(t, pv1, pv2)
	data, err := os.ReadFile(filepath.Join(dir, "file"))
	require.NoError(t, err)
	assert.Equal(t, "kept", string(data))
	info, err = os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o777), info.Mode().Perm(), "the class's mode applied again")
}

func TestProvisionRefusesAmbiguousDirectory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	// The provisioner stopped after recording that it would create the
	// directory and before recording that it did; meanwhile someone made it.
	led, err := e.p.ledger(context.Background())
	require.NoError(t, err)
	require.NoError(t, led.Append(context.Background(), ledger.Record{Kind: ledger.Volume, Dir: "ns-c-pvc-u", PV: "pvc-u"}))
	require.NoError(t, os.Mkdir(filepath.Join(e.root, "ns-c-pvc-u"), 0o700))
	e.restart()
	_, err = e.provision(t, class("nfs", nil), claim("ns", "c", "u"))
	require.ErrorContains(t, err, "can't tell it from a directory someone else made")
	info, err := os.Stat(filepath.Join(e.root, "ns-c-pvc-u"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	// Once an admin removed it, the retry creates it.
	require.NoError(t, os.Remove(filepath.Join(e.root, "ns-c-pvc-u")))
	_, err = e.provision(t, class("nfs", nil), claim("ns", "c", "u"))
	require.NoError(t, err)
}

// TestProvisionAdoptsWhatAStoppedAttemptMade: the process was killed after
// recording that it would create the directory (at a time) and creating it,
// before recording that it did. The retry, in a new process, takes the
// directory if it is empty and made since; one holding data stays refused.
func TestProvisionAdoptsWhatAStoppedAttemptMade(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	led, err := e.p.ledger(context.Background())
	require.NoError(t, err)
	// The test clock's "now" is before the directories below are made.
	at := e.p.cfg.Now()
	for _, c := range []string{"c", "d"} {
		require.NoError(t, led.Append(context.Background(), ledger.Record{Kind: ledger.Volume, Dir: "ns-" + c + "-pvc-u" + c, PV: "pvc-u" + c, NS: "ns", Time: at}))
		require.NoError(t, os.Mkdir(filepath.Join(e.root, "ns-"+c+"-pvc-u"+c), 0o700))
	}
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "ns-d-pvc-ud", "data"), []byte("x"), 0o600))
	e.restart()

	pv, err := e.provision(t, class("nfs", nil), claim("ns", "c", "uc"))
	require.NoError(t, err, "the empty directory the stopped attempt made")
	info, err := os.Stat(filepath.Join(e.root, pv.Annotations[AnnDirectory]))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o777), info.Mode().Perm(), "given the class's mode")
	_, err = e.provision(t, class("nfs", nil), claim("ns", "d", "ud"))
	require.ErrorContains(t, err, "is not empty or is older than that record")
}

func TestProvisionUnwritableExport(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	e.p.cfg.Export = exportfs.New(filepath.Join(e.root, "not-mounted"), time.Second)
	_, err := e.provision(t, class("nfs", nil), claim("ns", "c", "u"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "check that the NFS export is mounted")
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Failed), 0)
	// The reservation was dropped: once the export is back, the claim binds.
	e.p.cfg.Export = exportfs.New(e.root, time.Second)
	_, err = e.provision(t, class("nfs", nil), claim("ns", "c", "u"))
	require.NoError(t, err)
}

// failingMkdir creates what MkdirAll creates, then fails as a chown refused
// by root_squash does; Rmdir of keep fails too.
type failingMkdir struct {
	Export
	keep string
}

func (f *failingMkdir) MkdirAll(ctx context.Context, rel string, opts exportfs.DirOptions, existing exportfs.Existing) (exportfs.Made, error) {
	made, err := f.Export.MkdirAll(ctx, rel, opts, existing)
	if err != nil {
		return made, err
	}
	return made, fmt.Errorf("chown %q: %w", rel, fs.ErrPermission)
}

func (f *failingMkdir) Rmdir(ctx context.Context, rel string) error {
	if rel == f.keep {
		return fmt.Errorf("rmdir %q: %w", rel, syscall.EBUSY)
	}
	return f.Export.Rmdir(ctx, rel)
}

func TestFailedProvisioningLeavesNothing(t *testing.T) {
	t.Parallel()
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.labels.app}/${.PVC.namespace}/${.PVC.name}"})
	pvc := claim("ns", "data", "u1")
	pvc.Labels = map[string]string{"app": "web"}
	records := func(e *env) int {
		led, err := ledger.Open(context.Background(), e.p.cfg.Export)
		require.NoError(t, err)
		return len(led.At("web")) + len(led.At("web/ns")) + len(led.At("web/ns/data"))
	}

	e := newEnv(t, testPath)
	real := e.p.cfg.Export
	e.p.cfg.Export = &failingMkdir{Export: real}
	_, err := e.provision(t, sc, pvc)
	require.ErrorIs(t, err, fs.ErrPermission)
	assert.NoDirExists(t, filepath.Join(e.root, "web"), "the leaf and the parents it made are removed")
	assert.Zero(t, records(e), "nothing left to record")
	e.p.cfg.Export = real
	_, err = e.provision(t, sc, pvc)
	require.NoError(t, err)

	// What can't be removed is recorded as the claim's: the retry adopts it
	// (the pattern isn't namespace-scoped, so nothing else would let it)
	// rather than refusing it as someone else's, and keeps the parents it
	// made removable.
	e = newEnv(t, testPath)
	real = e.p.cfg.Export
	e.p.cfg.Export = &failingMkdir{Export: real, keep: "web/ns/data"}
	_, err = e.provision(t, sc, pvc)
	require.ErrorIs(t, err, fs.ErrPermission)
	assert.DirExists(t, filepath.Join(e.root, "web/ns/data"))
	e.restart()
	e.p.cfg.Export = real
	pv, err := e.provision(t, sc, pvc)
	require.NoError(t, err, "the retry adopts the directory its first attempt made")
	pv.Annotations[AnnOnDelete] = "delete"
	require.NoError(t, e.p.Delete(context.Background(), pv))
	assert.NoDirExists(t, filepath.Join(e.root, "web"), "parents made by the first attempt go with the volume")
}

// TestSharingNeedsOneClassWhileProvisioning: two claims given one directory
// at the same moment share it only if they are of one class.
func TestSharingNeedsOneClassWhileProvisioning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	led, err := e.p.ledger(context.Background())
	require.NoError(t, err)
	shared := params.Class{AllowSharedPath: true}
	_, _, err = e.p.reserve(led, "shared", claimRef{uid: "u1", namespace: "ns", class: "team", pv: "pvc-u1"}, shared)
	require.NoError(t, err)
	_, _, err = e.p.reserve(led, "shared", claimRef{uid: "u2", namespace: "ns", class: "other", pv: "pvc-u2"}, shared)
	require.ErrorContains(t, err, `directory "shared" is being provisioned for PersistentVolume "pvc-u1" of StorageClass "team": allowSharedPath shares a directory only among the volumes of one class`)
	_, _, err = e.p.reserve(led, "shared", claimRef{uid: "u3", namespace: "ns", class: "team", pv: "pvc-u3"}, shared)
	require.NoError(t, err)
}

// TestSameDirectoryOnTwoExports checks that directories are told apart per
// export: two provisioners on one PV informer, exporting the same path from
// two servers, each give the same directory to a claim of their own, and
// each PV records its export.
func TestSameDirectoryOnTwoExports(t *testing.T) {
	t.Parallel()
	set, err := exports.NewSet([]exports.Export{
		{Name: "fast", Server: "10.0.0.1", Path: testPath, Dir: "/exports/fast"},
		{Name: "twin", Server: "10.0.0.2", Path: testPath, Dir: "/exports/twin"},
	})
	require.NoError(t, err)
	volumes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, Indexers(set))
	classes := storagelisters.NewStorageClassLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))
	m := metrics.New("fast", "twin")
	provs := map[string]*Provisioner{}
	roots := map[string]string{}
	for _, e := range set.All() {
		roots[e.Name] = t.TempDir()
		provs[e.Name] = New(Config{Name: e.Name, Server: e.Server, ExportPath: e.Path, Export: exportfs.New(roots[e.Name], 5*time.Second),
			Volumes: volumes, Classes: classes, Metrics: m, Resolver: &fakeResolver{}})
	}
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/data"})
	var pvs []*v1.PersistentVolume
	for i, name := range []string{"fast", "twin"} {
		c := claim("ns", "data", fmt.Sprint("u", i))
		pv, _, err := provs[name].Provision(context.Background(), opts(sc, c))
		require.NoError(t, err, name)
		pv.Spec.ClaimRef = &v1.ObjectReference{Namespace: c.Namespace, Name: c.Name, UID: c.UID}
		require.NoError(t, volumes.Add(pv))
		provs[name].VolumeAdded(pv)
		assert.Equal(t, name, pv.Annotations[exports.Annotation])
		assert.Equal(t, set.All()[i].Server, pv.Spec.NFS.Server)
		assert.Equal(t, testPath+"/ns/data", pv.Spec.NFS.Path)
		assert.DirExists(t, filepath.Join(roots[name], "ns/data"))
		pvs = append(pvs, pv)
	}
	// Within one export the directory is still guarded.
	_, _, err = provs["fast"].Provision(context.Background(), opts(sc, claim("ns", "data", "u9")))
	require.ErrorContains(t, err, `is already used by PersistentVolume "pvc-u0"`)
	onFast, err := VolumesOn(volumes, "fast")
	require.NoError(t, err)
	require.Len(t, onFast, 1)
	assert.Equal(t, "pvc-u0", onFast[0].Name)

	// Deleting the one on fast leaves twin's directory alone.
	pvs[0].Annotations[AnnOnDelete] = "delete"
	require.NoError(t, provs["fast"].Delete(context.Background(), pvs[0]))
	assert.NoDirExists(t, filepath.Join(roots["fast"], "ns/data"))
	assert.DirExists(t, filepath.Join(roots["twin"], "ns/data"))
	assert.EqualValues(t, 1, testutil.ToFloat64(m.Operations(metrics.OpDelete, metrics.Success, "fast")))
	assert.EqualValues(t, 0, testutil.ToFloat64(m.Operations(metrics.OpDelete, metrics.Success, "twin")))
}
