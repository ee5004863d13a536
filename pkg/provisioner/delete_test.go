package provisioner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
)

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if os.IsNotExist(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

// archives lists the archived-* entries in dir.
func archives(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "archived-*"))
	require.NoError(t, err)
	for i := range matches {
		matches[i] = filepath.Base(matches[i])
	}
	return matches
}

func TestDeletePolicies(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		params      map[string]string
		wantDeleted bool
		wantArchive bool
	}{
		"default archives":                   {nil, true, true},
		"archiveOnDelete true archives":      {map[string]string{"archiveOnDelete": "true"}, true, true},
		"archiveOnDelete false deletes":      {map[string]string{"archiveOnDelete": "false"}, true, false},
		"onDelete delete":                    {map[string]string{"onDelete": "delete"}, true, false},
		"onDelete retain":                    {map[string]string{"onDelete": "retain"}, false, false},
		"onDelete archive":                   {map[string]string{"onDelete": "archive"}, true, true},
		"onDelete wins over archiveOnDelete": {map[string]string{"onDelete": "retain", "archiveOnDelete": "false"}, false, false},
	}
	for name, tc := range cases {
		for _, nested := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "", true: " (nested pattern)"}[nested], func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, testPath)
				params := map[string]string{}
				for k, v := range tc.params {
					params[k] = v
				}
				if nested {
					params["pathPattern"] = "${.PVC.namespace}/${.PVC.name}"
				}
				pv, err := e.provision(t, class("nfs", params), claim("ns", "data", "u1"))
				require.NoError(t, err)
				dir := filepath.Join(e.root, pv.Annotations[AnnDirectory])
				require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644))

				require.NoError(t, e.p.Delete(context.Background(), pv))
				assert.Equal(t, !tc.wantDeleted, exists(t, dir))
				got := archives(t, filepath.Dir(dir))
				if tc.wantArchive {
					require.Len(t, got, 1, "archived in the same parent")
					assert.Equal(t, "archived-"+filepath.Base(dir)+"-20261122-100000", got[0])
					assert.FileExists(t, filepath.Join(filepath.Dir(dir), got[0], "f"))
				} else {
					assert.Empty(t, got)
				}
				assert.True(t, exists(t, e.root), "export root survives")
				assert.InDelta(t, 1, e.count(metrics.OpDelete, metrics.Success), 0)
			})
		}
	}
}

func TestDeleteUsesTheRecordNotTheClass(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"onDelete": "retain"})
	require.NoError(t, e.classes.Add(sc))
	pv, err := e.provision(t, sc, claim("ns", "data", "u1"))
	require.NoError(t, err)
	// The class is recreated to delete; the volume keeps its recorded fate.
	require.NoError(t, e.classes.Update(class("nfs", map[string]string{"onDelete": "delete"})))
	require.NoError(t, e.p.Delete(context.Background(), pv))
	assert.DirExists(t, filepath.Join(e.root, "ns-data-pvc-u1"))

	require.NoError(t, e.classes.Delete(sc))
	require.NoError(t, e.p.Delete(context.Background(), pv))
	assert.DirExists(t, filepath.Join(e.root, "ns-data-pvc-u1"))
}

func TestArchiveNeverOverwrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"})
	// The same claim name provisioned and released three times within one
	// second: every archive is kept.
	for i, uid := range []string{"u1", "u2", "u3"} {
		pv, err := e.provision(t, sc, claim("ns", "data", uid))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(e.root, "ns/data/gen"), []byte{byte('0' + i)}, 0o644))
		require.NoError(t, e.p.Delete(context.Background(), pv))
		require.NoError(t, e.volumes.Delete(pv))
	}
	got := archives(t, filepath.Join(e.root, "ns"))
	assert.ElementsMatch(t, []string{"archived-data-20261122-100000", "archived-data-20261122-100000-1", "archived-data-20261122-100000-2"}, got)
	var gens []string
	for _, a := range got {
		b, err := os.ReadFile(filepath.Join(e.root, "ns", a, "gen"))
		require.NoError(t, err)
		gens = append(gens, string(b))
	}
	assert.ElementsMatch(t, []string{"0", "1", "2"}, gens)
}

func TestDeleteDirectoryAlreadyGone(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"delete", "archive"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			pv, err := e.provision(t, class("nfs", map[string]string{"onDelete": policy}), claim("ns", "data", "u1"))
			require.NoError(t, err)
			require.NoError(t, os.RemoveAll(filepath.Join(e.root, pv.Annotations[AnnDirectory])))
			require.NoError(t, e.p.Delete(context.Background(), pv))
			assert.Empty(t, archives(t, e.root))
		})
	}
}

func TestDeleteSharedDirectory(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"delete", "archive"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			shared := class("nfs", map[string]string{"pathPattern": "shared", "allowSharedPath": "true", "onDelete": policy})
			pv1, err := e.provision(t, shared, claim("ns", "a", "u1"))
			require.NoError(t, err)
			pv2, err := e.provision(t, shared, claim("ns", "b", "u2"))
			require.NoError(t, err)

			// The first to go leaves the directory to the other.
			require.NoError(t, e.p.Delete(context.Background(), pv1))
			assert.DirExists(t, filepath.Join(e.root, "shared"))
			assert.Empty(t, archives(t, e.root))

			// Before the informer saw pv1 go, the last applies the policy.
			require.NoError(t, e.p.Delete(context.Background(), pv2))
			assert.NoDirExists(t, filepath.Join(e.root, "shared"))
			if policy == "archive" {
				assert.Len(t, archives(t, e.root), 1)
			}
			assert.InDelta(t, 2, e.count(metrics.OpDelete, metrics.Success), 0)
		})
	}
}

func TestDeleteSharedDirectoryConcurrently(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	shared := class("nfs", map[string]string{"pathPattern": "shared", "allowSharedPath": "true", "onDelete": "archive"})
	const n = 8
	pvs := make([]*v1.PersistentVolume, n)
	for i := range pvs {
		var err error
		pvs[i], err = e.provision(t, shared, claim("ns", fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i)))
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for _, pv := range pvs {
		wg.Go(func() { assert.NoError(t, e.p.Delete(context.Background(), pv)) })
	}
	wg.Wait()
	assert.NoDirExists(t, filepath.Join(e.root, "shared"))
	assert.Len(t, archives(t, e.root), 1, "archived once, by the last")
}

func TestDeleteSeesClaimsBeingProvisioned(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	shared := class("nfs", map[string]string{"pathPattern": "shared", "allowSharedPath": "true", "onDelete": "delete"})
	pv1, err := e.provision(t, shared, claim("ns", "a", "u1"))
	require.NoError(t, err)
	// A new claim got the directory; its PV isn't in the informer yet.
	_, _, err = e.p.Provision(context.Background(), opts(shared, claim("ns", "b", "u2")))
	require.NoError(t, err)
	// Another is being given it right now, not even recorded yet.
	led, err := e.p.ledger(context.Background())
	require.NoError(t, err)
	_, _, err = e.p.reserve(led, "shared", claimRef{uid: "u3", namespace: "ns", class: shared.Name, pv: "pvc-u3"}, params.Class{AllowSharedPath: true})
	require.NoError(t, err)

	require.NoError(t, e.p.Delete(context.Background(), pv1))
	assert.DirExists(t, filepath.Join(e.root, "shared"), "just handed to another claim")
	require.NoError(t, e.volumes.Delete(pv1))

	// The one being reserved: alone, it keeps the directory.
	e.restart()
	led, err = e.p.ledger(context.Background())
	require.NoError(t, err)
	_, _, err = e.p.reserve(led, "shared", claimRef{uid: "u3", namespace: "ns", class: shared.Name, pv: "pvc-u3"}, params.Class{AllowSharedPath: true})
	require.NoError(t, err)
	pv2 := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-u2", Annotations: map[string]string{AnnDirectory: "shared", AnnOnDelete: "delete"}},
		Spec:       v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: testServer, Path: testPath + "/shared"}}},
	}
	require.NoError(t, e.p.Delete(context.Background(), pv2))
	assert.DirExists(t, filepath.Join(e.root, "shared"), "being handed to a claim")
}

// blockingExport holds RemoveAll until released.
type blockingExport struct {
	Export
	started, release chan struct{}
}

func (b *blockingExport) RemoveAll(ctx context.Context, rel string) error {
	close(b.started)
	<-b.release
	return b.Export.RemoveAll(ctx, rel)
}

func TestProvisionWaitsForDirectoryBeingDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	shared := class("nfs", map[string]string{"pathPattern": "shared", "allowSharedPath": "true", "onDelete": "delete"})
	pv1, err := e.provision(t, shared, claim("ns", "a", "u1"))
	require.NoError(t, err)
	blocking := &blockingExport{Export: e.p.cfg.Export, started: make(chan struct{}), release: make(chan struct{})}
	e.p.cfg.Export = blocking
	deleted := make(chan error)
	go func() { deleted <- e.p.Delete(context.Background(), pv1) }()
	<-blocking.started

	_, err = e.provision(t, shared, claim("ns", "b", "u2"))
	require.ErrorContains(t, err, `directory "shared" overlaps one being deleted or archived for released PersistentVolume "pvc-u1" right now`)
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Failed), 0, "not a refusal: it is retried")
	close(blocking.release)
	require.NoError(t, <-deleted)
	require.NoError(t, e.volumes.Delete(pv1))
	_, err = e.provision(t, shared, claim("ns", "b", "u2"))
	require.NoError(t, err)
	assert.DirExists(t, filepath.Join(e.root, "shared"))
}

func TestDeleteRefusesNestedVolume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	pv, err := e.provision(t, class("nfs", map[string]string{"pathPattern": "outer", "onDelete": "delete"}), claim("ns", "a", "u1"))
	require.NoError(t, err)
	// The incumbent made a volume inside it.
	require.NoError(t, os.Mkdir(filepath.Join(e.root, "outer/inner"), 0o777))
	inner := incumbentPV(testServer, "/srv/nfs/outer/inner", "old")
	require.NoError(t, e.volumes.Add(inner))

	err = e.p.Delete(context.Background(), pv)
	require.ErrorContains(t, err, `refusing to delete directory "outer": PersistentVolume "pvc-old" uses a directory nested with it`)
	assert.DirExists(t, filepath.Join(e.root, "outer/inner"))
	assert.InDelta(t, 1, e.count(metrics.OpDelete, metrics.Refused), 0)
	require.NoError(t, e.volumes.Delete(inner))
	require.NoError(t, e.p.Delete(context.Background(), pv))
	assert.NoDirExists(t, filepath.Join(e.root, "outer"))
}

func TestDeleteRemovesParentsItCreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.labels.app}/${.PVC.name}", "onDelete": "delete"})
	require.NoError(t, os.Mkdir(filepath.Join(e.root, "admin"), 0o755))
	var pvs []*v1.PersistentVolume
	for _, c := range []struct{ ns, app, name string }{{"ns", "web", "a"}, {"ns", "web", "b"}, {"admin", "db", "c"}} {
		pvc := claim(c.ns, c.name, "u-"+c.name)
		pvc.Labels = map[string]string{"app": c.app}
		pv, err := e.provision(t, sc, pvc)
		require.NoError(t, err)
		pvs = append(pvs, pv)
	}
	require.NoError(t, e.p.Delete(context.Background(), pvs[0]))
	assert.DirExists(t, filepath.Join(e.root, "ns/web"), "still holds ns/web/b")
	e.restart()
	require.NoError(t, e.p.Delete(context.Background(), pvs[1]))
	assert.NoDirExists(t, filepath.Join(e.root, "ns"), "made for ns/web/a, removed with the last volume below")
	require.NoError(t, e.p.Delete(context.Background(), pvs[2]))
	assert.NoDirExists(t, filepath.Join(e.root, "admin/db"))
	assert.DirExists(t, filepath.Join(e.root, "admin"), "not made by the provisioner")
}

func TestDeleteRefusesTamperedRecord(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]string{
		"climbing out":    {AnnDirectory: "../../etc", AnnOnDelete: "delete"},
		"the export root": {AnnDirectory: "", AnnOnDelete: "delete"},
		"absolute":        {AnnDirectory: "/etc", AnnOnDelete: "delete"},
		"unknown policy":  {AnnDirectory: "x", AnnOnDelete: "shred"},
	}
	for name, ann := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			require.NoError(t, os.Mkdir(filepath.Join(e.root, "x"), 0o755))
			before := snapshot(t, e.root)
			pv := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv", Annotations: ann}}
			err := e.p.Delete(context.Background(), pv)
			require.Error(t, err)
			assert.Contains(t, err.Error(), AnnDirectory[:len("nfs.kube-nfs.io/")])
			assert.Equal(t, before, snapshot(t, e.root))
		})
	}
}

// incumbentPV is a PV as nfs-subdir-external-provisioner wrote it: no
// records, the path built by joining NFS_PATH and the directory.
func incumbentPV(server, path, class string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-old", Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "example.com/nfs"}},
		Spec: v1.PersistentVolumeSpec{
			StorageClassName:       class,
			PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: server, Path: path}},
		},
	}
}

func TestDeleteAdoptsIncumbentVolumes(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		exportPath  string
		nfsPath     string
		class       map[string]string // nil: class deleted
		dir         string
		wantDeleted bool
		wantArchive bool
	}{
		"default class archives":         {testPath, "/srv/nfs/ns-data-pvc-old", map[string]string{}, "ns-data-pvc-old", true, true},
		"archiveOnDelete false deletes":  {testPath, "/srv/nfs/ns-data-pvc-old", map[string]string{"archiveOnDelete": "false"}, "ns-data-pvc-old", true, false},
		"onDelete retain":                {testPath, "/srv/nfs/ns-data-pvc-old", map[string]string{"onDelete": "retain"}, "ns-data-pvc-old", false, false},
		"class gone: archive":            {testPath, "/srv/nfs/ns-data-pvc-old", nil, "ns-data-pvc-old", true, true},
		"unknown keys ignored as before": {testPath, "/srv/nfs/ns-data-pvc-old", map[string]string{"archiveOnDelete": "false", "legacy": "x"}, "ns-data-pvc-old", true, false},
		"nested pattern archives nested": {testPath, "/srv/nfs/ns/data", map[string]string{}, "ns/data", true, true},
		"NFS_PATH with a trailing slash": {"/srv/nfs/", "/srv/nfs/ns-data-pvc-old", map[string]string{"archiveOnDelete": "false"}, "ns-data-pvc-old", true, false},
		"NFS_PATH of /":                  {"/", "/ns-data-pvc-old", map[string]string{"archiveOnDelete": "false"}, "ns-data-pvc-old", true, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.exportPath)
			if tc.class != nil {
				require.NoError(t, e.classes.Add(class("old", tc.class)))
			}
			dir := filepath.Join(e.root, tc.dir)
			require.NoError(t, os.MkdirAll(dir, 0o777))
			pv := incumbentPV(testServer, tc.nfsPath, "old")
			require.NoError(t, e.volumes.Add(pv))

			require.NoError(t, e.p.Delete(context.Background(), pv))
			assert.Equal(t, !tc.wantDeleted, exists(t, dir))
			if tc.wantArchive {
				assert.Len(t, archives(t, filepath.Dir(dir)), 1)
			}
			assert.DirExists(t, e.root)
		})
	}
}

func TestDeleteRefusesForeignIncumbentVolumes(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ server, path, want string }{
		"other server":       {"other.example.com", "/srv/nfs/x", `is on NFS server "other.example.com"`},
		"outside the export": {testServer, "/srv/other/x", "not below the export"},
		"the export root":    {testServer, "/srv/nfs", "export root itself"},
		"climbing out":       {testServer, "/srv/nfs/../../etc", "not below the export"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			require.NoError(t, os.Mkdir(filepath.Join(e.root, "x"), 0o755))
			require.NoError(t, e.classes.Add(class("old", map[string]string{"archiveOnDelete": "false"})))
			before := snapshot(t, e.root)
			err := e.p.Delete(context.Background(), incumbentPV(tc.server, tc.path, "old"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, before, snapshot(t, e.root))
		})
	}
}

func TestIncumbentVolumesGuardTheirDirectories(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	require.NoError(t, e.volumes.Add(incumbentPV(testServer, "/srv/nfs/ns/data", "old")))
	_, err := e.provision(t, class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"}), claim("ns", "data", "u1"))
	require.ErrorContains(t, err, `directory "ns/data" is already used by PersistentVolume "pvc-old"`)
}

// TestDeletingDataIsLoggedAtInfo: removing, archiving or keeping a tenant's
// data is logged at the default verbosity, with the PV and the directory.
func TestDeletingDataIsLoggedAtInfo(t *testing.T) {
	t.Parallel()
	for policy, msg := range map[string]string{"delete": "Deleted directory", "archive": "Archived directory", "retain": "Retained directory"} {
		e := newEnv(t, testPath)
		pv, err := e.provision(t, class("nfs", map[string]string{"onDelete": policy}), claim("ns", "data", "u1"))
		require.NoError(t, err)
		logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(0), ktesting.BufferLogs(true)))
		require.NoError(t, e.p.Delete(klog.NewContext(context.Background(), logger), pv))
		var found bool
		for _, entry := range logger.GetSink().(ktesting.Underlier).GetBuffer().Data() {
			if entry.Message == msg && entry.Verbosity == 0 {
				found = true
				assert.Contains(t, fmt.Sprint(entry.WithKVList), pv.Name, policy)
			}
		}
		assert.True(t, found, "%s: no %q at verbosity 0", policy, msg)
	}
}
