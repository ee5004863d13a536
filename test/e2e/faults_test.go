package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
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
	assert.Empty(t, tree(t, exportDir), "the refused attempt left something on the export")

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

	// A tenant (uid 1000) keeps a private 0700 directory in its volume:
	// the squashed provisioner can't read it, so the delete can't finish,
	// and says why instead of looping on a bare EACCES.
	private := filepath.Join(exportDir, dir, "private")
	require.NoError(t, os.Mkdir(private, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(private, "data"), []byte("tenant data"), 0o600))
	require.NoError(t, os.Chown(filepath.Join(private, "data"), 1000, 1000))
	require.NoError(t, os.Chown(private, 1000, 1000))
	require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "plain", metav1.DeleteOptions{}))
	ev = e.waitEvent("", pv.Name, "VolumeFailedDelete", "squashes root", 60*time.Second)
	assert.Equal(t, "Warning", ev.Type)
	assert.Contains(t, ev.Message, "permission denied")
	t.Logf("Event on the PV: %s", ev.Message)
	data, err := os.ReadFile(filepath.Join(private, "data"))
	require.NoError(t, err)
	assert.Equal(t, "tenant data", string(data))
	_, err = e.client.CoreV1().PersistentVolumes().Get(e.ctx, pv.Name, metav1.GetOptions{})
	require.NoError(t, err, "the PV stays, Released, until its directory can go")
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

// hangSample is what the samplers saw while the export hung.
type hangSample struct {
	mu                           sync.Mutex
	threads, goroutines, blocked int
	// slowest answers of each endpoint; failures are counted.
	slowest       map[string]time.Duration
	failed        map[string]int
	firstNotReady time.Duration
}

// sampleHung polls /healthz, /metrics and /readyz, each on its own, and
// /proc every 500 ms until ctx ends, keeping the peaks.
func sampleHung(ctx context.Context, p *framework.ProvisionerProcess, start time.Time) *hangSample {
	s := &hangSample{slowest: map[string]time.Duration{}, failed: map[string]int{}}
	every := func(f func()) {
		for ctx.Err() == nil {
			f()
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	var wg sync.WaitGroup
	for _, path := range []string{"/healthz", "/metrics", "/readyz"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(func() {
				t0 := time.Now()
				code, body, err := p.Get(ctx, path)
				d := time.Since(t0)
				if ctx.Err() != nil {
					return
				}
				s.mu.Lock()
				defer s.mu.Unlock()
				s.slowest[path] = max(s.slowest[path], d)
				switch {
				case path == "/readyz" && code == 503:
					if s.firstNotReady == 0 {
						s.firstNotReady = time.Since(start)
					}
				case err != nil || code != 200:
					s.failed[path]++
				case path == "/metrics":
					s.goroutines = max(s.goroutines, int(sample(body, "go_goroutines")))
					s.blocked = max(s.blocked, int(sample(body, `nfs_provisioner_export_blocked_calls{export="default"}`)))
				}
			})
		}()
	}
	every(func() {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
		if err != nil {
			return
		}
		if m := regexp.MustCompile(`(?m)^Threads:\s+(\d+)$`).FindSubmatch(status); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			s.mu.Lock()
			s.threads = max(s.threads, n)
			s.mu.Unlock()
		}
	})
	wg.Wait()
	return s
}

// sample is the value of an unlabelled series in a /metrics body, -1 when
// it is missing.
func sample(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestFaultExportHung: every call on the export hangs for two minutes, with
// the default --fs-timeout, while claims keep arriving and two volumes are
// released. The process's threads and goroutines stay bounded, /readyz
// fails within the probe's timeout while /healthz and /metrics keep
// answering, and the Lease is kept. Once the calls are released every claim
// binds to a directory of its own, both releases are applied, and the
// export holds nothing else.
func TestFaultExportHung(t *testing.T) {
	const (
		hangFor = 2 * time.Minute
		// The chart's probes time out after 5 s.
		probeTimeout = 5 * time.Second
		// Calls given up after --fs-timeout keep their slot until they
		// return: at most 64 (exportfs's slots), each on an OS thread.
		maxBlocked = 64
		// The Go runtime's own threads, the HTTP servers and client-go
		// beyond the blocked calls.
		runtimeThreads = 40
		// 64 workers and the library's, informer, HTTP and election
		// goroutines; measured 204–214 (see the log).
		maxGoroutines = 400
	)
	e := newFaultEnv(t, nil)
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", map[string]string{"onDelete": "delete"})
	dirOf := func(claim string, pv *v1.PersistentVolume) string { return ns + "-" + claim + "-" + pv.Name }
	released := map[string]string{}
	dirs := map[string]bool{}
	for _, c := range []string{"stay", "release-1", "release-2"} {
		e.claim(ns, c, "nfs")
		_, pv := e.waitBound(ns, c, 30*time.Second)
		if strings.HasPrefix(c, "release-") {
			fill(t, filepath.Join(e.exportDir, dirOf(c, pv)))
			released[c] = pv.Name
		} else {
			dirs[dirOf(c, pv)] = true
		}
	}
	e.waitReadyz(e.p, 200)
	lease, err := e.client.CoordinationV1().Leases(namespace).Get(e.ctx, electionLeaseName, metav1.GetOptions{})
	require.NoError(t, err)
	holder := ptrValue(lease.Spec.HolderIdentity)
	require.NotEmpty(t, holder)

	hung := e.ffs.Hang(faultfs.Match{})
	start := time.Now()
	sampling, stopSampling := context.WithCancel(e.ctx)
	sampled := make(chan *hangSample, 1)
	go func() { sampled <- sampleHung(sampling, e.p, start) }()

	// A claim every 10 s; the two releases 20 s and 60 s in.
	var claims []string
	for i := 0; time.Since(start) < hangFor; i++ {
		if i < 12 {
			c := fmt.Sprintf("during-%d", i+1)
			e.claim(ns, c, "nfs")
			claims = append(claims, c)
		}
		switch i {
		case 2:
			require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "release-1", metav1.DeleteOptions{}))
		case 6:
			require.NoError(t, e.client.CoreV1().PersistentVolumeClaims(ns).Delete(e.ctx, "release-2", metav1.DeleteOptions{}))
		}
		time.Sleep(min(10*time.Second, time.Until(start.Add(hangFor))))
	}
	stopSampling()
	s := <-sampled
	t.Logf("during the %v hang: peak %d OS threads, %d goroutines, %d calls blocked (faultfs saw %d blocked, %d calls); "+
		"/readyz failed after %v, slowest answers: /healthz %v, /metrics %v, /readyz %v",
		hangFor, s.threads, s.goroutines, s.blocked, hung.Blocked(), hung.Hits(),
		s.firstNotReady.Round(time.Millisecond), s.slowest["/healthz"].Round(time.Millisecond),
		s.slowest["/metrics"].Round(time.Millisecond), s.slowest["/readyz"].Round(time.Millisecond))

	assert.False(t, e.p.Exited(), "the provisioner survives a hung export")
	assert.Positive(t, hung.Blocked(), "the provisioner's calls are stuck in the export")
	assert.LessOrEqual(t, s.blocked, maxBlocked, "calls blocked in the export")
	assert.LessOrEqual(t, s.threads, maxBlocked+runtimeThreads, "OS threads")
	assert.LessOrEqual(t, s.goroutines, maxGoroutines, "goroutines")
	assert.Empty(t, s.failed, "requests that failed while the export hung (/readyz: other than 503)")
	for path, d := range s.slowest {
		assert.Less(t, d, probeTimeout, "%s answers within the probe's timeout", path)
	}
	assert.Positive(t, s.firstNotReady, "/readyz never failed")
	assert.Less(t, s.firstNotReady, probeTimeout+2*time.Second, "/readyz fails within its check's timeout, age and the poll interval")
	_, body, err := e.p.Get(e.ctx, "/readyz")
	require.NoError(t, err)
	assert.Contains(t, body, "hung or unreachable")
	_, body, err = e.p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Greater(t, sample(body, `nfs_provisioner_export_hung_seconds{export="default"}`), 60.0, "hung_seconds")
	ev := e.waitEvent(ns, claims[0], "ProvisioningFailed", "hung or unreachable", time.Second)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("Event on %s: %s", claims[0], ev.Message)

	lease, err = e.client.CoordinationV1().Leases(namespace).Get(e.ctx, electionLeaseName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, holder, ptrValue(lease.Spec.HolderIdentity), "the Lease changed hands while the export hung")
	require.NotNil(t, lease.Spec.RenewTime)
	assert.WithinDuration(t, time.Now(), lease.Spec.RenewTime.Time, 15*time.Second, "the Lease is still renewed")
	pvs, err := e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pvs.Items, 3, "no PV made or deleted while the export hangs")

	hung.Clear()
	cleared := time.Now()
	e.waitReadyz(e.p, 200)
	t.Logf("/readyz ready %v after the export answered again", time.Since(cleared).Round(time.Millisecond))
	// The library retries each claim with a backoff doubling up to 5 min:
	// after two minutes of failures the next try may be two minutes away.
	for _, c := range claims {
		_, pv := e.waitBound(ns, c, 5*time.Minute)
		dir := dirOf(c, pv)
		assert.False(t, dirs[dir], "two claims bound to %s", dir)
		dirs[dir] = true
		e.assertReachable(pv, dir)
	}
	t.Logf("all %d claims bound %v after the export answered again", len(claims), time.Since(cleared).Round(time.Second))
	for _, pv := range released {
		e.waitPVGone(pv, 5*time.Minute)
	}
	t.Logf("both releases applied %v after the export answered again", time.Since(cleared).Round(time.Second))
	pvs, err = e.client.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pvs.Items, 1+len(claims), "one PV per claim")
	entries, err := os.ReadDir(e.exportDir)
	require.NoError(t, err)
	var got []string
	for _, en := range entries {
		if en.Name() != stateDir && !strings.HasPrefix(en.Name(), ".nfs-provisioner-probe-") {
			got = append(got, en.Name())
		}
	}
	var want []string
	for d := range dirs {
		want = append(want, d)
	}
	assert.ElementsMatch(t, want, got, "the export holds exactly the bound claims' directories: no orphan, no half-made one, the released ones gone")
}

// TestFaultSlowExportBurst: with every call on the export taking 50 ms, as
// on a distant or loaded NFS server, a burst of 200 claims binds with the
// default settings and no operation times out or fails.
func TestFaultSlowExportBurst(t *testing.T) {
	const (
		n     = 200
		delay = 50 * time.Millisecond
	)
	e := newFaultEnv(t, func(ffs *faultfs.FS) { ffs.Delay(delay, faultfs.Match{}) })
	const ns = "burst"
	e.namespace(ns)
	e.class("nfs", nil)
	start := time.Now()
	burst := e.createClaimsConcurrently(ns, "nfs", n, 8)
	require.NoError(t, burst.wait())
	created := time.Since(start)
	allPVs := e.waitVolumeCount(n, 5*time.Minute).Sub(start)
	allBound := e.waitBurstBound(ns, n, 5*time.Minute).Sub(start)
	t.Logf("%d claims on an export answering every call after %v: created in %v, all PVs after %v (%.1f claims/s), all Bound after %v",
		n, delay, created.Round(time.Millisecond), allPVs.Round(time.Millisecond), float64(n)/allPVs.Seconds(), allBound.Round(time.Millisecond))
	e.assertBurstConsistent(ns, n)
	_, body, err := e.p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Zero(t, metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="error"}`), "provisioning attempts that failed")
	assert.Equal(t, float64(n), metricValue(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="success"}`))
	assert.Zero(t, metricValue(t, body, `nfs_provisioner_export_hung_seconds{export="default"}`))
}
