// Package e2e runs the provisioner binary against a real control plane and a
// real NFS server, both on loopback, with only the RBAC of deploy/.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// The provisioner name and namespace deploy/ uses; its Lease Role names the
// Lease derived from this name.
const (
	provisionerName = "k8s-sigs.io/nfs-subdir-external-provisioner"
	namespace       = "nfs-provisioner"
	serviceAccount  = "nfs-provisioner"
)

// env is one isolated world per test: control plane, NFS server, the
// provisioner's RBAC and credentials.
type env struct {
	t      *testing.T
	ctx    context.Context
	cp     *framework.ControlPlane
	nfs    *framework.NFSServer
	client kubernetes.Interface
	// bin is the provisioner binary, kubeconfig its ServiceAccount's.
	bin, kubeconfig string
	// exportDir is the exported directory on local disk.
	exportDir string
	logDir    string
	procs     int
}

type envOptions struct {
	controllerManagerQPS float32
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs the control plane and nfs-ganesha")
	}
	framework.RequireControlPlaneBinaries(t)
	if err := framework.NFSToolsAvailable(); err != nil {
		if os.Getenv(framework.RequireControlPlaneEnv) != "" {
			t.Fatalf("NFS tools: %v (run test/scripts/install-deps.sh)", err)
		}
		t.Skipf("NFS tools: %v (run test/scripts/install-deps.sh)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	logDir := filepath.Join(os.TempDir(), "nfs-provisioner-e2e", strings.ReplaceAll(t.Name(), "/", "_"))
	require.NoError(t, os.RemoveAll(logDir))
	require.NoError(t, os.MkdirAll(logDir, 0o755))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", logDir)
		}
	})

	bin, err := framework.BuildProvisioner(ctx)
	require.NoError(t, err)

	cp, err := framework.StartControlPlane(ctx, framework.ControlPlaneOptions{
		LogDir:               filepath.Join(logDir, "controlplane"),
		ControllerManagerQPS: o.controllerManagerQPS,
	})
	require.NoError(t, err)
	t.Cleanup(cp.Stop)

	exportDir := filepath.Join(t.TempDir(), "export")
	require.NoError(t, os.MkdirAll(exportDir, 0o755))
	nfs, err := framework.StartNFSServer(ctx, framework.NFSOptions{Dir: exportDir, WorkDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(nfs.Stop)

	root, err := framework.RepoRoot()
	require.NoError(t, err)
	objs, err := framework.ReadManifests(filepath.Join(root, "deploy", "namespace.yaml"), filepath.Join(root, "deploy", "rbac.yaml"))
	require.NoError(t, err)
	require.NoError(t, framework.Apply(ctx, cp.AdminConfig, objs, framework.ApplyOptions{}))
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, namespace, serviceAccount)
	require.NoError(t, err)

	return &env{t: t, ctx: ctx, cp: cp, nfs: nfs, client: cp.Client(), bin: bin, kubeconfig: kubeconfig, exportDir: exportDir, logDir: logDir}
}

// startProvisioner runs one replica as the Deployment would; extra flags in
// args. It is stopped (SIGTERM) when the test ends.
func (e *env) startProvisioner(args ...string) *framework.ProvisionerProcess {
	e.t.Helper()
	e.procs++
	id := fmt.Sprintf("provisioner-%d", e.procs)
	p, err := framework.StartProvisioner(e.ctx, framework.ProvisionerOptions{
		Binary: e.bin, Kubeconfig: e.kubeconfig,
		Name: provisionerName, NFSServer: e.nfs.Server, NFSPath: e.nfs.ExportPath, ExportDir: e.exportDir,
		Namespace: namespace, Identity: id, Args: args,
		LogPath: filepath.Join(e.logDir, id+".log"),
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() {
		if !p.Exited() {
			p.Terminate(10 * time.Second)
		}
		// Runs with deploy/'s RBAC: a rule missing there shows here.
		assert.NotContains(e.t, strings.ToLower(p.Log()), "forbidden", "%s: deploy/rbac.yaml lacks a rule the binary needs (log %s)", id, filepath.Join(e.logDir, id+".log"))
	})
	return p
}

// class creates a StorageClass of ours.
func (e *env) class(name string, params map[string]string, mutate ...func(*storagev1.StorageClass)) *storagev1.StorageClass {
	e.t.Helper()
	sc := &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: name},
		Provisioner: provisionerName,
		Parameters:  params,
	}
	for _, m := range mutate {
		m(sc)
	}
	sc, err := e.client.StorageV1().StorageClasses().Create(e.ctx, sc, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return sc
}

// namespace creates a namespace for claims.
func (e *env) namespace(name string) {
	e.t.Helper()
	_, err := e.client.CoreV1().Namespaces().Create(e.ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(e.t, err)
}

// claim creates a 1Gi ReadWriteMany claim of the class.
func (e *env) claim(ns, name, class string, mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	e.t.Helper()
	pvc := newClaim(ns, name, class)
	for _, m := range mutate {
		m(pvc)
	}
	pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Create(e.ctx, pvc, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return pvc
}

func newClaim(ns, name, class string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

// waitBound waits for the claim to be Bound and returns it with its PV.
func (e *env) waitBound(ns, name string, timeout time.Duration) (*v1.PersistentVolumeClaim, *v1.PersistentVolume) {
	e.t.Helper()
	var pvc *v1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var err error
		pvc, err = e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return pvc.Status.Phase == v1.ClaimBound, nil
	})
	require.NoError(e.t, err, "claim %s/%s not Bound: %+v", ns, name, pvc.Status)
	pv, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	require.NoError(e.t, err)
	return pvc, pv
}

// events lists the Events about an object.
func (e *env) events(ns, name string) []v1.Event {
	e.t.Helper()
	list, err := e.client.CoreV1().Events(ns).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	require.NoError(e.t, err)
	return list.Items
}

// waitEvent waits for an Event with reason on the object whose message
// contains text, and returns it.
func (e *env) waitEvent(ns, name, reason, text string, timeout time.Duration) v1.Event {
	e.t.Helper()
	var found v1.Event
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		for _, ev := range e.events(ns, name) {
			if ev.Reason == reason && strings.Contains(ev.Message, text) {
				found = ev
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(e.t, err, "no %s Event containing %q on %s/%s; events: %+v", reason, text, ns, name, e.events(ns, name))
	return found
}

// assertReachable does what kubelet would with the PV: writes a file through
// NFS at spec.nfs.server:spec.nfs.path, then checks it landed in exactly the
// claim's directory on disk.
func (e *env) assertReachable(pv *v1.PersistentVolume, relDir string) {
	e.t.Helper()
	name := "written-by-" + pv.Name
	require.NoError(e.t, e.nfs.WriteFile(e.ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, name, []byte(pv.Name)))
	data, err := os.ReadFile(filepath.Join(e.exportDir, relDir, name))
	require.NoError(e.t, err, "file written over NFS to %s is not in %s on disk", pv.Spec.NFS.Path, relDir)
	require.Equal(e.t, pv.Name, string(data))
}

// exportEntries lists every path below the export, relative to it.
func (e *env) exportEntries() []string {
	e.t.Helper()
	var out []string
	require.NoError(e.t, filepath.Walk(e.exportDir, func(p string, _ os.FileInfo, err error) error {
		// The provisioner may be deleting or archiving while we walk.
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(e.exportDir, p)
		if rel == ledgerDir {
			return filepath.SkipDir
		}
		if rel != "." {
			out = append(out, rel)
		}
		return nil
	}))
	return out
}

// ledgerDir holds the provisioner's own records at the export root.
var ledgerDir = filepath.Dir(ledger.File)

// readExportRoot lists the export root like os.ReadDir, without the
// provisioner's own records.
func readExportRoot(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	out := entries[:0]
	for _, en := range entries {
		if en.Name() != ledgerDir {
			out = append(out, en)
		}
	}
	return out, err
}

func withMountOptions(opts ...string) func(*storagev1.StorageClass) {
	return func(sc *storagev1.StorageClass) { sc.MountOptions = opts }
}
