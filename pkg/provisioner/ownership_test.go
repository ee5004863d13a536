package provisioner

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// byAnnotation is a class whose claims name their directory: whoever writes
// claims picks any path.
func byAnnotation(extra map[string]string) map[string]string {
	p := map[string]string{"pathPattern": "${.PVC.annotations.dir}"}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

func claimFor(ns, name, uid, dir string) *v1.PersistentVolumeClaim {
	c := claim(ns, name, uid)
	c.Annotations = map[string]string{"dir": dir}
	return c
}

func TestProvisionRefusesAdminDirectory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	backups := filepath.Join(e.root, "backups")
	require.NoError(t, os.Mkdir(backups, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(backups, "db.dump"), []byte("secret"), 0o600))
	before := snapshot(t, backups)

	_, err := e.provision(t, class("nfs", byAnnotation(nil)), claimFor("tenant", "steal", "u1", "backups"))
	require.ErrorContains(t, err, `directory "backups" already exists and was not made for this claim`)
	require.ErrorContains(t, err, "reuseExistingDirectory")
	assert.Equal(t, before, snapshot(t, backups), "neither handed over nor chmod-ed")
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)

	// An admin may opt a class in.
	pv, err := e.provision(t, class("adopt", byAnnotation(map[string]string{"reuseExistingDirectory": "true", "mode": "0770"})), claimFor("ops", "restore", "u2", "backups"))
	require.NoError(t, err)
	assert.Equal(t, "backups", pv.Annotations[AnnDirectory])
	assert.FileExists(t, filepath.Join(backups, "db.dump"))
	info, err := os.Stat(backups)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o770), info.Mode().Perm())
}

func TestProvisionRefusesDirectoryHoldingArchivesOrRetainedData(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	ns := map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"}
	// prod's volumes: one archived, one retained, on release.
	for _, c := range []struct{ name, uid, policy string }{{"db", "u1", "archive"}, {"cache", "u2", "retain"}} {
		sc := class("prod-"+c.policy, map[string]string{"pathPattern": ns["pathPattern"], "onDelete": c.policy})
		pv, err := e.provision(t, sc, claim("prod", c.name, c.uid))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(e.root, "prod", c.name, "data"), []byte("prod data"), 0o600))
		require.NoError(t, e.p.Delete(context.Background(), pv))
		require.NoError(t, e.volumes.Delete(pv))
	}
	require.Len(t, archives(t, filepath.Join(e.root, "prod")), 1)
	require.NoError(t, os.Chmod(filepath.Join(e.root, "prod"), 0o755))
	before := snapshot(t, filepath.Join(e.root, "prod"))
	e.restart()

	cases := map[string]struct{ dir, want string }{
		"holding the archive and the retained volume": {"prod", `would contain or lie inside`},
		"inside the retained volume":                  {"prod/cache/sub", `retained when PersistentVolume "pvc-u2" was deleted`},
		"the retained volume itself":                  {"prod/cache", "already exists and was not made for this claim"},
		"the provisioner's own records":               {".nfs-provisioner", "is reserved"},
		"a dot-directory":                             {"x/.snapshot", "is reserved"},
		"lost+found":                                  {"lost+found", "is reserved"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// Even where an admin lets existing directories be reused;
			// a retained one itself only without that opt-in, as
			// re-attaching is for the same namespace's pattern.
			params := byAnnotation(map[string]string{"onDelete": "delete", "reuseExistingDirectory": "true"})
			if tc.dir == "prod/cache" {
				params = byAnnotation(nil)
			}
			_, err := e.provision(t, class("nfs", params), claimFor("attacker", "x", "u-"+name, tc.dir))
			require.ErrorContains(t, err, tc.want)
			assert.Equal(t, before, snapshot(t, filepath.Join(e.root, "prod")), "nothing below prod changed")
		})
	}

	// A StatefulSet's re-created claim gets its retained data back.
	pv, err := e.provision(t, class("prod-retain", map[string]string{"pathPattern": ns["pathPattern"], "onDelete": "delete"}), claim("prod", "cache", "u3"))
	require.NoError(t, err)
	assert.Equal(t, "prod/cache", pv.Annotations[AnnDirectory])
	assert.FileExists(t, filepath.Join(e.root, "prod/cache/data"))
	// Deleting it now follows its own policy; the archive beside it stays.
	require.NoError(t, e.p.Delete(context.Background(), pv))
	assert.NoDirExists(t, filepath.Join(e.root, "prod/cache"))
	assert.Len(t, archives(t, filepath.Join(e.root, "prod")), 1)
}

func TestProvisionReattachesVolumeDeletedByHand(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"})
	pv, err := e.provision(t, sc, claim("web", "data-web-0", "u1"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "web/data-web-0/f"), []byte("kept"), 0o600))
	// reclaimPolicy Retain: an admin deletes the PV; Delete never runs.
	require.NoError(t, e.volumes.Delete(pv))
	e.restart()

	// Another namespace's class that names directories can't take it ...
	_, err = e.provision(t, class("free", byAnnotation(nil)), claimFor("other", "x", "u2", "web/data-web-0"))
	require.ErrorContains(t, err, "already exists and was not made for this claim")
	// ... the re-created claim of the StatefulSet gets it back.
	again, err := e.provision(t, sc, claim("web", "data-web-0", "u3"))
	require.NoError(t, err)
	assert.Equal(t, "web/data-web-0", again.Annotations[AnnDirectory])
	assert.FileExists(t, filepath.Join(e.root, "web/data-web-0/f"))
}

// TestNamespaceSubtreeHoldsOnlyItsOwnData: a class whose claims choose their
// directory can plant one in another namespace's subtree; once its volume is
// released and retained, the namespace-scoped class doesn't hand that to the
// namespace's claim.
func TestNamespaceSubtreeHoldsOnlyItsOwnData(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	free := class("free", byAnnotation(map[string]string{"onDelete": "retain"}))
	planted, err := e.provision(t, free, claimFor("evil", "x", "u1", "web/data-web-0"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "web/data-web-0/planted"), []byte("x"), 0o644))
	require.NoError(t, e.p.Delete(context.Background(), planted))
	require.NoError(t, e.volumes.Delete(planted))
	e.restart()

	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"})
	_, err = e.provision(t, sc, claim("web", "data-web-0", "u2"))
	require.ErrorContains(t, err, `directory "web/data-web-0" holds the directory "web/data-web-0" retained when PersistentVolume "pvc-u1" was deleted, whose claim was in namespace "evil", not "web"`)

	// What the namespace's own claim retained is handed back.
	own, err := e.provision(t, class("own", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}", "onDelete": "retain"}), claim("web", "data-web-1", "u3"))
	require.NoError(t, err)
	require.NoError(t, e.p.Delete(context.Background(), own))
	require.NoError(t, e.volumes.Delete(own))
	_, err = e.provision(t, sc, claim("web", "data-web-1", "u4"))
	require.NoError(t, err)
}

// TestProvisionRefusesDirectoryHoldingIncumbentArchives: the incumbent
// archived prod/db as prod/archived-db, which no record of ours knows; a
// claim whose namespace-scoped directory is prod must not get it (and
// chmod it, and later delete it).
func TestProvisionRefusesDirectoryHoldingIncumbentArchives(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	require.NoError(t, os.MkdirAll(filepath.Join(e.root, "prod/archived-db"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "prod/archived-db/data"), []byte("old"), 0o600))
	require.NoError(t, os.Chmod(filepath.Join(e.root, "prod"), 0o750))
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}"})
	_, err := e.provision(t, sc, claim("prod", "c", "u1"))
	require.ErrorContains(t, err, `holds "archived-db", named like an archive of a released volume`)
	assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)
	info, err := os.Stat(filepath.Join(e.root, "prod"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o750), info.Mode().Perm(), "left alone")

	// Without one, the namespace's directory is handed over as before.
	require.NoError(t, os.RemoveAll(filepath.Join(e.root, "prod/archived-db")))
	_, err = e.provision(t, sc, claim("prod", "c", "u1"))
	require.NoError(t, err)
}

// TestRetryKeepsItsOwnArchiveNamedEntries: the retry of a claim whose own
// directory already holds an archived-* entry (its tenant's name) is not
// refused for it.
func TestRetryKeepsItsOwnArchiveNamedEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	sc := class("nfs", map[string]string{"pathPattern": "${.PVC.namespace}/${.PVC.name}"})
	pvc := claim("prod", "db", "u1")
	pv, _, err := e.p.Provision(context.Background(), opts(sc, pvc))
	require.NoError(t, err)
	require.NoError(t, os.Mkdir(filepath.Join(e.root, pv.Annotations[AnnDirectory], "archived-logs"), 0o755))
	e.restart()
	_, _, err = e.p.Provision(context.Background(), opts(sc, pvc))
	require.NoError(t, err, "its own directory, recorded by inode")
}
