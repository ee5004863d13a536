package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// TestExportUnwritable: while the export can't be written, /readyz fails,
// new claims get a Warning Event and errors are counted; once it is
// writable again, /readyz recovers and every claim made meanwhile binds.
//
// Root ignores permission bits, so the export is made immutable
// (chattr +i), which stops root too.
func TestExportUnwritable(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", map[string]string{"onDelete": "delete"})

	e.claim(ns, "before", "nfs")
	_, pvBefore := e.waitBound(ns, "before", 30*time.Second)
	e.waitReadyz(p, 200)

	e.makeImmutable(e.exportDir)
	e.waitReadyz(p, 503)
	_, body, err := p.Get(e.ctx, "/readyz")
	require.NoError(t, err)
	assert.Contains(t, body, "permission denied")

	// A volume released meanwhile can't be deleted either: it waits.
	beforeDir := filepath.Join(e.exportDir, "team-a-before-"+pvBefore.Name)
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "before", metav1.DeleteOptions{}))
	ev := e.waitEvent("", pvBefore.Name, "VolumeFailedDelete", "permission denied", 30*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	assert.DirExists(t, beforeDir)

	claims := []string{"during-1", "during-2", "during-3"}
	for _, c := range claims {
		e.claim(ns, c, "nfs")
	}
	for _, c := range claims {
		ev := e.waitEvent(ns, c, "ProvisioningFailed", "permission denied", 30*time.Second)
		assert.Equal(t, "Warning", ev.Type)
	}
	_, body, err = p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="error"}`), float64(len(claims)))
	assert.Equal(t, 0.0, metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="refused"}`), "an export failure is not a refusal")
	assert.Equal(t, 1.0, metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="success"}`))
	assert.GreaterOrEqual(t, metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="delete",outcome="error"}`), 1.0)
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	if assert.Len(t, pvs.Items, 1, "no new PV while the export is unwritable") {
		assert.Equal(t, pvBefore.Name, pvs.Items[0].Name, "the released PV waits for its directory to be deleted")
	}

	e.clearImmutable(e.exportDir)
	e.waitReadyz(p, 200)
	// The library retries with per-claim exponential back-off (1 s doubling);
	// after a few failures the next attempt can be a minute away.
	e.waitPVGone(pvBefore.Name, 90*time.Second)
	assert.NoDirExists(t, beforeDir)
	dirs := map[string]bool{}
	for _, c := range claims {
		_, pv := e.waitBound(ns, c, 90*time.Second)
		dir := ns + "-" + c + "-" + pv.Name
		e.assertReachable(pv, dir)
		dirs[dir] = true
	}
	entries, err := readExportRoot(e.exportDir)
	require.NoError(t, err)
	var got []string
	for _, en := range entries {
		got = append(got, en.Name())
		assert.True(t, dirs[en.Name()], "unexpected entry %s in the export (a leftover probe file?)", en.Name())
	}
	assert.Len(t, got, len(dirs), "one directory per claim: %v", got)
	_, body, err = p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Equal(t, float64(1+len(claims)), metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="success"}`))
}

// makeImmutable sets the immutable attribute on dir, skipping the test where
// chattr is missing or the filesystem lacks the attribute (tmpfs, overlayfs
// on some kernels). The attribute is cleared when the test ends, whatever
// happens, so the temporary directory can be removed.
func (e *env) makeImmutable(dir string) {
	e.t.Helper()
	if _, err := exec.LookPath("chattr"); err != nil {
		e.t.Skip("chattr not found (package e2fsprogs): can't make the export unwritable for root")
	}
	out, err := exec.CommandContext(e.ctx, "chattr", "+i", dir).CombinedOutput()
	if err != nil {
		// tmpfs answers "Inappropriate ioctl for device", others
		// "Operation not supported".
		if msg := string(out); strings.Contains(msg, "Inappropriate ioctl") || strings.Contains(msg, "not supported") {
			e.t.Skipf("the filesystem of %s does not support the immutable attribute (chattr +i: %s); set TMPDIR to a directory on ext4, xfs or btrfs", dir, strings.TrimSpace(msg))
		}
		e.t.Fatalf("chattr +i %s: %v: %s", dir, err, out)
	}
	e.t.Cleanup(func() {
		if out, err := exec.Command("chattr", "-i", dir).CombinedOutput(); err != nil {
			e.t.Errorf("chattr -i %s: %v: %s", dir, err, out)
		}
	})
	// Make sure it took: root can't create an entry in an immutable directory.
	probe := filepath.Join(dir, ".e2e-immutable-probe")
	if err := os.Mkdir(probe, 0o755); err == nil {
		_ = os.Remove(probe)
		e.clearImmutable(dir)
		e.t.Skipf("chattr +i %s did not stop root from writing: the filesystem ignores the attribute", dir)
	}
}

func (e *env) clearImmutable(dir string) {
	e.t.Helper()
	out, err := exec.CommandContext(e.ctx, "chattr", "-i", dir).CombinedOutput()
	require.NoError(e.t, err, "chattr -i %s: %s", dir, out)
}

// waitReadyz waits until /readyz answers with code.
func (e *env) waitReadyz(p *framework.ProvisionerProcess, code int) {
	e.t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, body, err := p.Get(ctx, "/readyz")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d %s", got, strings.TrimSpace(body))
		return got == code, nil
	})
	require.NoError(e.t, err, "/readyz never answered %d; last: %s", code, last)
}
