// Command demo is `make demo`: a local control plane, a real NFS server and
// the provisioner binding a 3-replica StatefulSet's claims, left running
// until Ctrl-C or `make demo-down`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := framework.RepoRoot()
	if err != nil {
		return err
	}
	state := filepath.Join(root, ".cache", "demo")
	if err := os.RemoveAll(state); err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(state, "demo.pid")
	if err := os.WriteFile(pidFile, []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	step("Building the control plane (cached after the first run) and the provisioner")
	binDir, err := framework.BuildControlPlaneBinaries(ctx, os.Stdout)
	if err != nil {
		return err
	}
	bin, err := framework.BuildProvisioner(ctx)
	if err != nil {
		return err
	}

	step("Starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback")
	cp, err := framework.StartControlPlane(ctx, framework.ControlPlaneOptions{BinDir: binDir, Dir: filepath.Join(state, "controlplane")})
	if err != nil {
		return err
	}
	defer cp.Stop()

	step("Starting nfs-ganesha, exporting " + filepath.Join(state, "export"))
	exportDir := filepath.Join(state, "export")
	if err := os.MkdirAll(exportDir, 0o755); err != nil {
		return err
	}
	nfs, err := framework.StartNFSServer(ctx, framework.NFSOptions{Dir: exportDir, WorkDir: filepath.Join(state, "nfs")})
	if err != nil {
		return err
	}
	defer nfs.Stop()

	step("Installing deploy/ RBAC and starting the provisioner with its ServiceAccount token")
	objs, err := framework.ReadManifests(filepath.Join(root, "deploy", "namespace.yaml"), filepath.Join(root, "deploy", "rbac.yaml"))
	if err != nil {
		return err
	}
	if err := framework.Apply(ctx, cp.AdminConfig, objs, framework.ApplyOptions{}); err != nil {
		return err
	}
	saConfig, err := cp.ServiceAccountKubeconfig(ctx, "nfs-provisioner", "nfs-provisioner")
	if err != nil {
		return err
	}
	prov, err := framework.StartProvisioner(ctx, framework.ProvisionerOptions{
		Binary: bin, Kubeconfig: saConfig,
		Name: "k8s-sigs.io/nfs-subdir-external-provisioner", NFSServer: nfs.Server, NFSPath: nfs.ExportPath, ExportDir: exportDir,
		Namespace: "nfs-provisioner", Identity: "nfs-provisioner-demo",
		LogPath: filepath.Join(state, "nfs-provisioner.log"),
	})
	if err != nil {
		return err
	}
	defer prov.Terminate(10 * time.Second)

	step("Applying test/demo/statefulset.yaml: StorageClass nfs-client and StatefulSet demo/mysql (3 replicas)")
	objs, err = framework.ReadManifests(filepath.Join(root, "test", "demo", "statefulset.yaml"))
	if err != nil {
		return err
	}
	if err := framework.Apply(ctx, cp.AdminConfig, objs, framework.ApplyOptions{}); err != nil {
		return err
	}
	client := cp.Client()
	start := time.Now()
	if err := waitBound(ctx, client, "demo", 3); err != nil {
		return fmt.Errorf("%w; provisioner log: %s", err, prov.LogPath)
	}
	step(fmt.Sprintf("All 3 claims Bound in %s", time.Since(start).Round(time.Millisecond)))

	// What kubelet would do: mount each PV over NFS and write to it.
	pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, pv := range pvs.Items {
		msg := fmt.Sprintf("written over NFS to %s:%s\n", pv.Spec.NFS.Server, pv.Spec.NFS.Path)
		if err := nfs.WriteFile(ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, "hello.txt", []byte(msg)); err != nil {
			return err
		}
	}
	if err := show(ctx, client, exportDir); err != nil {
		return err
	}

	fmt.Printf(`
The demo is running.
  kubeconfig (admin):  %s
  try:                 kubectl --kubeconfig %s get sc,pvc,pv -A
  provisioner log:     %s
  metrics:             curl http://%s/metrics
  export on disk:      %s
Stop with Ctrl-C, or from another shell: make demo-down
`, cp.KubeconfigPath, cp.KubeconfigPath, prov.LogPath, prov.HTTPAddress, exportDir)
	<-ctx.Done()
	step("Stopping")
	return nil
}

func step(msg string) { fmt.Printf("==> %s\n", msg) }

func waitBound(ctx context.Context, client kubernetes.Interface, ns string, n int) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		bound := 0
		for _, c := range list.Items {
			if c.Status.Phase == v1.ClaimBound {
				bound++
			}
		}
		return bound == n, nil
	})
}

// show prints the StorageClass, the claims, the PVs and the export's tree.
func show(ctx context.Context, client kubernetes.Interface, exportDir string) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	sc, err := client.StorageV1().StorageClasses().Get(ctx, "nfs-client", metav1.GetOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nSTORAGECLASS\tPROVISIONER\tPARAMETERS")
	var params []string
	for k, v := range sc.Parameters {
		params = append(params, k+"="+v)
	}
	sort.Strings(params)
	fmt.Fprintf(w, "%s\t%s\t%s\n", sc.Name, sc.Provisioner, strings.Join(params, " "))

	claims, err := client.CoreV1().PersistentVolumeClaims("demo").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nCLAIM\tSTATUS\tVOLUME\tCAPACITY")
	for _, c := range claims.Items {
		fmt.Fprintf(w, "demo/%s\t%s\t%s\t%s\n", c.Name, c.Status.Phase, c.Spec.VolumeName, c.Status.Capacity.Storage())
	}
	pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nPERSISTENTVOLUME\tNFS\tRECLAIM\tON-DELETE")
	for _, pv := range pvs.Items {
		fmt.Fprintf(w, "%s\t%s:%s\t%s\t%s\n", pv.Name, pv.Spec.NFS.Server, pv.Spec.NFS.Path, pv.Spec.PersistentVolumeReclaimPolicy, pv.Annotations["nfs.kube-nfs.io/on-delete"])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("\nEXPORT %s\n", exportDir)
	return filepath.WalkDir(exportDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(exportDir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		depth := strings.Count(rel, string(filepath.Separator))
		fmt.Printf("%s%s %s\n", strings.Repeat("    ", depth), info.Mode(), d.Name())
		return nil
	})
}
