package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
)

// TestStatefulSet: the StatefulSet controller creates one claim per replica
// from volumeClaimTemplates; each gets its own PV and directory, and scaling
// down and up again keeps claims, volumes, directories and data.
func TestStatefulSet(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.startProvisioner()
	const ns, sts = "apps", "web"
	e.namespace(ns)
	e.class("nfs", map[string]string{"onDelete": "delete"})

	ss := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sts},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](3),
			ServiceName:         sts,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": sts}},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": sts}},
				Spec: v1.PodSpec{
					Containers: []v1.Container{{
						Name: "app", Image: "registry.invalid/never-pulled:0",
						VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
					}},
				},
			},
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: v1.PersistentVolumeClaimSpec{
					StorageClassName: ptr.To("nfs"),
					AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
	_, err := e.client.AppsV1().StatefulSets(ns).Create(e.ctx, ss, metav1.CreateOptions{})
	require.NoError(t, err)

	type replica struct {
		claimUID types.UID
		pv, dir  string
	}
	bound := func() map[string]replica {
		out := map[string]replica{}
		for i := 0; i < 3; i++ {
			name := fmt.Sprintf("data-%s-%d", sts, i)
			e.waitClaimExists(ns, name, 30*time.Second)
			pvc, pv := e.waitBound(ns, name, 60*time.Second)
			dir := pv.Annotations[provisioner.AnnDirectory]
			out[name] = replica{claimUID: pvc.UID, pv: pv.Name, dir: dir}
		}
		return out
	}
	before := bound()
	pvs, dirs := map[string]bool{}, map[string]bool{}
	for name, r := range before {
		pv, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, r.pv, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, ns+"-"+name+"-"+r.pv, r.dir, "default directory name of %s", name)
		assert.Equal(t, e.nfs.ExportPath+"/"+r.dir, pv.Spec.NFS.Path)
		assert.Equal(t, "delete", pv.Annotations[provisioner.AnnOnDelete])
		e.assertReachable(pv, r.dir)
		pvs[r.pv], dirs[r.dir] = true, true
	}
	require.Len(t, pvs, 3, "three distinct PVs")
	require.Len(t, dirs, 3, "three distinct directories")

	// Data written by replica 0 "over NFS".
	r0 := before["data-web-0"]
	pv0, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, r0.pv, metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, e.nfs.WriteFile(e.ctx, pv0.Spec.NFS.Server, pv0.Spec.NFS.Path, "state.txt", []byte("replica 0 state")))

	e.scaleStatefulSet(ns, sts, 1)
	e.waitStatefulSetPods(ns, sts, 1)
	// The default persistentVolumeClaimRetentionPolicy (Retain) keeps every
	// claim, and so every volume and directory.
	for name, r := range before {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, name, metav1.GetOptions{})
		require.NoError(t, err, "claim %s kept after scale-down", name)
		assert.Equal(t, r.claimUID, pvc.UID)
		assert.Equal(t, v1.ClaimBound, pvc.Status.Phase)
		assert.DirExists(t, filepath.Join(e.exportDir, r.dir))
	}

	e.scaleStatefulSet(ns, sts, 3)
	e.waitStatefulSetPods(ns, sts, 3)
	after := bound()
	assert.Equal(t, before, after, "same claims bound to the same PVs and directories")
	got, err := e.nfs.ReadFile(e.ctx, pv0.Spec.NFS.Server, pv0.Spec.NFS.Path, "state.txt")
	require.NoError(t, err)
	assert.Equal(t, "replica 0 state", string(got))
	entries, err := readExportRoot(e.exportDir)
	require.NoError(t, err)
	assert.Len(t, entries, 3, "no directory beyond the three replicas': %v", e.exportEntries())
}

// scaleStatefulSet sets spec.replicas.
func (e *env) scaleStatefulSet(ns, name string, replicas int32) {
	e.t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	_, err := e.client.AppsV1().StatefulSets(ns).Patch(e.ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(e.t, err)
}

// waitStatefulSetPods waits until exactly the pods <name>-0 … <name>-(n-1)
// exist, none terminating. With no kubelet, a terminating pod that was bound
// to a node would never go away: such pods are force-deleted (grace period
// 0), as an operator would for a lost node. Unscheduled pods are deleted at
// once by the API server anyway.
func (e *env) waitStatefulSetPods(ns, name string, n int) {
	e.t.Helper()
	var names []string
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		names = names[:0]
		ok := len(pods.Items) == n
		for _, p := range pods.Items {
			names = append(names, p.Name)
			if p.DeletionTimestamp != nil {
				ok = false
				err := e.client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
				if err != nil && !apierrors.IsNotFound(err) {
					return false, err
				}
				continue
			}
			var ordinal int
			if _, err := fmt.Sscanf(p.Name, name+"-%d", &ordinal); err != nil || ordinal >= n {
				ok = false
			}
		}
		return ok, nil
	})
	require.NoError(e.t, err, "StatefulSet %s/%s: want %d pods, have %v", ns, name, n, names)
}

// waitClaimExists waits for a claim someone else (a controller) creates.
func (e *env) waitClaimExists(ns, name string, timeout time.Duration) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	require.NoError(e.t, err, "claim %s/%s was never created", ns, name)
}
