package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
	"github.com/kube-nfs/nfs-provisioner/test/chart"
	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// chartNamespace is the release namespace of TestChartAsRendered: not
// deploy/'s, so only the chart's RBAC can be at work.
const chartNamespace = "nfs-chart"

// TestChartAsRendered installs the chart's ServiceAccount, RBAC and
// StorageClass for real and runs the binary the way the rendered Deployment's
// container would: its args, its env (fieldRefs resolved as kubelet does),
// as its ServiceAccount, as many replicas as it asks for. Only what a pod
// provides is substituted: the API credentials (a token of the
// ServiceAccount in a kubeconfig instead of the mounted one), the export
// mount (--export-dir: the NFS server's directory instead of
// /persistentvolumes) and the pod's own network (--http-address on a free
// loopback port instead of :8080). A claim of the chart's class binds, is
// reachable over NFS, and is archived when deleted; a missing RBAC rule would
// show as "forbidden" in a log.
func TestChartAsRendered(t *testing.T) {
	e := newEnv(t, envOptions{})
	objs, err := chart.Render(t, chart.RenderOptions{
		Namespace: chartNamespace,
		Values:    []string{chart.DefaultValuesFile(t)},
		Set:       []string{"nfs.server=" + e.nfs.Server, "nfs.path=" + e.nfs.ExportPath},
	})
	require.NoError(t, err)

	var apply []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StorageClass":
			apply = append(apply, o)
		case "Deployment", "PodDisruptionBudget", "Service":
			// No kubelet: the Deployment is run by hand below.
		default:
			t.Errorf("the chart renders a %s, which this test neither applies nor knows to skip", o.GetKind())
		}
	}
	e.namespace(chartNamespace)
	require.NoError(t, framework.Apply(e.ctx, e.cp.AdminConfig, apply, framework.ApplyOptions{}))

	dep := chartConvert[appsv1.Deployment](t, chart.One(t, objs, "Deployment"))
	class := chartConvert[storagev1.StorageClass](t, chart.One(t, objs, "StorageClass"))
	pod := dep.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	assert.Empty(t, c.Command, "the image's entrypoint is the binary")
	assert.Empty(t, c.EnvFrom)

	// The export: what the container mounts at /persistentvolumes is the NFS
	// server's export, i.e. e.exportDir.
	require.Len(t, c.VolumeMounts, 1)
	assert.Equal(t, "/persistentvolumes", c.VolumeMounts[0].MountPath)
	var exportVolume *v1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == c.VolumeMounts[0].Name {
			exportVolume = &pod.Volumes[i]
		}
	}
	require.NotNil(t, exportVolume, "volume %s", c.VolumeMounts[0].Name)
	require.NotNil(t, exportVolume.NFS)
	assert.Equal(t, e.nfs.Server, exportVolume.NFS.Server)
	assert.Equal(t, e.nfs.ExportPath, exportVolume.NFS.Path)

	kubeconfig, err := e.cp.ServiceAccountKubeconfig(e.ctx, chartNamespace, pod.ServiceAccountName)
	require.NoError(t, err)
	replicas := int(ptrValue(dep.Spec.Replicas))
	require.Positive(t, replicas)
	var procs []electionReplica
	for i := range replicas {
		podName := fmt.Sprintf("%s-5f7d8c9b4-%05d", dep.Name, i)
		env := chartContainerEnv(t, c, map[string]string{
			"metadata.namespace": chartNamespace,
			"metadata.name":      podName,
			"spec.nodeName":      "node-1",
		})
		p, err := framework.StartProvisioner(e.ctx, framework.ProvisionerOptions{
			Binary: e.bin, Kubeconfig: kubeconfig, ExportDir: e.exportDir,
			// Name, NFSServer, NFSPath, Namespace and Identity stay empty:
			// env, the container's, comes after them and wins. The
			// framework's --enable-pprof is turned off again, as in the pod.
			Args: append([]string{"--enable-pprof=false"}, c.Args...), Env: env,
			LogPath: filepath.Join(e.logDir, podName+".log"),
		})
		require.NoError(t, err)
		t.Cleanup(func() {
			if !p.Exited() {
				p.Terminate(10 * time.Second)
			}
		})
		procs = append(procs, electionReplica{id: podName, p: p})
	}

	// The probes answer on the paths the chart gives them.
	for _, probe := range []*v1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		require.NotNil(t, probe)
		require.NotNil(t, probe.HTTPGet)
		assert.Equal(t, "http", probe.HTTPGet.Port.String())
		for _, r := range procs {
			code, body, err := r.p.Get(e.ctx, probe.HTTPGet.Path)
			require.NoError(t, err)
			assert.Equal(t, 200, code, "%s %s: %s", r.id, probe.HTTPGet.Path, body)
		}
	}
	require.Len(t, c.Ports, 1)
	assert.Equal(t, int32(8080), c.Ports[0].ContainerPort, "the binary's default --http-address is :8080")

	// Leader election on the chart's Lease, in the release namespace.
	provisionerName := chartEnvValue(t, c, "PROVISIONER_NAME")
	assert.Equal(t, class.Provisioner, provisionerName)
	leaseName := strings.ReplaceAll(provisionerName, "/", "-")
	var holder string
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := e.client.CoordinationV1().Leases(chartNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		holder = ptrValue(l.Spec.HolderIdentity)
		for _, r := range procs {
			if strings.HasPrefix(holder, r.id+"_") {
				return electionLeaderMetricValue(ctx, r.p) == 1, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "no replica holds Lease %s/%s (holder %q)", chartNamespace, leaseName, holder)

	// A claim of the chart's class, through its whole life.
	e.namespace("team-a")
	e.claim("team-a", "data", class.Name)
	_, pv := e.waitBound("team-a", "data", 30*time.Second)
	dir := pv.Annotations[provisioner.AnnDirectory]
	assert.Equal(t, "team-a-data-"+pv.Name, dir)
	assert.Equal(t, provisionerName, pv.Annotations["pv.kubernetes.io/provisioned-by"])
	assert.Equal(t, e.nfs.Server, pv.Spec.NFS.Server)
	assert.Equal(t, e.nfs.ExportPath+"/"+dir, pv.Spec.NFS.Path)
	assert.Equal(t, "archive", pv.Annotations[provisioner.AnnOnDelete], "the chart's default archiveOnDelete: true")
	e.assertReachable(pv, dir)
	e.waitEvent("team-a", "data", "ProvisioningSucceeded", pv.Name, 30*time.Second)

	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims("team-a").Delete(e.ctx, "data", metav1.DeleteOptions{}))
	err = wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	require.NoError(t, err, "PV %s not deleted after its claim", pv.Name)
	entries, err := readExportRoot(e.exportDir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the archived directory only")
	assert.Regexp(t, regexp.MustCompile(`^archived-`+regexp.QuoteMeta(dir)+`-\d{8}-\d{6}$`), entries[0].Name())

	for _, r := range procs {
		assert.NotContains(t, strings.ToLower(r.p.Log()), "forbidden", "%s: the chart's RBAC is enough", r.id)
	}
}

// chartContainerEnv resolves a container's env the way kubelet does for the
// kinds the chart uses: values and fieldRefs (from fields).
func chartContainerEnv(t *testing.T, c v1.Container, fields map[string]string) []string {
	t.Helper()
	var env []string
	for _, ev := range c.Env {
		switch {
		case ev.ValueFrom == nil:
			env = append(env, ev.Name+"="+ev.Value)
		case ev.ValueFrom.FieldRef != nil:
			v, ok := fields[ev.ValueFrom.FieldRef.FieldPath]
			require.True(t, ok, "env %s: fieldRef %s is not resolved by this test", ev.Name, ev.ValueFrom.FieldRef.FieldPath)
			env = append(env, ev.Name+"="+v)
		default:
			t.Fatalf("env %s: valueFrom %+v is not resolved by this test", ev.Name, ev.ValueFrom)
		}
	}
	return env
}

// chartEnvValue is the literal value of a container env var.
func chartEnvValue(t *testing.T, c v1.Container, name string) string {
	t.Helper()
	for _, ev := range c.Env {
		if ev.Name == name {
			require.Nil(t, ev.ValueFrom, "env %s", name)
			return ev.Value
		}
	}
	t.Fatalf("no env %s in container %s", name, c.Name)
	return ""
}

func chartConvert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true))
	return out
}
