package chart

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// everyOptionValues turns on every optional object and setting of the chart
// that renders differently: the export through a PV/claim with mount
// options, an extra StorageClass, the ServiceMonitor, lease timings, extra
// args and env (including a fieldRef), hard anti-affinity and the incumbent's
// PDB key.
const everyOptionValues = `
nfs:
  mountOptions: [nfsvers=4.1, hard]
storageClass:
  defaultClass: true
  onDelete: retain
  pathPattern: "${.PVC.namespace}/${.PVC.name}"
  mode: "2770"
  uid: 1000
  gid: 2000
  allowSharedPath: true
  volumeBindingMode: WaitForFirstConsumer
  annotations: {example.com/owner: platform}
extraStorageClasses:
  - name: nfs-retain
    reclaimPolicy: Retain
    onDelete: retain
    pathPattern: "${.PVC.annotations.nfs.io/storage-path}"
    mountOptions: [nfsvers=3]
leaderElection:
  leaseDuration: 30s
  renewDeadline: 20s
  retryPeriod: 2s
serviceAccount:
  annotations: {example.com/role: storage}
podAnnotations: {example.com/scrape: "true"}
labels: {team: storage}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations:
  - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
podAntiAffinity: hard
podDisruptionBudget:
  maxUnavailable: 1
resources:
  limits: {memory: 256Mi}
metrics:
  service:
    annotations: {example.com/port: "8080"}
  serviceMonitor:
    enabled: true
    labels: {release: kube-prometheus-stack}
extraArgs: [--workers=16, --fs-timeout=1m]
extraEnv:
  - {name: KUBE_API_QPS, value: 50}
  - name: NODE_NAME
    valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
`

// TestServerSideDryRun sends every object the chart renders (defaults, the
// incumbent's values file, every optional object, several exports) and every object of deploy/
// to a real kube-apiserver as a server-side dry-run apply: schema, defaulting,
// validation and admission run, nothing is stored. Kinds the API server does
// not serve (ServiceMonitor without the Prometheus Operator's CRD) are
// skipped and logged.
func TestServerSideDryRun(t *testing.T) {
	Helm(t) // skips with -short
	framework.RequireControlPlaneBinaries(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logDir := filepath.Join(os.TempDir(), "nfs-provisioner-chart", t.Name())
	require.NoError(t, os.RemoveAll(logDir))
	cp, err := framework.StartControlPlane(ctx, framework.ControlPlaneOptions{LogDir: logDir})
	require.NoError(t, err)
	t.Cleanup(cp.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control-plane logs kept in %s", logDir)
		}
	})

	// The namespace for real, so that namespaced dry runs are admitted.
	ns := LoadManifests(t, filepath.Join(RepoRoot(t), "deploy", "namespace.yaml"))
	require.Len(t, ns, 1)
	require.Equal(t, DefaultNamespace, ns[0].GetName(), "the chart tests render into deploy/'s namespace")
	require.NoError(t, framework.Apply(ctx, cp.AdminConfig, ns, framework.ApplyOptions{}))

	everyOption := filepath.Join(t.TempDir(), "every-option.yaml")
	require.NoError(t, os.WriteFile(everyOption, []byte(everyOptionValues), 0o644))
	sets := map[string][]*unstructured.Unstructured{
		"chart defaults":        RenderChart(t, ""),
		"chart incumbent":       RenderChart(t, incumbentValues(t)),
		"chart every option":    mustRender(t, RenderOptions{Values: []string{DefaultValuesFile(t), everyOption}}),
		"chart several exports": mustRender(t, RenderOptions{Values: []string{writeValues(t, severalExportsValues)}}),
		"deploy kustomize base": deployObjects(t),
	}
	wantKinds := map[string][]string{
		"chart defaults":        {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StorageClass", "Deployment", "PodDisruptionBudget", "Service"},
		"chart incumbent":       {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StorageClass", "Deployment", "PersistentVolume", "PersistentVolumeClaim", "Service"},
		"chart every option":    {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StorageClass", "StorageClass", "Deployment", "PersistentVolume", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceMonitor"},
		"chart several exports": {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StorageClass", "StorageClass", "StorageClass", "Deployment", "PersistentVolume", "PersistentVolumeClaim", "PodDisruptionBudget", "Service"},
		"deploy kustomize base": {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StorageClass", "Deployment", "PodDisruptionBudget", "Service"},
	}
	names := make([]string, 0, len(sets))
	for name := range sets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		objs := sets[name]
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
			}
			assert.ElementsMatch(t, wantKinds[name], kinds, "what the render holds")
			served, skipped := servedObjects(t, cp.AdminConfig, objs)
			for _, o := range skipped {
				t.Logf("skipped %s %s: the API server does not serve %s (no CRD)", o.GetKind(), o.GetName(), o.GetAPIVersion())
			}
			for _, o := range skipped {
				assert.Equal(t, "ServiceMonitor", o.GetKind(), "only the ServiceMonitor may lack its API")
			}
			cfg, warnings := recordingWarnings(cp.AdminConfig)
			require.NoError(t, framework.Apply(ctx, cfg, served, framework.ApplyOptions{DryRun: true}))
			assert.Empty(t, warnings.list(), "API server warnings")
			assertNotStored(t, ctx, cp.AdminConfig, served)
		})
	}

	// The dry run has teeth: an invalid value fails it, a deprecated one
	// draws a warning.
	defaultDeployment := func(t *testing.T) (*unstructured.Unstructured, map[string]any, func()) {
		d := Find(sets["chart defaults"], "Deployment", "nfs-subdir-external-provisioner-nfs-provisioner").DeepCopy()
		require.NotNil(t, d)
		containers, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		require.NoError(t, err)
		save := func() {
			require.NoError(t, unstructured.SetNestedSlice(d.Object, containers, "spec", "template", "spec", "containers"))
		}
		return d, containers[0].(map[string]any), save
	}
	t.Run("invalid_Deployment_rejected", func(t *testing.T) {
		d, c, save := defaultDeployment(t)
		c["imagePullPolicy"] = "Sometimes"
		save()
		err := framework.Apply(ctx, cp.AdminConfig, []*unstructured.Unstructured{d}, framework.ApplyOptions{DryRun: true})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "imagePullPolicy")
	})
	t.Run("deprecated_field_warns", func(t *testing.T) {
		d, _, _ := defaultDeployment(t)
		require.NoError(t, unstructured.SetNestedStringMap(d.Object, map[string]string{"beta.kubernetes.io/os": "linux"}, "spec", "template", "spec", "nodeSelector"))
		cfg, warnings := recordingWarnings(cp.AdminConfig)
		require.NoError(t, framework.Apply(ctx, cfg, []*unstructured.Unstructured{d}, framework.ApplyOptions{DryRun: true}))
		assert.NotEmpty(t, warnings.list(), "the warning recorder sees the API server's warnings")
	})
	// Server-side apply refuses a container env with a name given twice, so
	// the chart refuses extraEnv entries that repeat a variable it sets.
	t.Run("duplicate_env_rejected_and_refused_by_the_chart", func(t *testing.T) {
		d, c, save := defaultDeployment(t)
		c["env"] = append(c["env"].([]any), map[string]any{"name": "NFS_SERVER", "value": "other"})
		save()
		err := framework.Apply(ctx, cp.AdminConfig, []*unstructured.Unstructured{d}, framework.ApplyOptions{DryRun: true})
		require.Error(t, err)
		assert.Contains(t, err.Error(), `duplicate entries for key [name="NFS_SERVER"]`)

		for set, want := range map[string]string{
			"extraEnv[0].name=NFS_SERVER,extraEnv[0].value=other":                                           "extraEnv[0] sets NFS_SERVER, which the chart sets itself: set nfs.server instead",
			"extraEnv[0].name=POD_NAME,extraEnv[0].value=me":                                                "extraEnv[0] sets POD_NAME, which the chart sets itself",
			"extraEnv[0].name=A,extraEnv[0].value=1,extraEnv[1].name=A,extraEnv[1].value=2":                 "extraEnv[1] sets A a second time",
			"leaderElection.retryPeriod=2s,extraEnv[0].name=LEADER_ELECT_RETRY_PERIOD,extraEnv[0].value=3s": "set leaderElection.retryPeriod only",
		} {
			msg := RenderError(t, RenderOptions{Values: []string{DefaultValuesFile(t)}, Set: []string{set}})
			assert.Contains(t, msg, want, "--set %s", set)
		}
		// A variable the chart leaves out may be set through extraEnv.
		objs := RenderChart(t, "", "extraEnv[0].name=LEADER_ELECT_RETRY_PERIOD", "extraEnv[0].value=3s")
		served, _ := servedObjects(t, cp.AdminConfig, OfKind(objs, "Deployment"))
		require.NoError(t, framework.Apply(ctx, cp.AdminConfig, served, framework.ApplyOptions{DryRun: true}))
	})
}

func mustRender(t *testing.T, o RenderOptions) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Render(t, o)
	require.NoError(t, err)
	return objs
}

// servedObjects splits objs into those whose kind the API server serves and
// the rest.
func servedObjects(t *testing.T, cfg *rest.Config, objs []*unstructured.Unstructured) (served, skipped []*unstructured.Unstructured) {
	t.Helper()
	mapper := restMapper(t, cfg)
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		_, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		switch {
		case meta.IsNoMatchError(err):
			skipped = append(skipped, o)
		case err != nil:
			require.NoError(t, err, "%s %s", gvk, o.GetName())
		default:
			served = append(served, o)
		}
	}
	return served, skipped
}

func restMapper(t *testing.T, cfg *rest.Config) meta.RESTMapper {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
}

// assertNotStored checks that a dry run left nothing behind (the Namespace
// applied for real aside).
func assertNotStored(t *testing.T, ctx context.Context, cfg *rest.Config, objs []*unstructured.Unstructured) {
	t.Helper()
	mapper := restMapper(t, cfg)
	client, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			continue
		}
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		require.NoError(t, err)
		var ri dynamic.ResourceInterface = client.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = client.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		_, err = ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "%s %s exists after a dry run: %v", o.GetKind(), o.GetName(), err)
	}
}

// warningRecorder collects the API server's Warning headers.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

func recordingWarnings(cfg *rest.Config) (*rest.Config, *warningRecorder) {
	w := &warningRecorder{}
	c := rest.CopyConfig(cfg)
	c.WarningHandler = w
	return c, w
}
