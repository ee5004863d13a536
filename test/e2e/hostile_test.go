package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
)

// TestHostilePathPattern: claims that control their directory through an
// annotation or a label try to leave the export, climb into another tenant's
// directory, take over an existing volume's directory or go through symbolic
// links a tenant planted over NFS. Each is refused with a Warning Event that
// names the problem, stays Pending, and nothing on disk changes, in the
// export or beside it.
func TestHostilePathPattern(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.startProvisioner()
	for _, ns := range []string{"team-a", "team-b", "mallory", "prod"} {
		e.namespace(ns)
	}
	const annKey = "nfs.io/storage-path"
	e.class("by-annotation", map[string]string{"pathPattern": "${.PVC.annotations." + annKey + "}", "onDelete": "delete"})
	e.class("by-label", map[string]string{"pathPattern": "${.PVC.labels.team}/${.PVC.name}", "onDelete": "delete"})
	withAnn := func(v string) func(*v1.PersistentVolumeClaim) {
		return func(c *v1.PersistentVolumeClaim) { c.Annotations = map[string]string{annKey: v} }
	}
	withTeam := func(v string) func(*v1.PersistentVolumeClaim) {
		return func(c *v1.PersistentVolumeClaim) { c.Labels = map[string]string{"team": v} }
	}

	// Two legitimate tenants.
	e.claim("team-a", "data", "by-annotation", withAnn("team-a/data"))
	e.claim("team-b", "web", "by-label", withTeam("team-b"))
	_, pvA := e.waitBound("team-a", "data", 30*time.Second)
	_, pvB := e.waitBound("team-b", "web", 30*time.Second)
	require.Equal(t, "team-a/data", pvA.Annotations[provisioner.AnnDirectory])
	require.Equal(t, "team-b/web", pvB.Annotations[provisioner.AnnDirectory])
	e.assertReachable(pvA, "team-a/data")
	e.assertReachable(pvB, "team-b/web")

	// prod's released volume, archived beside the one it still has, and an
	// admin's backups: no claim may be handed the directories holding them.
	e.class("prod", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}", "onDelete": "archive"})
	e.claim("prod", "db", "prod")
	_, pvDB := e.waitBound("prod", "db", 30*time.Second)
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, "prod/db/data"), []byte("prod data"), 0o600))
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims("prod").Delete(e.ctx, "db", metav1.DeleteOptions{}))
	e.waitPVGone(pvDB.Name, 30*time.Second)
	require.Len(t, e.findArchives("prod/db"), 1)
	require.NoError(t, os.Chmod(filepath.Join(e.exportDir, "prod"), 0o750))
	require.NoError(t, os.Mkdir(filepath.Join(e.exportDir, "backups"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(e.exportDir, "backups/db.dump"), []byte("dump"), 0o600))

	// A directory beside the export that must stay out of reach.
	outside := filepath.Join(filepath.Dir(e.exportDir), "outside")
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "private"), 0o700))
	require.NoError(t, os.Chmod(filepath.Join(outside, "private"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600))
	require.NoError(t, os.Chmod(outside, 0o750))

	// Links a tenant with write access to the export could create over NFS.
	require.NoError(t, os.Symlink("/", filepath.Join(e.exportDir, "team-c")))
	require.NoError(t, os.Symlink(filepath.Join(e.exportDir, "team-a"), filepath.Join(e.exportDir, "team-d")))
	require.NoError(t, os.Symlink("../outside", filepath.Join(e.exportDir, "team-e")))
	require.NoError(t, os.MkdirAll(filepath.Join(e.exportDir, "team-f"), 0o755))
	require.NoError(t, os.Symlink("../../outside/private", filepath.Join(e.exportDir, "team-f", "cache")))

	// Following team-c/etc would chmod /etc to 0777: put it back should the
	// product ever do that, after failing the test below.
	etc, err := os.Stat("/etc")
	require.NoError(t, err)
	t.Cleanup(func() {
		if now, err := os.Stat("/etc"); err == nil && now.Mode() != etc.Mode() {
			_ = os.Chmod("/etc", etc.Mode().Perm())
		}
	})

	// The export's parent holds only the export and outside: ".." from the
	// export root lands there, "../.." one further up.
	parent := filepath.Dir(e.exportDir)
	treeBefore := snapshotTree(t, parent)
	above, err := os.Lstat(filepath.Dir(parent))
	require.NoError(t, err)
	// Where a followed link or an unconfined path would create directories.
	rootPaths := []string{"/b", "/x", "/y", "/stolen"}
	rootBefore := map[string]bool{}
	for _, p := range rootPaths {
		_, err := os.Lstat(p)
		rootBefore[p] = err == nil
	}

	hostile := []struct {
		ns, name string
		mutate   func(*v1.PersistentVolumeClaim)
		want     string // in the Event message
	}{
		{"mallory", "parent", withAnn(".."), `has a ".." segment`},
		{"mallory", "grandparent", withAnn("../.."), `has a ".." segment`},
		{"mallory", "absolute", withAnn("/etc"), `"/etc" is absolute`},
		{"mallory", "climb", withAnn("a/../../b"), `has a ".." segment`},
		{"team-b", "sideways", withAnn("team-b/../team-a"), `has a ".." segment`},
		{"mallory", "double-slash", withAnn("x//y"), `has an empty segment`},
		{"mallory", "steal", withAnn("team-a/data"), `directory "team-a/data" is already used by PersistentVolume "` + pvA.Name + `"`},
		{"mallory", "steal-parent", withAnn("team-a"), `directory "team-a" contains or lies inside the directory of PersistentVolume "` + pvA.Name + `": volumes may not nest`},
		{"mallory", "steal-child", withAnn("team-a/data/inner"), `directory "team-a/data/inner" contains or lies inside the directory of PersistentVolume "` + pvA.Name + `": volumes may not nest`},
		{"mallory", "steal-archive", withAnn("prod"), `directory "prod" would contain or lie inside the archive "prod/archived-db-`},
		{"mallory", "steal-backups", withAnn("backups"), `directory "backups" already exists and was not made for this claim`},
		{"mallory", "steal-ledger", withAnn(".nfs-provisioner"), `segment ".nfs-provisioner" is reserved`},
		{"mallory", "web", withTeam("team-b"), `directory "team-b/web" is already used by PersistentVolume "` + pvB.Name + `"`},
		{"mallory", "empty-label", withTeam(""), `"/empty-label" is absolute`},
		{"mallory", "link-root", withAnn("team-c/etc"), `team-c is a symbolic link, refusing to follow it`},
		{"mallory", "link-tenant", withAnn("team-d/stolen"), `team-d is a symbolic link, refusing to follow it`},
		{"mallory", "link-leaf", withAnn("team-e"), `team-e is a symbolic link, refusing to follow it`},
		{"mallory", "link-inner", withAnn("team-f/cache/x"), `team-f/cache is a symbolic link, refusing to follow it`},
	}
	for _, h := range hostile {
		class := "by-annotation"
		if h.name == "web" || h.name == "empty-label" {
			class = "by-label"
		}
		e.claim(h.ns, h.name, class, h.mutate)
	}
	for _, h := range hostile {
		ev := e.waitEvent(h.ns, h.name, "ProvisioningFailed", h.want, 30*time.Second)
		assert.Equal(t, v1.EventTypeWarning, ev.Type, h.name)
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(h.ns).Get(e.ctx, h.name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1.ClaimPending, pvc.Status.Phase, h.name)
		assert.Empty(t, pvc.Spec.VolumeName, h.name)
	}

	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var names []string
	for _, pv := range pvs.Items {
		names = append(names, pv.Name)
	}
	assert.ElementsMatch(t, []string{pvA.Name, pvB.Name}, names, "only the two legitimate volumes exist")

	assert.Equal(t, treeBefore, snapshotTree(t, parent), "the export or the directory beside it changed")
	aboveNow, err := os.Lstat(filepath.Dir(parent))
	require.NoError(t, err)
	assert.Equal(t, above.Mode(), aboveNow.Mode(), "mode of %s changed", filepath.Dir(parent))
	etcNow, err := os.Stat("/etc")
	require.NoError(t, err)
	assert.Equal(t, etc.Mode(), etcNow.Mode(), "/etc mode changed")
	for _, p := range rootPaths {
		_, err := os.Lstat(p)
		assert.Equal(t, rootBefore[p], err == nil, "%s appeared or vanished", p)
	}

	_, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	refused := metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="refused"}`)
	assert.GreaterOrEqual(t, refused, float64(len(hostile)), "every refusal counted as refused")
	assert.Equal(t, 0.0, metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="error"}`), "no refusal counted as an error")
}

// snapshotTree maps every path below root (root included, as ".") to its
// type and mode, size, modification time and, for links, target, without
// following links.
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if fi.IsDir() && fi.Name() == ledgerDir {
			// The provisioner's own records change with every claim.
			return filepath.SkipDir
		}
		s := fmt.Sprintf("%v size=%d mtime=%s", fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " -> " + target
		}
		out[rel] = s
		return nil
	}))
	return out
}

// metricValue returns the value of the sample whose name and labels are
// series in a Prometheus text exposition. A missing sample fails the test:
// a renamed metric or label must not read as 0.
func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	require.NotNil(t, m, "no sample %s in /metrics:\n%s", series, body)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}
