package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
)

// TestWaitForFirstConsumer: a claim of a WaitForFirstConsumer class gets
// neither a PV nor a directory until a pod using it is scheduled; then the
// scheduler selects a node, the provisioner provisions and the claim binds.
func TestWaitForFirstConsumer(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.startProvisioner()
	const ns = "team-a"
	e.namespace(ns)
	e.class("wffc", nil, func(sc *storagev1.StorageClass) {
		sc.VolumeBindingMode = ptr.To(storagev1.VolumeBindingWaitForFirstConsumer)
	})
	e.claim(ns, "data", "wffc")

	// Nothing happens without a consumer. The PV controller reports why.
	e.waitEvent(ns, "data", "WaitForFirstConsumer", "", 15*time.Second)
	// A claim of an Immediate class made afterwards binds: the provisioner
	// has seen both claims and left the first alone, no fixed wait needed.
	e.class("immediate", nil)
	e.claim(ns, "barrier", "immediate")
	_, barrier := e.waitBound(ns, "barrier", 60*time.Second)
	pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, "data", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1.ClaimPending, pvc.Status.Phase)
	assert.Empty(t, pvc.Spec.VolumeName)
	assert.NotContains(t, pvc.Annotations, "volume.kubernetes.io/selected-node")
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pvs.Items, 1, "no PV before a consumer is scheduled")
	assert.Equal(t, barrier.Name, pvs.Items[0].Name, "no PV before a consumer is scheduled")
	assert.Equal(t, []string{ns + "-barrier-" + barrier.Name}, e.exportEntries(), "no directory before a consumer is scheduled")
	for _, ev := range e.events(ns, "data") {
		assert.NotEqual(t, "Provisioning", ev.Reason, "provisioning started without a consumer: %s", ev.Message)
	}

	require.NoError(t, e.cp.CreateReadyNode(e.ctx, "node-1"))
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "consumer"},
		Spec: v1.PodSpec{
			Containers: []v1.Container{{
				Name: "app", Image: "registry.invalid/never-pulled:0",
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{
				Name:         "data",
				VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}},
			}},
		},
	}
	_, err = e.client.CoreV1().Pods(ns).Create(e.ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)

	pvc, pv := e.waitBound(ns, "data", 60*time.Second)
	assert.Equal(t, "node-1", pvc.Annotations["volume.kubernetes.io/selected-node"])
	dir := ns + "-data-" + pv.Name
	assert.Equal(t, dir, pv.Annotations[provisioner.AnnDirectory])
	assert.DirExists(t, e.exportDir+"/"+dir)
	assert.Nil(t, pv.Spec.NodeAffinity, "NFS volumes are reachable from every node")
	e.assertReachable(pv, dir)

	// The scheduler binds the pod once its volume is bound.
	var nodeName string
	err = wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(ns).Get(ctx, "consumer", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		nodeName = p.Spec.NodeName
		return nodeName != "", nil
	})
	require.NoError(t, err, "pod not scheduled")
	assert.Equal(t, "node-1", nodeName)
}
