package app

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	libmetrics "sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller/metrics"

	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/incumbent"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
)

const provisionerName = "example.com/nfs"

func testClaim(name string, labels map[string]string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-a", Name: name, UID: types.UID("uid-" + name), Labels: labels,
			// Set by the PV controller on claims of an external provisioner's class.
			Annotations: map[string]string{"volume.kubernetes.io/storage-provisioner": provisionerName},
		},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: ptr("nfs"),
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// TestControllerWithFakeClientset runs the library's controller around our
// provisioner, wired as in production, against the fake clientset.
func TestControllerWithFakeClientset(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	root := t.TempDir()
	class := &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "nfs"},
		Provisioner: provisionerName,
		Parameters:  map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.labels.app}", "onDelete": "delete"},
	}
	client := fake.NewClientset(class)
	startActing(ctx, t, client, root, incumbent.NewChecker(client.CoreV1(), "nfs", "example.com-nfs", "me", time.Now), metrics.New())

	pvcs := client.CoreV1().PersistentVolumeClaims("team-a")
	_, err := pvcs.Create(ctx, testClaim("good", map[string]string{"app": "web"}), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = pvcs.Create(ctx, testClaim("hostile", map[string]string{"app": ".."}), metav1.CreateOptions{})
	require.NoError(t, err)

	var pv *v1.PersistentVolume
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		pv, err = client.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-good", metav1.GetOptions{})
		return err == nil, nil
	}), "PV for the good claim")
	assert.Equal(t, "/srv/nfs/team-a/web", pv.Spec.NFS.Path)
	assert.Equal(t, "10.0.0.5", pv.Spec.NFS.Server)
	assert.Equal(t, "team-a/web", pv.Annotations[provisioner.AnnDirectory])
	assert.Equal(t, provisionerName, pv.Annotations["pv.kubernetes.io/provisioned-by"])
	assert.Equal(t, "good", pv.Spec.ClaimRef.Name)
	assert.DirExists(t, filepath.Join(root, "team-a/web"))

	event := waitForEvent(ctx, t, client, "hostile", "ProvisioningFailed")
	assert.Equal(t, v1.EventTypeWarning, event.Type)
	assert.Contains(t, event.Message, `".." segment`)
	assert.Contains(t, event.Message, "fix the claim's labels or annotations")
	_, err = client.CoreV1().PersistentVolumes().Get(ctx, "pvc-uid-hostile", metav1.GetOptions{})
	assert.Error(t, err, "no PV for the hostile claim")
	entries, err := os.ReadDir(filepath.Join(root, "team-a"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "only the good claim's directory")

	// Release the volume as the PV controller would; the directory goes.
	pv.Status.Phase = v1.VolumeReleased
	_, err = client.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		return err != nil, nil
	}), "PV deleted")
	assert.NoDirExists(t, filepath.Join(root, "team-a/web"))
}

var newControllerMu sync.Mutex

// startActing wires the controller as Run does, with the fake clientset and
// the export at root, and lets it act while checker finds no incumbent.
func startActing(ctx context.Context, t *testing.T, client *fake.Clientset, root string, checker incumbentChecker, m *metrics.Metrics) {
	t.Helper()
	logger := klog.FromContext(ctx)
	o := config.Options{ProvisionerName: provisionerName, NFSServer: "10.0.0.5", NFSPath: "/srv/nfs/", ExportDir: root, Workers: 4, FSTimeout: 5 * time.Second}
	set, err := o.ExportList()
	require.NoError(t, err)
	// NewProvisionController registers types in client-go's global scheme:
	// one at a time.
	newControllerMu.Lock()
	w, err := newController(logger, client, nil, o, set, map[string]*exportfs.FS{exports.DefaultName: exportfs.New(root, o.FSTimeout)}, m, libmetrics.New("controller"))
	newControllerMu.Unlock()
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.factory.Start(runCtx.Done())
	go w.resizeClaims.Run(runCtx.Done())
	// The fake clientset's watch ignores resourceVersion: an object created
	// between an informer's list and its watch is never seen. Tests create
	// theirs once the lists are done.
	require.True(t, cache.WaitForCacheSync(ctx.Done(), w.synced))
	w.events.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: client.CoreV1().Events("")})
	go w.ctrl.Run(runCtx)
	a := &actor{logger: logger, gate: w.gate, informers: w.switched, incumbent: checker, interval: 10 * time.Millisecond, grace: 5 * time.Second, metrics: m, workers: o.Workers, leaderOnly: w.resize}
	acted := make(chan struct{})
	go func() {
		defer close(acted)
		a.act(runCtx, ctx)
	}()
	t.Cleanup(func() {
		<-acted
		cancel()
		w.factory.Shutdown()
		w.events.Shutdown()
	})
}

func waitForEvent(ctx context.Context, t *testing.T, client *fake.Clientset, object, reason string) v1.Event {
	t.Helper()
	var found v1.Event
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		events, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason {
				found = e
				return true, nil
			}
		}
		return false, nil
	}), "event %s on %s", reason, object)
	return found
}

// The API server encodes watch events once per content type: a JSON client
// next to the protobuf controller-manager adds an encoding of every event.
func TestRestConfigSpeaksProtobuf(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))

	cfg, err := restConfig(config.Options{Kubeconfig: kubeconfig, KubeAPIQPS: 123, KubeAPIBurst: 456})
	require.NoError(t, err)
	assert.Equal(t, "application/vnd.kubernetes.protobuf", cfg.ContentType)
	assert.Equal(t, "application/vnd.kubernetes.protobuf,application/json", cfg.AcceptContentTypes)
	assert.Equal(t, float32(123), cfg.QPS)
	assert.Equal(t, 456, cfg.Burst)
}

// TestStartsWithOneWritableExport checks the start-up rule: an export that
// isn't mounted is logged and its claims fail, but the process starts while
// another is writable, and fails to start when none is.
func TestStartsWithOneWritableExport(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	missing := filepath.Join(t.TempDir(), "missing")
	set, err := exports.NewSet([]exports.Export{
		{Name: "fast", Server: "10.0.0.1", Path: "/ssd", Dir: t.TempDir()},
		{Name: "bulk", Server: "10.0.0.2", Path: "/hdd", Dir: missing},
	})
	require.NoError(t, err)
	fss, err := mountedExports(ctx, klog.FromContext(ctx), set, time.Second)
	require.NoError(t, err)
	assert.Len(t, fss, 2, "the missing export is still served: it may be mounted later")

	set, err = exports.NewSet([]exports.Export{{Name: "bulk", Server: "10.0.0.2", Path: "/hdd", Dir: missing}})
	require.NoError(t, err)
	_, err = mountedExports(ctx, klog.FromContext(ctx), set, time.Second)
	require.ErrorContains(t, err, "NFS export bulk (10.0.0.2:/hdd at "+missing+")")
}

// TestOneDirectoryDeclaredTwice checks that two exports that are one
// directory (one server under two addresses), or one inside the other,
// stop start-up, and that distinct ones don't.
func TestOneDirectoryDeclaredTwice(t *testing.T) {
	t.Parallel()
	_, ctx := ktesting.NewTestContext(t)
	logger := klog.FromContext(ctx)
	start := func(list ...exports.Export) error {
		set, err := exports.NewSet(list)
		require.NoError(t, err)
		fss, err := mountedExports(ctx, logger, set, time.Second)
		require.NoError(t, err)
		return distinctExports(ctx, logger, set, fss, time.Second)
	}
	one := t.TempDir()
	twice := filepath.Join(t.TempDir(), "twice")
	require.NoError(t, os.Symlink(one, twice)) // the same directory, mounted twice
	require.NoError(t, os.Mkdir(filepath.Join(one, "fast"), 0o755))
	inside := filepath.Join(t.TempDir(), "inside")
	require.NoError(t, os.Symlink(filepath.Join(one, "fast"), inside))

	err := start(exports.Export{Name: "a", Server: "10.0.0.1", Path: "/vol", Dir: one}, exports.Export{Name: "b", Server: "10.0.0.2", Path: "/vol", Dir: twice})
	require.ErrorContains(t, err, "are one directory (both hold .nfs-provisioner/export-id")
	err = start(exports.Export{Name: "a", Server: "10.0.0.1", Path: "/vol", Dir: one}, exports.Export{Name: "b", Server: "10.0.0.2", Path: "/vol/fast", Dir: inside})
	require.ErrorContains(t, err, `export b (10.0.0.2:/vol/fast at `+inside+`) is directory "fast" of export a`)
	err = start(exports.Export{Name: "a", Server: "10.0.0.1", Path: "/vol", Dir: t.TempDir()}, exports.Export{Name: "b", Server: "10.0.0.2", Path: "/vol/fast", Dir: t.TempDir()})
	require.NoError(t, err, "distinct directories")
}
