package e2e

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
)

// What happens to a volume's directory once its claim is deleted.
type deleteOutcome int

const (
	dirDeleted  deleteOutcome = iota // PV gone, directory gone
	dirKept                          // PV gone, directory kept as is
	dirArchived                      // PV gone, directory renamed to archived-<leaf>-<stamp> beside it
	pvReleased                       // reclaimPolicy Retain: PV kept, Released; directory untouched
)

func (o deleteOutcome) String() string {
	return [...]string{"deleted", "kept", "archived", "released"}[o]
}

// TestDeletePolicies provisions one claim per delete policy (and per way of
// spelling it), writes a file into each over NFS, deletes the claims and
// checks the PVs and the directories on disk. Two classes change after
// provisioning (one recreated with another policy, one deleted): the policy
// recorded on the PV at provision time still decides.
func TestDeletePolicies(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.startProvisioner()
	const ns = "team-a"
	e.namespace(ns)
	nested := "${.PVC.namespace}/${.PVC.name}"

	cases := []struct {
		claim  string
		params map[string]string
		mutate []func(*storagev1.StorageClass)
		// recorded is the on-delete annotation expected on the PV.
		recorded string
		want     deleteOutcome
		// nested: the directory is <namespace>/<claim>, else the default
		// <namespace>-<claim>-<pv>.
		nested bool
	}{
		{claim: "on-delete-delete", params: map[string]string{"onDelete": "delete"}, recorded: "delete", want: dirDeleted},
		{claim: "on-delete-retain", params: map[string]string{"onDelete": "retain"}, recorded: "retain", want: dirKept},
		{claim: "on-delete-archive", params: map[string]string{"onDelete": "archive", "pathPattern": nested}, recorded: "archive", want: dirArchived, nested: true},
		{claim: "archive-true", params: map[string]string{"archiveOnDelete": "true"}, recorded: "archive", want: dirArchived},
		{claim: "archive-false", params: map[string]string{"archiveOnDelete": "false"}, recorded: "delete", want: dirDeleted},
		{claim: "archive-default", params: nil, recorded: "archive", want: dirArchived},
		{claim: "delete-nested", params: map[string]string{"onDelete": "delete", "pathPattern": nested}, recorded: "delete", want: dirDeleted, nested: true},
		// The PV controller never releases the volume to us: even a delete
		// policy leaves the directory alone.
		{claim: "reclaim-retain", params: map[string]string{"onDelete": "delete"}, mutate: []func(*storagev1.StorageClass){withReclaimPolicy(v1.PersistentVolumeReclaimRetain)}, recorded: "delete", want: pvReleased},
		// Recreated below with onDelete: delete; the recorded archive wins.
		{claim: "class-edited", params: map[string]string{"onDelete": "archive", "pathPattern": nested}, recorded: "archive", want: dirArchived, nested: true},
		// Deleted below; the recorded delete still applies (an incumbent PV
		// without a record would be archived).
		{claim: "class-deleted", params: map[string]string{"onDelete": "delete"}, recorded: "delete", want: dirDeleted},
	}
	for _, c := range cases {
		e.class(c.claim, c.params, c.mutate...)
		e.claim(ns, c.claim, c.claim)
	}

	type volume struct {
		pv, dir string
	}
	vols := map[string]volume{}
	for _, c := range cases {
		_, pv := e.waitBound(ns, c.claim, 30*time.Second)
		dir := ns + "-" + c.claim + "-" + pv.Name
		if c.nested {
			dir = ns + "/" + c.claim
		}
		require.Equal(t, dir, pv.Annotations[provisioner.AnnDirectory], c.claim)
		require.Equal(t, c.recorded, pv.Annotations[provisioner.AnnOnDelete], c.claim)
		require.NoError(t, e.nfs.WriteFile(e.ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, "data.txt", []byte(c.claim)))
		vols[c.claim] = volume{pv: pv.Name, dir: dir}
	}

	// StorageClass parameters are immutable: an "edit" is delete + create.
	require.NoError(t, e.client.StorageV1().StorageClasses().Delete(e.ctx, "class-edited", metav1.DeleteOptions{}))
	e.waitClassGone("class-edited")
	e.class("class-edited", map[string]string{"onDelete": "delete", "pathPattern": nested})
	require.NoError(t, e.client.StorageV1().StorageClasses().Delete(e.ctx, "class-deleted", metav1.DeleteOptions{}))
	e.waitClassGone("class-deleted")

	for _, c := range cases {
		require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, c.claim, metav1.DeleteOptions{}))
	}

	archived := map[string]string{} // claim → archive, relative to the export
	for _, c := range cases {
		v := vols[c.claim]
		if c.want == pvReleased {
			e.waitPVPhase(v.pv, v1.VolumeReleased, 30*time.Second)
		} else {
			e.waitPVGone(v.pv, 30*time.Second)
		}
		abs := filepath.Join(e.exportDir, v.dir)
		switch c.want {
		case dirDeleted:
			assert.NoDirExists(t, abs, c.claim)
		case dirKept, pvReleased:
			assert.FileExists(t, filepath.Join(abs, "data.txt"), c.claim)
			data, err := os.ReadFile(filepath.Join(abs, "data.txt"))
			require.NoError(t, err, c.claim)
			assert.Equal(t, c.claim, string(data), c.claim)
		case dirArchived:
			assert.NoDirExists(t, abs, c.claim)
			archives := e.findArchives(v.dir)
			if assert.Len(t, archives, 1, "one archive of %s in its parent; export: %v", v.dir, e.exportEntries()) {
				a := archives[0]
				data, err := os.ReadFile(filepath.Join(e.exportDir, a, "data.txt"))
				require.NoError(t, err, c.claim)
				assert.Equal(t, c.claim, string(data), c.claim)
				archived[c.claim] = a
			}
		}
	}

	// The same nested directory provisioned and archived again: a fresh,
	// empty directory, then a second archive beside the first, which is
	// left alone (within the same second the name gets a "-1" suffix).
	const again = "on-delete-archive"
	e.claim(ns, again, again)
	_, pv := e.waitBound(ns, again, 30*time.Second)
	require.Equal(t, vols[again].dir, pv.Annotations[provisioner.AnnDirectory])
	fresh, err := os.ReadDir(filepath.Join(e.exportDir, vols[again].dir))
	require.NoError(t, err)
	assert.Empty(t, fresh, "a re-provisioned directory starts empty")
	// Written on disk, not over NFS: the provisioner renamed the first
	// directory behind ganesha's back (in production it works through an
	// NFS mount, so the server sees the rename), and ganesha's metadata cache
	// still resolves this path to the archived directory for a while.
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, vols[again].dir, "data.txt"), []byte("second"), 0o644))
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, again, metav1.DeleteOptions{}))
	e.waitPVGone(pv.Name, 30*time.Second)
	archives := e.findArchives(vols[again].dir)
	require.Len(t, archives, 2, "export: %v", e.exportEntries())
	contents := map[string]string{}
	for _, a := range archives {
		data, err := os.ReadFile(filepath.Join(e.exportDir, a, "data.txt"))
		require.NoError(t, err)
		contents[a] = string(data)
	}
	second := archives[0]
	if second == archived[again] {
		second = archives[1]
	}
	assert.Equal(t, map[string]string{archived[again]: again, second: "second"}, contents)

	// Nothing but what the outcomes leave behind: kept directories, archives
	// and the namespace directory holding the nested ones.
	var want []string
	for _, c := range cases {
		v := vols[c.claim]
		switch c.want {
		case dirKept, pvReleased:
			want = append(want, v.dir, v.dir+"/data.txt")
		case dirArchived:
			if a := archived[c.claim]; a != "" {
				want = append(want, a, a+"/data.txt")
			}
		}
	}
	want = append(want, second, second+"/data.txt")
	want = append(want, ns) // parent of the nested directories
	got := e.exportEntries()
	sort.Strings(want)
	sort.Strings(got)
	assert.Equal(t, want, got)
}

func withReclaimPolicy(p v1.PersistentVolumeReclaimPolicy) func(*storagev1.StorageClass) {
	return func(sc *storagev1.StorageClass) { sc.ReclaimPolicy = ptr.To(p) }
}

// archiveName is how the provisioner renames an archived directory.
var archiveName = regexp.MustCompile(`^archived-(.+)-\d{8}-\d{6}(-\d+)?$`)

// findArchives returns the archives of the directory rel (relative to the
// export), looked for in rel's parent.
func (e *env) findArchives(rel string) []string {
	e.t.Helper()
	parent, leaf := path.Dir(rel), path.Base(rel)
	entries, err := os.ReadDir(filepath.Join(e.exportDir, parent))
	require.NoError(e.t, err)
	var found []string
	for _, en := range entries {
		if m := archiveName.FindStringSubmatch(en.Name()); m != nil && m[1] == leaf && en.IsDir() {
			found = append(found, path.Join(parent, en.Name()))
		}
	}
	return found
}

// waitPVGone waits until the PV no longer exists.
func (e *env) waitPVGone(name string, timeout time.Duration) {
	e.t.Helper()
	var last *v1.PersistentVolume
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		last = pv
		return false, err
	})
	var status any
	if last != nil {
		status = last.Status
	}
	require.NoError(e.t, err, "PV %s not deleted: %+v; events: %+v", name, status, e.events("", name))
}

// waitPVPhase waits until the PV is in phase.
func (e *env) waitPVPhase(name string, phase v1.PersistentVolumePhase, timeout time.Duration) {
	e.t.Helper()
	var last v1.PersistentVolumePhase
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = pv.Status.Phase
		return last == phase, nil
	})
	require.NoError(e.t, err, "PV %s is %s, not %s", name, last, phase)
}

// waitClassGone waits until the StorageClass is deleted.
func (e *env) waitClassGone(name string) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.StorageV1().StorageClasses().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	require.NoError(e.t, err, "StorageClass %s not deleted", name)
}
