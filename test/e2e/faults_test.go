package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-nfs/nfs-provisioner/test/faultfs"
	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// faultEnv is an env whose provisioner sees the export through faultfs:
// faults switched on in ffs hit the provisioner's calls, while e.exportDir
// (served by ganesha, read by the test) is the real directory behind it.
type faultEnv struct {
	*env
	ffs *faultfs.FS
	p   *framework.ProvisionerProcess
}

// newFaultEnv mounts faultfs over the export, lets setup act on it (a fault
// the provisioner must meet from its start), then starts the provisioner on
// the mount with extra flags args.
func newFaultEnv(t *testing.T, setup func(*faultfs.FS), args ...string) *faultEnv {
	t.Helper()
	e := newEnv(t, envOptions{})
	ffs := faultfs.Mount(t, e.exportDir, faultfs.Options{})
	if setup != nil {
		setup(ffs)
	}
	e.procs++
	id := fmt.Sprintf("provisioner-%d", e.procs)
	p, err := framework.StartProvisioner(e.ctx, framework.ProvisionerOptions{
		Binary: e.bin, Kubeconfig: e.kubeconfig,
		Name: provisionerName, NFSServer: e.nfs.Server, NFSPath: e.nfs.ExportPath, ExportDir: ffs.Dir,
		Namespace: namespace, Identity: id, Args: args,
		LogPath: filepath.Join(e.logDir, id+".log"),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if !p.Exited() {
			p.Terminate(10 * time.Second)
		}
	})
	// Runs first: no provisioner call stays hung while it is stopped.
	t.Cleanup(ffs.ClearAll)
	return &faultEnv{env: e, ffs: ffs, p: p}
}

// entry describes one path below the export for before/after comparisons.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
	data     string
}

// stateDir is the provisioner's own directory at the export root (its
// ledger); the unit tests of pkg/ledger and pkg/provisioner check what it
// holds.
const stateDir = ".nfs-provisioner"

// tree lists every path below dir with its type, mode, owner and (for files)
// content, leaving out the provisioner's own state.
func tree(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		// The readiness probe's file comes and goes.
		if errors.Is(err, fs.ErrNotExist) || strings.HasPrefix(d.Name(), ".nfs-provisioner-probe-") {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if rel == stateDir {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		en := entry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			en.data = string(data)
		}
		out[rel] = en
		return nil
	}))
	return out
}

// outside returns the entries of tr not at or below any of dirs.
func outside(tr map[string]entry, dirs ...string) map[string]entry {
	out := map[string]entry{}
	for p, en := range tr {
		in := false
		for _, d := range dirs {
			if p == d || strings.HasPrefix(p, d+"/") {
				in = true
			}
		}
		if !in {
			out[p] = en
		}
	}
	return out
}

// fill writes a small tree into a volume's directory on disk, so deleting
// it takes many calls.
func fill(t *testing.T, dir string) {
	t.Helper()
	for i := range 3 {
		sub := filepath.Join(dir, fmt.Sprintf("sub-%d", i), "deeper")
		require.NoError(t, os.MkdirAll(sub, 0o755))
		for j := range 4 {
			require.NoError(t, os.WriteFile(filepath.Join(sub, fmt.Sprintf("file-%d", j)), []byte("tenant data"), 0o644))
		}
	}
}

// neighbours puts things beside the volumes that no delete or archive may
// touch: another tenant's directory, a file at the export root, a
// directory whose name starts like a volume's.
func neighbours(t *testing.T, exportDir, like string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(exportDir, "other-tenant", "keep"), 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(exportDir, "other-tenant", "keep", "data"), []byte("keep me"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(exportDir, "README"), []byte("export root"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(exportDir, like+"-lookalike"), 0o700))
}

// TestFaultExportFull: while the export has no space (every call that
// allocates fails with ENOSPC), claims are refused with a Warning Event
// saying so and no PV or directory appears; once space is back they bind
// without anyone touching them.
func TestFaultExportFull(t *testing.T) {
	e := newFaultEnv(t, nil)
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", map[string]string{"onDelete": "delete"})
	before := tree(t, e.exportDir)

	full := e.ffs.Fail(syscall.ENOSPC, faultfs.Match{Ops: faultfs.Allocating})
	claims := []string{"full-1", "full-2", "full-3"}
	for _, c := range claims {
		e.claim(ns, c, "nfs")
	}
	for _, c := range claims {
		ev := e.waitEvent(ns, c, "ProvisioningFailed", "out of space", 60*time.Second)
		assert.Equal(t, "Warning", ev.Type)
		assert.Contains(t, ev.Message, "no space left on device")
		t.Logf("Event on %s: %s", c, ev.Message)
	}
	require.Positive(t, full.Hits())
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, pvs.Items, "no PV while the export is full")
	assert.Equal(t, before, tree(t, e.exportDir), "nothing written while the export is full")
	for _, c := range claims {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, c, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1.ClaimPending, pvc.Status.Phase)
	}

	full.Clear()
	for _, c := range claims {
		_, pv := e.waitBound(ns, c, 90*time.Second)
		dir := ns + "-" + c + "-" + pv.Name
		fi, err := os.Stat(filepath.Join(e.exportDir, dir))
		require.NoError(t, err)
		assert.Equal(t, fs.ModeDir|0o777, fi.Mode())
		e.assertReachable(pv, dir)
	}
}

// releasedVolume is a bound volume with a tree of files in its directory,
// beside neighbours no delete or archive may touch.
type releasedVolume struct {
	claim, dir string
	pv         *v1.PersistentVolume
	// before is the export's tree before the claim is deleted.
	before map[string]entry
}

func (e *faultEnv) volumeToRelease(ns, claim string, params map[string]string) releasedVolume {
	e.t.Helper()
	e.namespace(ns)
	e.class(claim, params)
	e.claim(ns, claim, claim)
	_, pv := e.waitBound(ns, claim, 30*time.Second)
	dir := ns + "-" + claim + "-" + pv.Name
	fill(e.t, filepath.Join(e.exportDir, dir))
	neighbours(e.t, e.exportDir, dir)
	return releasedVolume{claim: claim, dir: dir, pv: pv, before: tree(e.t, e.exportDir)}
}

// TestFaultDeleteEIO: EIO in the middle of deleting a volume's tree makes
// the delete fail with a Warning Event and keeps the PV; once the fault
// clears the library's retry completes it, and nothing outside the volume
// changes.
func TestFaultDeleteEIO(t *testing.T) {
	e := newFaultEnv(t, nil)
	const ns = "team-a"
	v := e.volumeToRelease(ns, "doomed", map[string]string{"onDelete": "delete"})

	// Hold the first unlink, so the delete has started (the walk down,
	// reading directories) when the fault switches on.
	held := e.ffs.Hang(faultfs.Match{Ops: []faultfs.Op{faultfs.OpUnlink}, Path: v.dir})
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, v.claim, metav1.DeleteOptions{}))
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	require.NoError(t, held.WaitBlocked(ctx, 1))
	eio := e.ffs.Fail(syscall.EIO, faultfs.Match{Path: v.dir})
	held.Clear()

	ev := e.waitEvent("", v.pv.Name, "VolumeFailedDelete", "input/output error", 60*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("%s Event on %s: %s", time.Now().Format(time.StampMicro), v.pv.Name, ev.Message)
	_, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, v.pv.Name, metav1.GetOptions{})
	require.NoError(t, err, "the PV stays while its directory can't be deleted")
	mid := tree(t, e.exportDir)
	assert.DirExists(t, filepath.Join(e.exportDir, v.dir))
	assert.Less(t, len(mid), len(v.before), "the delete had removed part of the tree when EIO struck")
	assert.Equal(t, outside(v.before, v.dir), outside(mid, v.dir), "nothing outside the volume changed")

	t.Logf("%s clearing EIO after %d hits", time.Now().Format(time.StampMicro), eio.Hits())
	eio.Clear()
	e.waitPVGone(v.pv.Name, 90*time.Second)
	assert.NoDirExists(t, filepath.Join(e.exportDir, v.dir))
	assert.Equal(t, outside(v.before, v.dir), tree(t, e.exportDir), "only the volume's directory is gone")
}

// TestFaultArchiveESTALE: ESTALE on the rename that archives a volume makes
// the archive fail with a Warning Event and keeps the PV; once the fault
// clears the retry archives the tree intact, and nothing else changes.
func TestFaultArchiveESTALE(t *testing.T) {
	e := newFaultEnv(t, nil)
	const ns = "team-a"
	v := e.volumeToRelease(ns, "kept", map[string]string{"onDelete": "archive"})
	// The tree expected afterwards: the volume's entries under <archive>.
	want := map[string]entry{}
	for p, en := range v.before {
		if p == v.dir || strings.HasPrefix(p, v.dir+"/") {
			p = strings.Replace(p, v.dir, "<archive>", 1)
		}
		want[p] = en
	}

	stale := e.ffs.Fail(syscall.ESTALE, faultfs.Match{Ops: []faultfs.Op{faultfs.OpRename}, Path: v.dir})
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, v.claim, metav1.DeleteOptions{}))
	ev := e.waitEvent("", v.pv.Name, "VolumeFailedDelete", "stale file handle", 60*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("Event on %s: %s", v.pv.Name, ev.Message)
	require.Positive(t, stale.Hits())
	_, err := e.client.CoreV1().PersistentVolumes().Get(e.ctx, v.pv.Name, metav1.GetOptions{})
	require.NoError(t, err, "the PV stays while its directory can't be archived")
	assert.Equal(t, v.before, tree(t, e.exportDir), "nothing changed while the rename fails")

	stale.Clear()
	e.waitPVGone(v.pv.Name, 90*time.Second)
	var archives []string
	got := map[string]entry{}
	for p, en := range tree(t, e.exportDir) {
		top, _, _ := strings.Cut(p, "/")
		if strings.HasPrefix(top, "archived-"+v.dir+"-") {
			if top == p {
				archives = append(archives, p)
			}
			p = strings.Replace(p, top, "<archive>", 1)
		}
		got[p] = en
	}
	assert.Len(t, archives, 1, "one archive of %s: %v", v.dir, archives)
	assert.Equal(t, want, got, "the volume's tree moved intact to its archive, nothing else changed")
}

// TestFaultRootSquash: on an export that squashes root, a class with uid/gid
// gets a Warning Event naming root_squash instead of a bare EPERM; a class
// without them still works, and its directory belongs to the squashed user.
func TestFaultRootSquash(t *testing.T) {
	var exportDir string
	e := newFaultEnv(t, func(ffs *faultfs.FS) {
		// An export used with root_squash must be writable by the
		// squashed user, or nothing could be provisioned at all.
		require.NoError(t, os.Chmod(ffs.Backing, 0o777))
		ffs.RootSquash(faultfs.Nobody)
		exportDir = ffs.Backing
	})
	const ns = "team-a"
	e.namespace(ns)
	e.class("owned", map[string]string{"onDelete": "delete", "uid": "1000", "gid": "2000", "mode": "0770"})
	e.class("plain", map[string]string{"onDelete": "delete"})

	e.claim(ns, "owned", "owned")
	ev := e.waitEvent(ns, "owned", "ProvisioningFailed", "root_squash", 60*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, "operation not permitted")
	t.Logf("Event: %s", ev.Message)
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, pvs.Items)
	// The directory the failed attempt leaves behind: record what it is,
	// and that no one but the squashed user can use it.
	for p, en := range tree(t, exportDir) {
		t.Logf("left after the refused claim: %s %v uid %d gid %d", p, en.mode, en.uid, en.gid)
		if strings.HasPrefix(p, ns+"-owned-") {
			assert.Zero(t, en.mode.Perm()&0o077, "%s is open to others: %v", p, en.mode)
			assert.NotEqual(t, uint32(1000), en.uid, "the chown can't have happened")
		}
	}

	e.claim(ns, "plain", "plain")
	_, pv := e.waitBound(ns, "plain", 60*time.Second)
	dir := ns + "-plain-" + pv.Name
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(filepath.Join(exportDir, dir), &st))
	assert.Equal(t, faultfs.Nobody.UID, st.Uid)
	assert.Equal(t, faultfs.Nobody.GID, st.Gid)
	assert.Equal(t, uint32(0o777), st.Mode&0o7777)
	t.Logf("directory of the plain class: %04o uid %d gid %d", st.Mode&0o7777, st.Uid, st.Gid)
	e.assertReachable(pv, dir)
}

// TestFaultRefusedClaimLeavesNoDirectory: a provision attempt that created
// the claim's directory and then failed (here the chown, refused by
// root_squash) removes the directory again, so a claim that never binds
// leaves nothing on the export.
func TestFaultRefusedClaimLeavesNoDirectory(t *testing.T) {
	var exportDir string
	e := newFaultEnv(t, func(ffs *faultfs.FS) {
		require.NoError(t, os.Chmod(ffs.Backing, 0o777))
		ffs.RootSquash(faultfs.Nobody)
		exportDir = ffs.Backing
	})
	const ns = "team-a"
	e.namespace(ns)
	e.class("owned", map[string]string{"onDelete": "delete", "uid": "1000", "gid": "2000"})
	e.claim(ns, "owned", "owned")
	e.waitEvent(ns, "owned", "ProvisioningFailed", "root_squash", 60*time.Second)
	assert.Empty(t, tree(t, exportDir), "the refused claim's directory is still on the export while it is Pending")
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "owned", metav1.DeleteOptions{}))
	assert.Empty(t, tree(t, exportDir), "the refused claim's directory is still on the export")
}

// TestFaultExportHung: while every call on the export hangs, /readyz fails
// within its bound, claims get a Warning Event saying the export may be hung
// and the process stays up; once the calls are released, /readyz recovers
// and every claim made meanwhile binds, each to one directory.
func TestFaultExportHung(t *testing.T) {
	const fsTimeout = 2 * time.Second
	e := newFaultEnv(t, nil, "--fs-timeout="+fsTimeout.String())
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", map[string]string{"onDelete": "delete"})
	e.claim(ns, "before", "nfs")
	_, pvBefore := e.waitBound(ns, "before", 30*time.Second)
	e.waitReadyz(e.p, 200)

	hung := e.ffs.Hang(faultfs.Match{})
	start := time.Now()
	e.waitReadyz(e.p, 503)
	t.Logf("/readyz failed %v after the export hung", time.Since(start).Round(time.Millisecond))
	_, body, err := e.p.Get(e.ctx, "/readyz")
	require.NoError(t, err)
	assert.Contains(t, body, "hung or unreachable")

	claims := []string{"during-1", "during-2", "during-3"}
	for _, c := range claims {
		e.claim(ns, c, "nfs")
	}
	for _, c := range claims {
		ev := e.waitEvent(ns, c, "ProvisioningFailed", "hung or unreachable", 60*time.Second)
		assert.Equal(t, "Warning", ev.Type)
		t.Logf("Event on %s: %s", c, ev.Message)
	}
	require.Positive(t, hung.Blocked(), "the provisioner's calls are stuck in the export")
	t.Logf("%d calls hung at once, %d in all", hung.Blocked(), hung.Hits())
	assert.False(t, e.p.Exited(), "the provisioner survives a hung export")
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pvs.Items, 1, "no new PV while the export hangs")

	hung.Clear()
	e.waitReadyz(e.p, 200)
	dirs := map[string]bool{ns + "-before-" + pvBefore.Name: true}
	for _, c := range claims {
		_, pv := e.waitBound(ns, c, 90*time.Second)
		dir := ns + "-" + c + "-" + pv.Name
		e.assertReachable(pv, dir)
		dirs[dir] = true
	}
	entries, err := os.ReadDir(e.exportDir)
	require.NoError(t, err)
	for _, en := range entries {
		assert.True(t, dirs[en.Name()] || en.Name() == stateDir || strings.HasPrefix(en.Name(), ".nfs-provisioner-probe-"), "unexpected entry %s in the export", en.Name())
	}
}
