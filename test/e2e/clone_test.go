package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-nfs/nfs-provisioner/test/faultfs"
	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// TestCloneCopiesAClaim: a claim whose data source is another claim of
// the namespace gets a copy of its data, through NFS as a pod would see it;
// the source is protected by a finalizer only during the copy. A clone
// smaller than its source stays Pending with a Warning; a claim asking for
// a snapshot too; a claim left to a volume populator gets no Warning. None
// of them gets a directory.
func TestCloneCopiesAClaim(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", map[string]string{"mode": "0770"})
	e.claim(ns, "src", "nfs")
	_, srcPV := e.waitBound(ns, "src", 30*time.Second)
	srcDir := filepath.Join(e.exportDir, ns+"-src-"+srcPV.Name)
	require.NoError(t, os.WriteFile(filepath.Join(srcDir, "data"), []byte("to be cloned"), 0o640))
	require.NoError(t, os.MkdirAll(filepath.Join(srcDir, "sub", "deeper"), 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(srcDir, "sub", "deeper", "big"), make([]byte, 8<<20), 0o600))
	require.NoError(t, os.Chown(filepath.Join(srcDir, "data"), 1234, 5678))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(srcDir, "sub", "link")))
	require.NoError(t, os.Link(filepath.Join(srcDir, "data"), filepath.Join(srcDir, "sub", "hardlink")))
	// And a file a pod wrote over NFS.
	require.NoError(t, e.nfs.WriteFile(e.ctx, srcPV.Spec.NFS.Server, srcPV.Spec.NFS.Path, "from-a-pod", []byte("written over NFS")))

	e.claim(ns, "clone", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	})
	_, pv := e.waitBound(ns, "clone", 60*time.Second)
	dir := ns + "-clone-" + pv.Name
	dst := filepath.Join(e.exportDir, dir)
	b, err := os.ReadFile(filepath.Join(dst, "data"))
	require.NoError(t, err)
	assert.Equal(t, "to be cloned", string(b))
	var st, hl syscall.Stat_t
	require.NoError(t, syscall.Lstat(filepath.Join(dst, "data"), &st))
	assert.Equal(t, uint32(1234), st.Uid)
	assert.Equal(t, uint32(5678), st.Gid)
	assert.Equal(t, uint32(0o640), st.Mode&0o7777)
	require.NoError(t, syscall.Lstat(filepath.Join(dst, "sub", "hardlink"), &hl))
	assert.Equal(t, st.Ino, hl.Ino, "hard link kept")
	target, err := os.Readlink(filepath.Join(dst, "sub", "link"))
	require.NoError(t, err)
	assert.Equal(t, "/etc/passwd", target)
	fi, err := os.Stat(filepath.Join(dst, "sub", "deeper", "big"))
	require.NoError(t, err)
	assert.Equal(t, int64(8<<20), fi.Size())
	fi, err = os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o770, fi.Mode(), "the class's mode on the clone's root")
	e.assertReachable(pv, dir)
	// Read back over NFS through the clone's own PV, as its pod would.
	got, err := e.nfs.ReadFile(e.ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, "from-a-pod")
	require.NoError(t, err)
	assert.Equal(t, "written over NFS", string(got))
	ev := e.waitEvent(ns, "clone", "ProvisioningSucceeded", pv.Name, 30*time.Second)
	t.Logf("Event on clone: %s", ev.Message)
	for _, ev := range e.events(ns, "clone") {
		t.Logf("Event on clone: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
	src, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, "src", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, src.Finalizers, "nfs.kube-nfs.io/clone-source-protection", "released once the copy is done")

	before := e.exportEntries()
	snapGroup := "snapshot.storage.k8s.io"
	popGroup := "hello.example.com"
	e.claim(ns, "small-clone", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
		c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("512Mi")
	})
	e.claim(ns, "from-snapshot", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &snapGroup, Kind: "VolumeSnapshot", Name: "snap"}
	})
	e.claim(ns, "populated", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &popGroup, Kind: "Hello", Name: "hello"}
	})

	ev = e.waitEvent(ns, "small-clone", "ProvisioningFailed", "less than the 1Gi of source PersistentVolumeClaim", 30*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("Event on small-clone: %s", ev.Message)
	ev = e.waitEvent(ns, "from-snapshot", "ProvisioningFailed", "NFS subdirectories have no snapshots", 30*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("Event on from-snapshot: %s", ev.Message)

	// The populator's claim was seen by now (claims are worked on in
	// parallel and the others were refused); give it a few more seconds.
	time.Sleep(3 * time.Second)
	for _, ev := range e.events(ns, "populated") {
		assert.NotEqual(t, "Warning", ev.Type, "no Warning for a populator's claim: %s %s", ev.Reason, ev.Message)
		t.Logf("Event on populated: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
	for _, c := range []string{"small-clone", "from-snapshot", "populated"} {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, c, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1.ClaimPending, pvc.Status.Phase, c)
		assert.Empty(t, pvc.Spec.VolumeName, c)
	}
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pvs.Items, 2, "the source's PV and the clone's")
	assert.Equal(t, before, e.exportEntries(), "no directory for any of them")
	src, err = e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, "src", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, src.Finalizers, "nfs.kube-nfs.io/clone-source-protection", "a refused clone doesn't protect its source")

	_, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Regexp(t, `nfs_provisioner_operations_total\{export="default",operation="provision",outcome="refused"\} [1-9]`, body)
	assert.Contains(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="success"} 2`)
}

// TestCloneProtectsItsSource: while the copy runs (held here by reads of
// the source hanging), the clone stays Pending with no PV, and the source
// claim, deleted meanwhile, stays until the copy is done; then the clone
// binds with the data and the source goes.
func TestCloneProtectsItsSource(t *testing.T) {
	e := newFaultEnv(t, nil)
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", nil)
	e.claim(ns, "src", "nfs")
	_, srcPV := e.waitBound(ns, "src", 30*time.Second)
	srcRel := ns + "-src-" + srcPV.Name
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, srcRel, "data"), []byte("to be cloned"), 0o644))
	// A tenant's hostile entries: a link to another tenant's directory and
	// a FIFO named like a file.
	neighbours(t, e.exportDir, "unused")
	require.NoError(t, os.Symlink("../other-tenant/keep", filepath.Join(e.exportDir, srcRel, "escape")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(e.exportDir, srcRel, "report.csv"), 0o644))
	hang := e.ffs.Hang(faultfs.Match{Path: srcRel + "/data"})

	e.claim(ns, "clone", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	})
	ev := e.waitEvent(ns, "clone", "ProvisioningFailed", `copying PersistentVolumeClaim "src" into the new volume`, 30*time.Second)
	t.Logf("Event on clone while it copies: %s", ev.Message)
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "src", metav1.DeleteOptions{}))
	time.Sleep(2 * time.Second)
	src, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, "src", metav1.GetOptions{})
	require.NoError(t, err, "the source stays while it is copied")
	assert.NotNil(t, src.DeletionTimestamp)
	assert.Contains(t, src.Finalizers, "nfs.kube-nfs.io/clone-source-protection")
	clone, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, "clone", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1.ClaimPending, clone.Status.Phase)
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pvs.Items, 1, "no PV for the clone before its copy is done")
	require.Positive(t, hang.Hits())

	hang.Clear()
	_, pv := e.waitBound(ns, "clone", 90*time.Second)
	dst := filepath.Join(e.exportDir, ns+"-clone-"+pv.Name)
	b, err := os.ReadFile(filepath.Join(dst, "data"))
	require.NoError(t, err)
	assert.Equal(t, "to be cloned", string(b))
	target, err := os.Readlink(filepath.Join(dst, "escape"))
	require.NoError(t, err)
	assert.Equal(t, "../other-tenant/keep", target, "a link, not a copy of the other tenant's data")
	var st syscall.Stat_t
	require.NoError(t, syscall.Lstat(filepath.Join(dst, "report.csv"), &st))
	assert.Equal(t, uint32(syscall.S_IFIFO), st.Mode&syscall.S_IFMT)
	err = wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "src", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	require.NoError(t, err, "the source goes once the copy is done")
}

// TestCloneHandedOver: the leader stops while a copy hangs; the next leader
// takes the clone over, and once the export answers the clone binds with
// the data and the source's finalizer goes.
func TestCloneHandedOver(t *testing.T) {
	e := newFaultEnv(t, nil)
	first := electionReplica{id: "provisioner-1", p: e.p}
	e.waitElectionLeader([]electionReplica{first}, 30*time.Second)
	e.procs++
	id := fmt.Sprintf("provisioner-%d", e.procs)
	p2, err := framework.StartProvisioner(e.ctx, framework.ProvisionerOptions{
		Binary: e.bin, Kubeconfig: e.kubeconfig,
		Name: provisionerName, NFSServer: e.nfs.Server, NFSPath: e.nfs.ExportPath, ExportDir: e.ffs.Dir,
		Namespace: namespace, Identity: id,
		LogPath: filepath.Join(e.logDir, id+".log"),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if !p2.Exited() {
			p2.Terminate(10 * time.Second)
		}
	})
	second := electionReplica{id: id, p: p2}
	e.waitStandingBy(second, first, 30*time.Second)

	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", nil)
	e.claim(ns, "src", "nfs")
	_, srcPV := e.waitBound(ns, "src", 30*time.Second)
	srcRel := ns + "-src-" + srcPV.Name
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, srcRel, "data"), []byte("to be cloned"), 0o644))
	hang := e.ffs.Hang(faultfs.Match{Path: srcRel + "/data"})
	e.claim(ns, "clone", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	})
	e.waitEvent(ns, "clone", "ProvisioningFailed", `copying PersistentVolumeClaim "src" into the new volume`, 30*time.Second)

	first.p.Terminate(10 * time.Second)
	e.waitElectionLeader([]electionReplica{second}, 60*time.Second)
	// The new leader retries the clone; its copy hangs too, until:
	time.Sleep(3 * time.Second)
	hang.Clear()
	_, pv := e.waitBound(ns, "clone", 5*time.Minute)
	b, err := os.ReadFile(filepath.Join(e.exportDir, ns+"-clone-"+pv.Name, "data"))
	require.NoError(t, err)
	assert.Equal(t, "to be cloned", string(b))
	err = wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		src, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "src", metav1.GetOptions{})
		return err == nil && !slices.Contains(src.Finalizers, "nfs.kube-nfs.io/clone-source-protection"), err
	})
	require.NoError(t, err, "the finalizer goes once the new leader's copy is done")
	for _, ev := range e.events(ns, "clone") {
		t.Logf("Event on clone: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
}

// TestCloneDeletedDuringCopy: a clone deleted while it copies is finished
// anyway (the library keeps provisioning a claim in progress), and its
// volume, released at once, goes the way of its class's onDelete; the
// source's finalizer goes.
func TestCloneDeletedDuringCopy(t *testing.T) {
	e := newFaultEnv(t, nil)
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", map[string]string{"onDelete": "delete"})
	e.claim(ns, "src", "nfs")
	_, srcPV := e.waitBound(ns, "src", 30*time.Second)
	srcRel := ns + "-src-" + srcPV.Name
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, srcRel, "data"), []byte("to be cloned"), 0o644))
	before := e.exportEntries()
	hang := e.ffs.Hang(faultfs.Match{Path: srcRel + "/data"})
	clone := e.claim(ns, "clone", "nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	})
	e.waitEvent(ns, "clone", "ProvisioningFailed", `copying PersistentVolumeClaim "src" into the new volume`, 30*time.Second)
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "clone", metav1.DeleteOptions{}))
	time.Sleep(time.Second)
	hang.Clear()

	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pvs, err := e.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		src, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "src", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		// The clone's directory exists from the start of the copy: its
		// going means its volume was made and deleted.
		return len(pvs.Items) == 1 && !slices.Contains(src.Finalizers, "nfs.kube-nfs.io/clone-source-protection") &&
			slices.Equal(before, e.exportEntries()), nil
	})
	require.NoError(t, err, "the clone's volume made and deleted, its directory with it, the source released; export: %v", e.exportEntries())
	for _, ev := range e.events("", "pvc-"+string(clone.UID)) {
		t.Logf("Event on the clone's PV: %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
}
