package e2e

// Several exports from one install (issue 11): two real exports, each a
// nfs-ganesha instance of its own (on 127.0.0.1 and 127.0.0.2) serving a
// size-limited tmpfs of its own, so that free space, "full" and "read-only"
// belong to one export only. The provisioner gets them as --export entries,
// with no export named "default".

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-nfs/nfs-provisioner/pkg/placement"
	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
	"github.com/kube-nfs/nfs-provisioner/test/faultfs"
	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// annExport names the export a PV of ours is on, spelled as SPEC-exports.md
// does (not exports.Annotation: a renamed constant must fail here).
const annExport = "nfs.kube-nfs.io/export"

const (
	fastSize = 64 << 20
	bulkSize = 32 << 20
	mi       = 1 << 20
)

// testExport is one export: a tmpfs, the ganesha serving it, and its name
// for the provisioner.
type testExport struct {
	name string
	size int64
	// dir is the tmpfs: what ganesha exports and where the provisioner
	// sees the export (no NFS mount in between, as in the other tests).
	dir string
	nfs *framework.NFSServer
}

type exportsEnv struct {
	*env
	fast, bulk *testExport
	exports    []*testExport
	p          *framework.ProvisionerProcess
	// bulkFaults, when the env was made with a faulty bulk, is the FUSE
	// loopback of bulk's tmpfs that the provisioner mounts as bulk.
	bulkFaults *faultfs.FS
}

// newExportsEnv starts the control plane, mounts the two tmpfs (fast 64 MiB
// on 127.0.0.1:/fast, bulk 32 MiB on 127.0.0.2:/bulk), serves each with its
// own nfs-ganesha and starts the provisioner with both as --export entries
// and extra flags args.
func newExportsEnv(t *testing.T, args ...string) *exportsEnv {
	t.Helper()
	return newExportsEnvWith(t, false, args...)
}

// newExportsEnvWith is newExportsEnv; with faultyBulk the provisioner
// reaches bulk's tmpfs through a FUSE loopback (bulkFaults), so its calls
// can be made to hang, while ganesha serves the tmpfs itself.
func newExportsEnvWith(t *testing.T, faultyBulk bool, args ...string) *exportsEnv {
	t.Helper()
	// The PV binder at its default 20 QPS would make binding the slow part
	// of the bursts.
	e := &exportsEnv{env: newEnv(t, envOptions{controllerManagerQPS: 1000})}
	base := t.TempDir()
	for _, x := range []struct {
		name, addr string
		size       int64
	}{{"fast", "127.0.0.1", fastSize}, {"bulk", "127.0.0.2", bulkSize}} {
		dir := filepath.Join(base, x.name)
		// Before ganesha and the provisioner: unmounted after they stop.
		framework.MountTmpfs(t, dir, x.size)
		nfs, err := framework.StartNFSServer(e.ctx, framework.NFSOptions{Dir: dir, ExportPath: "/" + x.name, Address: x.addr, WorkDir: t.TempDir()})
		require.NoError(t, err)
		t.Cleanup(nfs.Stop)
		e.exports = append(e.exports, &testExport{name: x.name, size: x.size, dir: dir, nfs: nfs})
	}
	e.fast, e.bulk = e.exports[0], e.exports[1]
	bulkEntry := e.bulk.nfs.ExportEntry("bulk")
	if faultyBulk {
		mnt := e.bulk.dir + "-fuse"
		require.NoError(t, os.Mkdir(mnt, 0o755))
		// Before the provisioner: unmounted after it stops.
		e.bulkFaults = faultfs.Mount(t, e.bulk.dir, faultfs.Options{Dir: mnt})
		bulkEntry = framework.ExportEntry("bulk", e.bulk.nfs.Server, e.bulk.nfs.ExportPath, mnt)
	}

	e.procs++
	id := fmt.Sprintf("provisioner-%d", e.procs)
	logPath := filepath.Join(e.logDir, id+".log")
	p, err := framework.StartProvisioner(e.ctx, framework.ProvisionerOptions{
		Binary: e.bin, Kubeconfig: e.kubeconfig, Name: provisionerName,
		Exports:   []string{e.fast.nfs.ExportEntry("fast"), bulkEntry},
		Namespace: namespace, Identity: id, Args: args, LogPath: logPath,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if !p.Exited() {
			p.Terminate(10 * time.Second)
		}
		assert.NotContains(t, strings.ToLower(p.Log()), "forbidden", "%s: deploy/rbac.yaml lacks a rule the binary needs (log %s)", id, logPath)
	})
	e.p = p
	return e
}

func (e *exportsEnv) export(name string) *testExport {
	for _, x := range e.exports {
		if x.name == name {
			return x
		}
	}
	e.t.Fatalf("no export %q in the test", name)
	return nil
}

func withSize(size string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse(size)
	}
}

// assertOnExport checks that the PV is on export x and on no other: its
// annotation, spec.nfs.server and path, its directory on x's tmpfs only,
// and reachability over NFS through x's server (a file written through the
// PV's server:path is read back over NFS and found on x's tmpfs, in the
// directory, and nowhere on the others). It returns the directory.
func (e *exportsEnv) assertOnExport(pv *v1.PersistentVolume, x *testExport) string {
	e.t.Helper()
	return e.checkOnExport(pv, x, false)
}

// checkOnExport is assertOnExport; with twins the other exports have a
// directory of the same name (of another claim), which must not receive the
// file.
func (e *exportsEnv) checkOnExport(pv *v1.PersistentVolume, x *testExport, twins bool) string {
	t := e.t
	t.Helper()
	dir := pv.Annotations[provisioner.AnnDirectory]
	require.NotEmpty(t, dir, "PV %s has no directory annotation", pv.Name)
	require.Equal(t, x.name, pv.Annotations[annExport], "PV %s: export annotation", pv.Name)
	require.Equal(t, x.nfs.Server, pv.Spec.NFS.Server, "PV %s: spec.nfs.server is export %s's", pv.Name, x.name)
	require.Equal(t, x.nfs.ExportPath+"/"+dir, pv.Spec.NFS.Path, "PV %s: spec.nfs.path is in export %s", pv.Name, x.name)
	require.DirExists(t, filepath.Join(x.dir, dir), "PV %s: directory on export %s", pv.Name, x.name)
	for _, o := range e.exports {
		if o != x && !twins {
			assert.NoDirExists(t, filepath.Join(o.dir, dir), "PV %s of export %s: directory also on export %s", pv.Name, x.name, o.name)
		}
	}

	name := "written-by-" + pv.Name
	require.NoError(t, x.nfs.WriteFile(e.ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, name, []byte(pv.Name)), "PV %s through export %s's server", pv.Name, x.name)
	got, err := x.nfs.ReadFile(e.ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, name)
	require.NoError(t, err)
	require.Equal(t, pv.Name, string(got))
	data, err := os.ReadFile(filepath.Join(x.dir, dir, name))
	require.NoError(t, err, "file written over NFS to %s:%s is not in %s on export %s's tmpfs", pv.Spec.NFS.Server, pv.Spec.NFS.Path, dir, x.name)
	require.Equal(t, pv.Name, string(data))
	for _, o := range e.exports {
		if o != x {
			assert.NoFileExists(t, filepath.Join(o.dir, dir, name))
		}
	}
	return dir
}

// metrics scrapes /metrics.
func (e *exportsEnv) metrics() string {
	e.t.Helper()
	code, body, err := e.p.Get(e.ctx, "/metrics")
	require.NoError(e.t, err)
	require.Equal(e.t, 200, code)
	return body
}

// waitFreeBelow waits until the provisioner reports less than limit free
// bytes on export x, and then until its placement's figures are as new, so
// that a fill of the tmpfs is known to it.
func (e *exportsEnv) waitFreeBelow(x *testExport, limit int64) {
	e.t.Helper()
	series := fmt.Sprintf(`nfs_provisioner_export_free_bytes{export=%q}`, x.name)
	v := waitMetric(e.t, e.ctx, e.p, series, func(v float64) bool { return v < float64(limit) })
	e.t.Logf("export %s: %s %.0f (%.1f MiB)", x.name, series, v, v/mi)
	settleFigures()
}

// figuresMaxAge is how long the provisioner's placement reuses an export's
// free-space figures; a claim placed meanwhile counts against the export's
// free bytes in the capacity check until a newer reading.
const figuresMaxAge = placement.DefaultMaxAge

// settleFigures waits until the placement's figures of every export are
// newer than what the test did so far: the fill of a tmpfs, or placements
// that would otherwise still count against the free bytes.
func settleFigures() { time.Sleep(figuresMaxAge + 500*time.Millisecond) }

// fillExport writes a file of n bytes straight into the export's tmpfs,
// behind the provisioner's back, as other users of a shared export would.
func fillExport(t *testing.T, x *testExport, name string, n int) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(x.dir, name), make([]byte, n), 0o644))
	free, err := framework.FreeBytes(x.dir)
	require.NoError(t, err)
	t.Logf("export %s: wrote %d MiB into its tmpfs, %.1f MiB free", x.name, n/mi, float64(free)/mi)
}

// assertNoPVFor checks that no PV is bound or pre-bound to the claim.
func (e *exportsEnv) assertNoPVFor(ns, claim string) {
	e.t.Helper()
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	for _, pv := range pvs.Items {
		if ref := pv.Spec.ClaimRef; ref != nil && ref.Namespace == ns && ref.Name == claim {
			e.t.Errorf("claim %s/%s has PV %s (export %s) though it was refused", ns, claim, pv.Name, pv.Annotations[annExport])
		}
	}
	pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(e.ctx, claim, metav1.GetOptions{})
	require.NoError(e.t, err)
	assert.Equal(e.t, v1.ClaimPending, pvc.Status.Phase, "claim %s/%s", ns, claim)
}

// trees snapshots every export's tree (without the provisioner's own
// state and readiness probe files).
func (e *exportsEnv) trees() map[string]map[string]entry {
	e.t.Helper()
	out := map[string]map[string]entry{}
	for _, x := range e.exports {
		out[x.name] = tree(e.t, x.dir)
	}
	return out
}

// TestExportsPlacement: claims go to the export their class names, with
// the PV's server, path and annotation of that export and the directory on
// its filesystem only, reachable over NFS through its server; a class of
// both places by free space; deletes and archives happen on the claim's own
// export; an unknown export is refused with the list of served ones.
func TestExportsPlacement(t *testing.T) {
	e := newExportsEnv(t)
	const ns = "team-a"
	e.namespace(ns)

	t.Log("a. each class's export")
	e.class("on-fast", map[string]string{"export": "fast", "onDelete": "delete"})
	e.class("on-bulk", map[string]string{"export": "bulk", "onDelete": "delete"})
	e.claim(ns, "a-fast", "on-fast", withSize("1Mi"))
	e.claim(ns, "a-bulk", "on-bulk", withSize("1Mi"))
	_, pv := e.waitBound(ns, "a-fast", 30*time.Second)
	e.assertOnExport(pv, e.fast)
	_, pv = e.waitBound(ns, "a-bulk", 30*time.Second)
	e.assertOnExport(pv, e.bulk)

	t.Log("g. an unknown export is refused, naming the served ones")
	e.class("nowhere", map[string]string{"export": "nope"})
	before := e.trees()
	e.claim(ns, "g-nope", "nowhere", withSize("1Mi"))
	ev := e.waitEvent(ns, "g-nope", "ProvisioningFailed", "which this provisioner doesn't serve", 30*time.Second)
	t.Logf("Event on g-nope: %s", ev.Message)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, `nope`)
	assert.Contains(t, ev.Message, "fast")
	assert.Contains(t, ev.Message, "bulk")
	e.assertNoPVFor(ns, "g-nope")
	assert.Equal(t, before, e.trees(), "nothing written for a refused claim")

	t.Log("b. a class of both exports places by free space")
	e.class("spread", map[string]string{"export": "fast,bulk", "onDelete": "delete"})
	e.claim(ns, "b-1", "spread", withSize("1Mi"))
	_, pv = e.waitBound(ns, "b-1", 30*time.Second)
	e.assertOnExport(pv, e.fast) // 64 MiB free beats 32

	// fast down to about 16 MiB free: bulk (about 32) has more.
	fillExport(t, e.fast, "filler", 48*mi)
	e.waitFreeBelow(e.fast, 20*mi)
	e.claim(ns, "b-2", "spread", withSize("1Mi"))
	_, pv = e.waitBound(ns, "b-2", 30*time.Second)
	e.assertOnExport(pv, e.bulk)

	// The reverse: bulk down to about 8 MiB free, below fast's 16.
	fillExport(t, e.bulk, "filler", 24*mi)
	e.waitFreeBelow(e.bulk, 12*mi)
	e.claim(ns, "b-3", "spread", withSize("1Mi"))
	_, pv = e.waitBound(ns, "b-3", 30*time.Second)
	e.assertOnExport(pv, e.fast)
	require.NoError(t, os.Remove(filepath.Join(e.fast.dir, "filler")))
	require.NoError(t, os.Remove(filepath.Join(e.bulk.dir, "filler")))

	t.Log("d. deletes and archives on the claim's own export")
	// The same directory name ("data", "logs") on both exports, from two
	// namespaces: acting on the wrong export would hit the other's twin.
	pattern := map[string]string{"pathPattern": "${.PVC.name}"}
	for _, c := range []struct{ name, export, onDelete string }{
		{"fast-delete", "fast", "delete"}, {"fast-archive", "fast", "archive"},
		{"bulk-delete", "bulk", "delete"}, {"bulk-archive", "bulk", "archive"},
	} {
		e.class(c.name, map[string]string{"export": c.export, "onDelete": c.onDelete, "pathPattern": pattern["pathPattern"]})
	}
	e.namespace("d-1")
	e.namespace("d-2")
	cases := []struct {
		ns, claim, class string
		x                *testExport
		archived         bool
	}{
		{"d-1", "data", "fast-delete", e.fast, false},
		{"d-2", "data", "bulk-archive", e.bulk, true},
		{"d-2", "logs", "fast-archive", e.fast, true},
		{"d-1", "logs", "bulk-delete", e.bulk, false},
	}
	pvs := map[string]*v1.PersistentVolume{}
	for _, c := range cases {
		e.claim(c.ns, c.claim, c.class, withSize("1Mi"))
	}
	for _, c := range cases {
		_, pv := e.waitBound(c.ns, c.claim, 30*time.Second)
		require.Equal(t, c.claim, e.checkOnExport(pv, c.x, true))
		require.NoError(t, os.WriteFile(filepath.Join(c.x.dir, c.claim, "data.txt"), []byte(c.ns+"/"+c.claim), 0o644))
		pvs[c.ns+"/"+c.claim] = pv
	}
	for _, c := range cases {
		before := e.trees()
		pv := pvs[c.ns+"/"+c.claim]
		require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(c.ns).Delete(e.ctx, c.claim, metav1.DeleteOptions{}))
		e.waitPVGone(pv.Name, 30*time.Second)
		after := e.trees()
		for _, o := range e.exports {
			if o != c.x {
				assert.Equal(t, before[o.name], after[o.name], "deleting %s/%s (export %s) changed export %s", c.ns, c.claim, c.x.name, o.name)
			}
		}
		own := after[c.x.name]
		var archives []string
		for p := range own {
			_, existed := before[c.x.name][p]
			if m := archiveName.FindStringSubmatch(p); m != nil && m[1] == c.claim && !existed {
				archives = append(archives, p)
			}
		}
		assert.Equal(t, outside(before[c.x.name], c.claim), outside(own, append([]string{c.claim}, archives...)...), "deleting %s/%s changed other things on export %s", c.ns, c.claim, c.x.name)
		assert.NoDirExists(t, filepath.Join(c.x.dir, c.claim), "%s/%s", c.ns, c.claim)
		if c.archived {
			if assert.Len(t, archives, 1, "one archive of %s/%s on export %s: %v", c.ns, c.claim, c.x.name, own) {
				data, err := os.ReadFile(filepath.Join(c.x.dir, archives[0], "data.txt"))
				require.NoError(t, err)
				assert.Equal(t, c.ns+"/"+c.claim, string(data))
			}
		} else {
			assert.Empty(t, archives, "%s/%s deleted, not archived", c.ns, c.claim)
		}
		t.Logf("deleted %s/%s (export %s, archived %v): export %s now %v", c.ns, c.claim, c.x.name, c.archived, c.x.name, sortedKeys(own))
	}

	// Operations counted on the export acted on; the refusal before any
	// export was chosen on export "".
	m := e.metrics()
	ops := func(export, op, outcome string) float64 {
		return metricValue(t, m, fmt.Sprintf(`nfs_provisioner_operations_total{export=%q,operation=%q,outcome=%q}`, export, op, outcome))
	}
	assert.Equal(t, 5.0, ops("fast", "provision", "success"), "a-fast, b-1, b-3, d-1/data, d-2/logs")
	assert.Equal(t, 4.0, ops("bulk", "provision", "success"), "a-bulk, b-2, d-2/data, d-1/logs")
	assert.Equal(t, 2.0, ops("fast", "delete", "success"), "d-1/data deleted, d-2/logs archived")
	assert.Equal(t, 2.0, ops("bulk", "delete", "success"), "d-2/data archived, d-1/logs deleted")
	assert.GreaterOrEqual(t, ops("", "provision", "refused"), 1.0, "g-nope")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestExportsCapacityCheck: with capacityCheck a claim larger than the
// export's free bytes is refused, and with overcommitRatio 1.0 a claim that
// would make the PVs on the export sum above its size; nothing is made for
// a refused claim, and the other export and claims that fit are unaffected.
func TestExportsCapacityCheck(t *testing.T) {
	e := newExportsEnv(t)
	const ns = "team-a"
	e.namespace(ns)

	t.Log("overcommitRatio 1.0 on bulk (32 MiB): 20 Mi fits, a second 20 Mi doesn't, 10 Mi more does")
	e.class("bulk-ratio", map[string]string{"export": "bulk", "capacityCheck": "true", "overcommitRatio": "1.0", "onDelete": "delete"})
	e.claim(ns, "o-1", "bulk-ratio", withSize("20Mi"))
	_, pv := e.waitBound(ns, "o-1", 30*time.Second)
	e.assertOnExport(pv, e.bulk)
	// Else o-1's 20 Mi still count against bulk's free bytes, and o-2 is
	// refused for free space before the ratio is looked at.
	settleFigures()
	before := e.trees()
	e.claim(ns, "o-2", "bulk-ratio", withSize("20Mi"))
	ev := e.waitEvent(ns, "o-2", "ProvisioningFailed", "overcommitRatio", 30*time.Second)
	t.Logf("Event on o-2: %s", ev.Message)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, `export "bulk"`)
	assert.Contains(t, ev.Message, "20Mi")
	e.claim(ns, "o-3", "bulk-ratio", withSize("10Mi"))
	_, pv = e.waitBound(ns, "o-3", 30*time.Second)
	e.assertOnExport(pv, e.bulk)
	e.assertNoPVFor(ns, "o-2")
	after := e.trees()
	assert.Equal(t, before["fast"], after["fast"])
	dir3 := pv.Annotations[provisioner.AnnDirectory]
	assert.Equal(t, before["bulk"], outside(after["bulk"], dir3), "nothing on bulk for the refused claim")

	t.Log("capacityCheck: larger than the export's free bytes")
	e.class("bulk-checked", map[string]string{"export": "bulk", "capacityCheck": "true", "onDelete": "delete"})
	e.class("fast-checked", map[string]string{"export": "fast", "capacityCheck": "true", "onDelete": "delete"})
	before = e.trees()
	e.claim(ns, "c-big", "bulk-checked", withSize("48Mi"))
	ev = e.waitEvent(ns, "c-big", "ProvisioningFailed", "free", 30*time.Second)
	t.Logf("Event on c-big: %s", ev.Message)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, `export "bulk"`)
	assert.Contains(t, ev.Message, "48Mi", "the requested size")
	assert.NotContains(t, ev.Message, "overcommitRatio", "no ratio in this class")
	// The same request fits fast (64 MiB).
	e.claim(ns, "c-big-fast", "fast-checked", withSize("48Mi"))
	_, pvFast := e.waitBound(ns, "c-big-fast", 30*time.Second)
	e.assertOnExport(pvFast, e.fast)
	// And a small one fits bulk: PVs there sum above its size already, but
	// this class has no ratio.
	e.claim(ns, "c-small", "bulk-checked", withSize("8Mi"))
	_, pvSmall := e.waitBound(ns, "c-small", 30*time.Second)
	e.assertOnExport(pvSmall, e.bulk)
	e.assertNoPVFor(ns, "c-big")
	after = e.trees()
	assert.Equal(t, before["bulk"], outside(after["bulk"], pvSmall.Annotations[provisioner.AnnDirectory]), "nothing on bulk for the refused claim")

	// Free space shrinks: 24 MiB written into bulk's tmpfs leave about 8.
	fillExport(t, e.bulk, "filler", 24*mi)
	e.waitFreeBelow(e.bulk, 12*mi)
	e.claim(ns, "c-after-fill", "bulk-checked", withSize("10Mi"))
	ev = e.waitEvent(ns, "c-after-fill", "ProvisioningFailed", "free", 30*time.Second)
	t.Logf("Event on c-after-fill: %s", ev.Message)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, `export "bulk"`)
	assert.Contains(t, ev.Message, "10Mi", "the requested size")
	e.assertNoPVFor(ns, "c-after-fill")
	// Space back: it binds without anyone touching it.
	require.NoError(t, os.Remove(filepath.Join(e.bulk.dir, "filler")))
	_, pv = e.waitBound(ns, "c-after-fill", 90*time.Second)
	e.assertOnExport(pv, e.bulk)
}

// TestExportsOneUnwritable: with one export read-only, the other keeps
// provisioning, claims of the broken one get Warning Events, /readyz stays
// 200 and nfs_provisioner_export_ready tells the two apart; once writable
// again, the waiting claims bind.
func TestExportsOneUnwritable(t *testing.T) {
	e := newExportsEnv(t)
	const ns = "team-a"
	e.namespace(ns)
	e.class("on-fast", map[string]string{"export": "fast", "onDelete": "delete"})
	e.class("on-bulk", map[string]string{"export": "bulk", "onDelete": "delete"})
	e.claim(ns, "before-bulk", "on-bulk", withSize("1Mi"))
	_, pv := e.waitBound(ns, "before-bulk", 30*time.Second)
	require.Equal(t, "bulk", pv.Annotations[annExport])
	e.waitReadyz(e.p, 200)
	e.waitExportReady("fast", 1)
	e.waitExportReady("bulk", 1)

	e.remountReadOnly(e.bulk)
	e.waitExportReady("bulk", 0)
	code, body, err := e.p.Get(e.ctx, "/readyz")
	require.NoError(t, err)
	t.Logf("/readyz with bulk read-only: %d %s", code, strings.TrimSpace(body))
	assert.Equal(t, 200, code, "one export is still writable")
	assert.Contains(t, body, "bulk")
	assert.Contains(t, body, "read-only file system")
	assert.Contains(t, body, "fast")
	m := e.metrics()
	assert.Equal(t, 0.0, metricValue(t, m, `nfs_provisioner_export_ready{export="bulk"}`))
	assert.Equal(t, 1.0, metricValue(t, m, `nfs_provisioner_export_ready{export="fast"}`))

	broken := []string{"broken-1", "broken-2", "broken-3"}
	healthy := []string{"healthy-1", "healthy-2", "healthy-3"}
	for i := range broken {
		e.claim(ns, broken[i], "on-bulk", withSize("1Mi"))
		e.claim(ns, healthy[i], "on-fast", withSize("1Mi"))
	}
	for _, c := range healthy {
		_, pv := e.waitBound(ns, c, 30*time.Second)
		e.assertOnExport(pv, e.fast)
	}
	for _, c := range broken {
		ev := e.waitEvent(ns, c, "ProvisioningFailed", "read-only file system", 30*time.Second)
		assert.Equal(t, "Warning", ev.Type)
		t.Logf("Event on %s: %s", c, ev.Message)
		e.assertNoPVFor(ns, c)
	}
	code, _, err = e.p.Get(e.ctx, "/readyz")
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	m = e.metrics()
	assert.GreaterOrEqual(t, metricValue(t, m, `nfs_provisioner_operations_total{export="bulk",operation="provision",outcome="error"}`), float64(len(broken)))
	assert.Equal(t, float64(len(healthy)), metricValue(t, m, `nfs_provisioner_operations_total{export="fast",operation="provision",outcome="success"}`))
	assert.Equal(t, 0.0, metricValue(t, m, `nfs_provisioner_export_ready{export="bulk"}`))
	assert.Equal(t, 1.0, metricValue(t, m, `nfs_provisioner_export_ready{export="fast"}`))

	require.NoError(t, framework.RemountReadOnly(e.bulk.dir, false))
	e.waitExportReady("bulk", 1)
	for _, c := range broken {
		// The library's per-claim back-off (1 s doubling) decides when.
		_, pv := e.waitBound(ns, c, 90*time.Second)
		e.assertOnExport(pv, e.bulk)
	}
}

// TestExportsOneHung: every call on bulk hangs (FUSE), as on a dead NFS
// server with a hard mount. Claims of fast, and of a class of both exports,
// bind on fast; claims of bulk get Warnings; /readyz stays 200 and answers,
// like /metrics, within the chart's 5 s probe timeout; export_ready and
// export_hung_seconds tell which export hangs. Once bulk answers again, its
// claims bind.
func TestExportsOneHung(t *testing.T) {
	e := newExportsEnvWith(t, true, "--fs-timeout=5s")
	const ns = "team-a"
	e.namespace(ns)
	e.class("on-fast", map[string]string{"export": "fast", "onDelete": "delete"})
	e.class("on-bulk", map[string]string{"export": "bulk", "onDelete": "delete"})
	e.class("spread", map[string]string{"export": "bulk,fast", "onDelete": "delete"})
	e.claim(ns, "before", "on-bulk", withSize("1Mi"))
	_, pv := e.waitBound(ns, "before", 30*time.Second)
	require.Equal(t, "bulk", pv.Annotations[annExport])

	hang := e.bulkFaults.Hang(faultfs.Match{})
	defer hang.Clear()
	broken := []string{"broken-1", "broken-2", "broken-3"}
	healthy := []string{"healthy-1", "healthy-2", "healthy-3"}
	spread := []string{"spread-1", "spread-2", "spread-3"}
	for i := range broken {
		e.claim(ns, broken[i], "on-bulk", withSize("1Mi"))
		e.claim(ns, healthy[i], "on-fast", withSize("1Mi"))
		e.claim(ns, spread[i], "spread", withSize("1Mi"))
	}
	for _, c := range append(healthy, spread...) {
		_, pv := e.waitBound(ns, c, 60*time.Second)
		e.assertOnExport(pv, e.fast)
	}
	for _, c := range broken {
		ev := e.waitEvent(ns, c, "ProvisioningFailed", "hung or unreachable", 60*time.Second)
		assert.Equal(t, "Warning", ev.Type)
		t.Logf("Event on %s: %s", c, ev.Message)
		e.assertNoPVFor(ns, c)
	}
	for _, path := range []string{"/readyz", "/metrics"} {
		start := time.Now()
		code, body, err := e.p.Get(e.ctx, path)
		took := time.Since(start)
		require.NoError(t, err)
		t.Logf("%s with bulk hung: %d in %v", path, code, took.Round(time.Millisecond))
		assert.Equal(t, 200, code, "%s: %s", path, body)
		assert.Less(t, took, time.Second, "%s: the hung export, known as such, is not waited for", path)
	}
	e.waitExportReady("bulk", 0)
	m := e.metrics()
	assert.Equal(t, 1.0, metricValue(t, m, `nfs_provisioner_export_ready{export="fast"}`))
	assert.Greater(t, metricValue(t, m, `nfs_provisioner_export_hung_seconds{export="bulk"}`), 0.0)
	assert.Equal(t, 0.0, metricValue(t, m, `nfs_provisioner_export_hung_seconds{export="fast"}`))
	assert.Equal(t, float64(len(healthy)+len(spread)), metricValue(t, m, `nfs_provisioner_operations_total{export="fast",operation="provision",outcome="success"}`))

	hang.Clear()
	e.waitExportReady("bulk", 1)
	for _, c := range broken {
		// The breaker's next probe (2 x --fs-timeout) and the library's
		// per-claim back-off decide when.
		_, pv := e.waitBound(ns, c, 120*time.Second)
		e.assertOnExport(pv, e.bulk)
	}
}

// remountReadOnly makes x's tmpfs read-only, which stops root too, and
// makes it writable again when the test ends. The kernel refuses while a
// file on it is open for writing (ganesha may keep one open a while), so it
// retries.
func (e *exportsEnv) remountReadOnly(x *testExport) {
	e.t.Helper()
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = framework.RemountReadOnly(x.dir, true)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NoError(e.t, err)
	e.t.Cleanup(func() {
		if err := framework.RemountReadOnly(x.dir, false); err != nil {
			e.t.Logf("%v", err)
		}
	})
	require.ErrorIs(e.t, os.Mkdir(filepath.Join(x.dir, ".e2e-ro-probe"), 0o755), unix.EROFS)
}

// waitExportReady asks /readyz (which runs the readiness check) until
// nfs_provisioner_export_ready of the export is v.
func (e *exportsEnv) waitExportReady(export string, v float64) {
	e.t.Helper()
	series := fmt.Sprintf(`nfs_provisioner_export_ready{export=%q}`, export)
	last := -1.0
	err := wait.PollUntilContextTimeout(e.ctx, 300*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if _, _, err := e.p.Get(ctx, "/readyz"); err != nil {
			return false, nil
		}
		_, body, err := e.p.Get(ctx, "/metrics")
		if err != nil {
			return false, nil
		}
		last = sample(body, series)
		return last == v, nil
	})
	require.NoError(e.t, err, "%s is %v, not %v", series, last, v)
}

// TestExportsBurst: 200 claims of a class of both exports at once all bind,
// each PV on the export its annotation names, with its directory on that
// export only.
//
// Where they go follows the placement rule: the most free bytes, less what
// claims placed in the last placement.DefaultSettle request (a new volume
// is empty: the figures can't show it). With 1 Mi claims on 64 and 32 MiB
// exports, the first 32 go to fast and then they alternate, as long as the
// burst lasts about Settle: bulk gets well over a quarter. With claims
// larger than the gap (1 Gi, no capacity check) each placement outweighs
// it and the claims alternate from the start.
func TestExportsBurst(t *testing.T) {
	const n = 200
	e := newExportsEnv(t)
	e.class("spread", map[string]string{"export": "fast,bulk", "onDelete": "delete"})

	small := e.burst("burst-1mi", "spread", "1Mi", n)
	assert.GreaterOrEqual(t, small["fast"], small["bulk"], "1 Mi claims: fast, with more free bytes, gets at least as many")
	assert.GreaterOrEqual(t, small["bulk"], n/4, "1 Mi claims: bulk got %d of %d", small["bulk"], n)

	big := e.burst("burst-1gi", "spread", "1Gi", n)
	for _, x := range e.exports {
		assert.GreaterOrEqual(t, big[x.name], n/4, "1 Gi claims: export %s got %d of %d", x.name, big[x.name], n)
	}
}

// burst creates n claims of size in a new namespace ns from 16 goroutines,
// waits until all are Bound, checks every PV of them against its export and
// returns how many PVs each export got.
func (e *exportsEnv) burst(ns, class, size string, n int) map[string]int {
	t := e.t
	t.Helper()
	const parallel = 16
	e.namespace(ns)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	names := make(chan string, n)
	for i := range n {
		names <- fmt.Sprintf("c-%03d", i)
	}
	close(names)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				pvc := newClaim(ns, name, class)
				withSize(size)(pvc)
				if _, err := e.client.CoreV1().PersistentVolumeClaims(ns).Create(e.ctx, pvc, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("claim %s: %w", name, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	done := e.waitBurstBound(ns, n, 5*time.Minute)

	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	byExport := map[string][]v1.PersistentVolume{}
	for _, pv := range pvs.Items {
		if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == ns {
			byExport[pv.Annotations[annExport]] = append(byExport[pv.Annotations[annExport]], pv)
		}
	}
	counts := map[string]int{}
	for name, pvs := range byExport {
		counts[name] = len(pvs)
	}
	t.Logf("burst of %d claims of %s, class %q: Bound in %v; PVs per export %v", n, size, class, done.Sub(start).Round(time.Millisecond), counts)
	assert.Equal(t, n, counts["fast"]+counts["bulk"], "every PV on fast or bulk: %v", counts)

	for _, x := range e.exports {
		var want, got []string
		for _, pv := range byExport[x.name] {
			dir := pv.Annotations[provisioner.AnnDirectory]
			assert.Equal(t, x.nfs.Server, pv.Spec.NFS.Server, "PV %s", pv.Name)
			assert.Equal(t, x.nfs.ExportPath+"/"+dir, pv.Spec.NFS.Path, "PV %s", pv.Name)
			want = append(want, dir)
		}
		entries, err := readExportRoot(x.dir)
		require.NoError(t, err)
		for _, en := range entries {
			if strings.HasPrefix(en.Name(), ns+"-") {
				got = append(got, en.Name())
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		assert.Equal(t, want, got, "export %s holds exactly the directories of its PVs of %s", x.name, ns)
		// A few reachable through their own server.
		for i, pv := range byExport[x.name] {
			if i == 3 {
				break
			}
			e.assertOnExport(&pv, x)
		}
	}
	return counts
}
