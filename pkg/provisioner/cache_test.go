package provisioner

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

const testProvisioner = "example.com/nfs"

// fullPV is a PV as the API server returns it: everything set.
func fullPV(name, server, path string, annotations map[string]string) *v1.PersistentVolume {
	now := metav1.Now()
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: types.UID("uid-" + name), ResourceVersion: "42", Generation: 3,
			Labels:            map[string]string{"team": "a"},
			Annotations:       annotations,
			Finalizers:        []string{"kubernetes.io/pv-protection"},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}},
			CreationTimestamp: now,
		},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "ns", Name: "data", UID: "claim-uid", ResourceVersion: "42"},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			StorageClassName:              "nfs",
			MountOptions:                  []string{"nfsvers=4.1"},
			PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: server, Path: path}},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeReleased, Message: "released", LastPhaseTransitionTime: &now},
	}
}

func ours(dir, onDelete string) map[string]string {
	return map[string]string{annProvisionedBy: testProvisioner, AnnDirectory: dir, AnnOnDelete: onDelete, "other": "x"}
}

// TestCompactKeepsWhatIsRead: for every kind of PV, the compacted copy gives
// Delete, the directory index and the library the same answers as the full
// PV.
func TestCompactKeepsWhatIsRead(t *testing.T) {
	t.Parallel()
	cases := map[string]*v1.PersistentVolume{
		"ours, flat":                 fullPV("pv1", testServer, testPath+"/ns-data-pv1", ours("ns-data-pv1", "archive")),
		"ours, nested":               fullPV("pv2", testServer, testPath+"/ns/data", ours("ns/data", "delete")),
		"ours, retain":               fullPV("pv3", testServer, testPath+"/ns/keep", ours("ns/keep", "retain")),
		"ours, server in other case": fullPV("pv4", "NFS.example.com", testPath+"/a", ours("a", "delete")),
		"ours, directory not path's": fullPV("pv5", testServer, testPath+"/a", ours("b", "delete")),
		"ours, invalid directory":    fullPV("pv6", testServer, testPath+"/a", ours("../x", "delete")),
		"ours, invalid policy":       fullPV("pv7", testServer, testPath+"/a", ours("a", "shred")),
		"ours, no policy":            fullPV("pv8", testServer, testPath+"/a", map[string]string{annProvisionedBy: testProvisioner, AnnDirectory: "a"}),
		"ours, other server":         fullPV("pv9", "other.example.com", "/x/a", ours("a", "delete")),
		"incumbent":                  fullPV("pv10", testServer, testPath+"/ns-data-pv10", map[string]string{annProvisionedBy: testProvisioner}),
		"incumbent outside export":   fullPV("pv11", testServer, "/elsewhere/a", map[string]string{annProvisionedBy: testProvisioner}),
		"static on our server":       fullPV("pv12", testServer, testPath+"/static", nil),
		"migrated to us":             fullPV("pv13", testServer, testPath+"/m", map[string]string{annMigratedTo: testProvisioner}),
		"empty directory annotation": fullPV("pv14", testServer, testPath+"/a", ours("", "delete")),
		"another provisioner's NFS":  fullPV("pv15", testServer, testPath+"/c", map[string]string{annProvisionedBy: "other"}),
	}
	e := newEnv(t, testPath)
	c := NewCompactor(testProvisioner, testSet(testPath))
	for name, pv := range cases {
		t.Run(name, func(t *testing.T) {
			assert.True(t, c.Keep(pv), "every case is on our server or names us")
			small := c.Compact(pv)

			dir, policy, err := e.p.recordOf(context.Background(), pv)
			cdir, cpolicy, cerr := e.p.recordOf(context.Background(), small)
			assert.Equal(t, dir, cdir)
			assert.Equal(t, policy, cpolicy)
			assert.Equal(t, err, cerr)

			for name, index := range Indexers(testSet(testPath)) {
				want, err := index(pv)
				require.NoError(t, err)
				got, err := index(small)
				require.NoError(t, err)
				assert.Equal(t, want, got, "index %s", name)
			}

			// What the library reads.
			assert.Equal(t, pv.Name, small.Name)
			assert.Equal(t, pv.UID, small.UID)
			assert.Equal(t, pv.ResourceVersion, small.ResourceVersion)
			assert.Equal(t, pv.DeletionTimestamp, small.DeletionTimestamp)
			assert.Equal(t, pv.Finalizers, small.Finalizers)
			assert.Equal(t, pv.Annotations[annProvisionedBy], small.Annotations[annProvisionedBy])
			assert.Equal(t, pv.Annotations[annMigratedTo], small.Annotations[annMigratedTo])
			assert.Equal(t, pv.Spec.PersistentVolumeReclaimPolicy, small.Spec.PersistentVolumeReclaimPolicy)
			assert.Equal(t, pv.Spec.StorageClassName, small.Spec.StorageClassName)
			assert.Equal(t, pv.Status.Phase, small.Status.Phase)
			assert.Equal(t, pv.Spec.NFS, small.Spec.NFS)
			// What the usage metrics read.
			assert.Equal(t, &v1.ObjectReference{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name, UID: pv.Spec.ClaimRef.UID}, small.Spec.ClaimRef)
			assert.Equal(t, pv.Spec.Capacity, small.Spec.Capacity)

			// And nothing else.
			assert.Nil(t, small.Labels)
			assert.Nil(t, small.ManagedFields)
			assert.NotContains(t, small.Annotations, "other")
		})
	}
}

func TestCacheOnlyAnnotationIsInvalid(t *testing.T) {
	t.Parallel()
	assert.NotEmpty(t, validation.IsQualifiedName(annDirectoryIsPath), "the API server must refuse it on stored PVs")
}

func TestCompactSharesAnnotations(t *testing.T) {
	t.Parallel()
	c := NewCompactor(testProvisioner, testSet(testPath))
	a := c.Compact(fullPV("a", testServer, testPath+"/ns-a", ours("ns-a", "archive")))
	b := c.Compact(fullPV("b", testServer, testPath+"/ns-b", ours("ns-b", "archive")))
	d := c.Compact(fullPV("d", testServer, testPath+"/ns-d", ours("ns-d", "delete")))
	x := c.Compact(fullPV("x", testServer, testPath+"/ns-x", ours("elsewhere", "archive")))
	same := func(m, n map[string]string) bool {
		return reflect.ValueOf(m).UnsafePointer() == reflect.ValueOf(n).UnsafePointer()
	}
	assert.True(t, same(a.Annotations, b.Annotations), "PVs differing only in their directory share one map")
	assert.False(t, same(a.Annotations, d.Annotations), "another policy, another map")
	assert.False(t, same(a.Annotations, x.Annotations), "a directory that isn't the path's is kept")
	assert.Equal(t, "elsewhere", x.Annotations[AnnDirectory])
}

func TestKeep(t *testing.T) {
	t.Parallel()
	c := NewCompactor(testProvisioner, testSet(testPath))
	csi := fullPV("csi", "", "", map[string]string{})
	csi.Spec.NFS = nil
	csi.Spec.CSI = &v1.CSIPersistentVolumeSource{Driver: testProvisioner}
	assert.True(t, c.Keep(csi), "a CSI PV of a driver with our name")
	csi.Spec.CSI.Driver = "other"
	assert.False(t, c.Keep(csi), "another driver's PV")
	assert.False(t, c.Keep(fullPV("nfs", "other.example.com", "/x", nil)), "NFS elsewhere, not ours")
	assert.False(t, c.Keep(fullPV("nfs", testServer, "/x", nil)), "our server, outside the export")
	assert.True(t, c.Keep(fullPV("nfs", "10.0.0.1", testPath+"/x", nil)), "below our export, server spelled otherwise")
	assert.True(t, c.Keep(fullPV("nfs", "NFS.example.com.", testPath+"/x", nil)), "below our export, server spelled otherwise")
	assert.True(t, c.Keep(fullPV("nfs", "other.example.com", "/x", map[string]string{annProvisionedBy: testProvisioner})), "ours, whatever the server")
}

// TestDeleteThroughCompactedVolumes runs Delete on PVs as the informer cache
// holds them.
func TestDeleteThroughCompactedVolumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	c := NewCompactor(testProvisioner, testSet(testPath))
	for _, policy := range []string{"delete", "archive", "retain"} {
		pv, err := e.provision(t, class("nfs-"+policy, map[string]string{"onDelete": policy, "pathPattern": "${.PVC.namespace}/" + policy}), claim("ns", policy, "uid-"+policy))
		require.NoError(t, err)
		pv.Annotations[annProvisionedBy] = testProvisioner
		small := c.Compact(pv)
		require.NoError(t, e.volumes.Update(small))
		dir := filepath.Join(e.root, "ns", policy)
		require.DirExists(t, dir)

		require.NoError(t, e.p.Delete(context.Background(), small))
		require.NoError(t, e.volumes.Delete(small))
		if policy == "retain" {
			assert.DirExists(t, dir)
		} else {
			assert.NoDirExists(t, dir)
		}
		if policy == "archive" {
			assert.Len(t, archives(t, filepath.Join(e.root, "ns")), 1)
		}
	}
}
