package usage

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
)

// fakeExport answers Scan from a table, counting calls per directory.
type fakeExport struct {
	mu     sync.Mutex
	usage  map[string]exportfs.Tally
	errs   map[string]error
	called map[string]int
}

func newFakeExport() *fakeExport {
	return &fakeExport{usage: map[string]exportfs.Tally{}, errs: map[string]error{}, called: map[string]int{}}
}

func (f *fakeExport) Scan(_ context.Context, rel string, _ exportfs.ScanOptions) (exportfs.Tally, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called[rel]++
	return f.usage[rel], f.errs[rel]
}

func (f *fakeExport) set(rel string, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.usage[rel] = exportfs.Tally{Bytes: bytes, Inodes: 1}
}

func (f *fakeExport) calls(rel string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.called[rel]
}

type env struct {
	s      *Scanner
	export *fakeExport // the one named "default"
	clock  *clocktesting.FakeClock
	events *record.FakeRecorder
	vols   []Volume
}

const interval = time.Hour

func newEnv(t *testing.T, vols ...Volume) *env {
	return newEnvOf(t, map[string]Export{"default": newFakeExport()}, vols...)
}

// newEnvOf is newEnv with exports of one's own.
func newEnvOf(t *testing.T, exports map[string]Export, vols ...Volume) *env {
	e := &env{clock: clocktesting.NewFakeClock(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)), events: record.NewFakeRecorder(10), vols: vols}
	e.export, _ = exports["default"].(*fakeExport)
	e.s = New(Config{Exports: exports, Volumes: func() []Volume { return e.vols }, Interval: interval, Recorder: e.events, Clock: e.clock})
	return e
}

// runFor scans whatever becomes due over d, as Run's loops would.
func (e *env) runFor(t *testing.T, d time.Duration) {
	logger, ctx := ktesting.NewTestContext(t)
	end := e.clock.Now().Add(d)
	for {
		wait, scanned := time.Duration(1<<62), false
		for _, name := range e.s.exportNames() {
			w := e.s.scanNext(ctx, logger, exportfs.ScanOptions{}, name)
			scanned = scanned || w == 0
			wait = min(wait, w)
		}
		if scanned {
			continue
		}
		if !e.clock.Now().Add(wait).Before(end) {
			e.clock.SetTime(end)
			return
		}
		e.clock.Step(wait)
	}
}

func vol(name string, capacity int64) Volume {
	return Volume{PV: "pv-" + name, Namespace: "ns", Claim: name, ClaimUID: "uid-" + name, Export: "default", Dir: "ns-" + name, CapacityBytes: capacity}
}

// TestEachVolumeOncePerInterval: after a start that spreads the first scans
// over the interval, every volume is measured once per interval.
func TestEachVolumeOncePerInterval(t *testing.T) {
	t.Parallel()
	var vols []Volume
	for i := range 50 {
		vols = append(vols, vol(fmt.Sprint(i), 1<<30))
	}
	e := newEnv(t, vols...)
	start := e.clock.Now()
	e.runFor(t, interval/2)
	half := 0
	for _, v := range vols {
		half += e.export.calls(v.Dir)
	}
	assert.InDelta(t, 25, half, 12, "the first scans spread over the interval, not all at start")
	e.runFor(t, interval/2+3*interval)
	for _, v := range vols {
		assert.Equal(t, 4, e.export.calls(v.Dir), "%s over four intervals", v.PV)
	}
	for _, smp := range e.s.Samples() {
		assert.True(t, smp.Scanned.After(start.Add(3*interval)), "%s last scanned %v", smp.PV, smp.Scanned)
	}
}

// TestGoneVolumesAreForgotten: a PV no longer listed leaves the samples, and
// Run forgets everything when it stops.
func TestGoneVolumesAreForgotten(t *testing.T) {
	t.Parallel()
	e := newEnv(t, vol("a", 1), vol("b", 1))
	e.runFor(t, interval)
	assert.Len(t, e.s.Samples(), 2)
	e.vols = e.vols[:1]
	e.runFor(t, maxIdle)
	require.Len(t, e.s.Samples(), 1)
	assert.Equal(t, "pv-a", e.s.Samples()[0].PV)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.s.Run(ctx)
	assert.Empty(t, e.s.Samples(), "a replica that stopped leading exports no series")
}

// TestOverCapacityEvent: the Warning comes when usage first goes above the
// capacity, not again while it stays there, and again after it went back
// below.
func TestOverCapacityEvent(t *testing.T) {
	t.Parallel()
	v := vol("db", 10<<30)
	e := newEnv(t, v)
	next := func(used uint64) []string {
		e.export.set(v.Dir, used)
		e.runFor(t, interval)
		var got []string
		for {
			select {
			case ev := <-e.events.Events:
				got = append(got, ev)
			default:
				return got
			}
		}
	}
	assert.Empty(t, next(5<<30))
	got := next(12 << 30)
	require.Len(t, got, 1)
	assert.Equal(t, "Warning VolumeOverCapacity the volume holds 12.0 GiB, 2.0 GiB (20%) more than its capacity of 10.0 GiB; NFS does not enforce a claim's size, so writes go on until the export is full: free space in the volume or expand the claim", got[0])
	assert.Empty(t, next(13<<30), "still above: no new Event")
	assert.Empty(t, next(9<<30))
	assert.Len(t, next(11<<30), 1, "above again")
}

// TestScanErrorsAreCounted: a failing or missing directory is retried at the
// next interval, counted, and keeps no sample of used bytes.
func TestScanErrorsAreCounted(t *testing.T) {
	t.Parallel()
	v := vol("gone", 1<<30)
	e := newEnv(t, v)
	e.export.errs[v.Dir] = fmt.Errorf("scan: %w", fs.ErrNotExist)
	e.runFor(t, 2*interval)
	assert.Equal(t, 2, e.export.calls(v.Dir))
	assert.Equal(t, map[string]uint64{"success": 0, "error": 2}, e.s.Scans())
	require.Len(t, e.s.Samples(), 1)
	assert.True(t, e.s.Samples()[0].Scanned.IsZero())
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	a, b := vol("a", 1<<30), vol("b", 2<<30)
	b.Export = "bulk"
	bulk := newFakeExport()
	e := newEnvOf(t, map[string]Export{"default": newFakeExport(), "bulk": bulk}, a, b)
	e.export.set(a.Dir, 4096)
	bulk.errs[b.Dir] = fs.ErrPermission
	e.runFor(t, interval)
	scanned := e.s.Samples()
	var at float64
	for _, smp := range scanned {
		if smp.PV == a.PV {
			at = float64(smp.Scanned.UnixNano()) / 1e9
		}
	}
	want := fmt.Sprintf(`
# HELP nfs_provisioner_usage_scans_total Completed usage scans of volumes, by outcome: success or error.
# TYPE nfs_provisioner_usage_scans_total counter
nfs_provisioner_usage_scans_total{outcome="error"} 1
nfs_provisioner_usage_scans_total{outcome="success"} 1
# HELP nfs_provisioner_volume_capacity_bytes The volume's capacity, from its PersistentVolume; NFS does not enforce it.
# TYPE nfs_provisioner_volume_capacity_bytes gauge
nfs_provisioner_volume_capacity_bytes{export="default",namespace="ns",persistentvolume="pv-a",persistentvolumeclaim="a"} 1.073741824e+09
nfs_provisioner_volume_capacity_bytes{export="bulk",namespace="ns",persistentvolume="pv-b",persistentvolumeclaim="b"} 2.147483648e+09
# HELP nfs_provisioner_volume_last_scan_timestamp_seconds When the volume's last scan completed, in seconds since the epoch.
# TYPE nfs_provisioner_volume_last_scan_timestamp_seconds gauge
nfs_provisioner_volume_last_scan_timestamp_seconds{export="default",namespace="ns",persistentvolume="pv-a",persistentvolumeclaim="a"} %g
# HELP nfs_provisioner_volume_used_bytes Bytes allocated below the volume's directory at its last scan (du -s), hard-linked files once.
# TYPE nfs_provisioner_volume_used_bytes gauge
nfs_provisioner_volume_used_bytes{export="default",namespace="ns",persistentvolume="pv-a",persistentvolumeclaim="a"} 4096
# HELP nfs_provisioner_volume_used_inodes Files, directories and other entries below the volume's directory at its last scan, the directory included.
# TYPE nfs_provisioner_volume_used_inodes gauge
nfs_provisioner_volume_used_inodes{export="default",namespace="ns",persistentvolume="pv-a",persistentvolumeclaim="a"} 1
`, at)
	require.NoError(t, testutil.CollectAndCompare(e.s.Collector(), strings.NewReader(want)))
	problems, err := testutil.CollectAndLint(e.s.Collector())
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestScansTheRealExport: with exportfs underneath, the sample is what the
// directory holds.
func TestScansTheRealExport(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "ns-a", "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "ns-a", "sub", "f"), make([]byte, 64<<10), 0o644))
	s := New(Config{Exports: map[string]Export{"default": exportfs.New(root, 5*time.Second)}, Volumes: func() []Volume { return []Volume{vol("a", 1)} }})
	logger, ctx := ktesting.NewTestContext(t)
	s.cfg.Interval = 0
	assert.Zero(t, s.scanNext(ctx, logger, exportfs.ScanOptions{}, "default"))
	require.Len(t, s.Samples(), 1)
	smp := s.Samples()[0]
	assert.Equal(t, uint64(3), smp.Tally.Inodes)
	assert.GreaterOrEqual(t, smp.Tally.Bytes, uint64(64<<10))
}

func TestVolumesOf(t *testing.T) {
	t.Parallel()
	pv := func(name string, mutate func(*v1.PersistentVolume)) *v1.PersistentVolume {
		p := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "example.com/nfs"}},
			Spec: v1.PersistentVolumeSpec{
				Capacity:               v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
				PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs.example.com", Path: "/srv/nfs/ns-" + name}},
				ClaimRef:               &v1.ObjectReference{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
			},
			Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
		}
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	pvs := []*v1.PersistentVolume{
		pv("ours", nil),
		pv("case", func(p *v1.PersistentVolume) { p.Spec.NFS.Server = "NFS.example.com." }),
		pv("nested", func(p *v1.PersistentVolume) { p.Spec.NFS.Path = "/srv/nfs/team/data" }),
		pv("released", func(p *v1.PersistentVolume) { p.Status.Phase = v1.VolumeReleased }),
		pv("other-provisioner", func(p *v1.PersistentVolume) { p.Annotations["pv.kubernetes.io/provisioned-by"] = "other" }),
		pv("other-server", func(p *v1.PersistentVolume) { p.Spec.NFS.Server = "10.0.0.9" }),
		pv("outside", func(p *v1.PersistentVolume) { p.Spec.NFS.Path = "/srv/other" }),
		pv("root", func(p *v1.PersistentVolume) { p.Spec.NFS.Path = "/srv/nfs" }),
		pv("escape", func(p *v1.PersistentVolume) { p.Spec.NFS.Path = "/srv/nfs/../etc" }),
		pv("not-nfs", func(p *v1.PersistentVolume) { p.Spec.NFS = nil }),
	}
	set, err := exports.NewSet([]exports.Export{{Name: "default", Server: "nfs.example.com", Path: "/srv/nfs", Dir: "/persistentvolumes"}})
	require.NoError(t, err)
	got := VolumesOf(pvs, "example.com/nfs", set)
	assert.Equal(t, []Volume{
		{PV: "ours", Namespace: "ns", Claim: "ours", ClaimUID: "uid-ours", Export: "default", Dir: "ns-ours", CapacityBytes: 1 << 30},
		{PV: "case", Namespace: "ns", Claim: "case", ClaimUID: "uid-case", Export: "default", Dir: "ns-case", CapacityBytes: 1 << 30},
		{PV: "nested", Namespace: "ns", Claim: "nested", ClaimUID: "uid-nested", Export: "default", Dir: "team/data", CapacityBytes: 1 << 30},
	}, got)
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 30: "10.0 GiB", 3 << 50: "3.0 PiB"} {
		assert.Equal(t, want, formatBytes(n), "%d", n)
	}
}

// TestVolumesListedAtMostEveryMaxIdle: a thousand volumes scanned within a
// minute don't mean a thousand listings of the PVs.
func TestVolumesListedAtMostEveryMaxIdle(t *testing.T) {
	t.Parallel()
	var vols []Volume
	for i := range 1000 {
		vols = append(vols, vol(fmt.Sprint(i), 1))
	}
	e := newEnv(t, vols...)
	e.s.cfg.Interval = time.Minute
	listings := 0
	e.s.cfg.Volumes = func() []Volume { listings++; return e.vols }
	e.runFor(t, time.Minute)
	scans := 0
	for _, v := range vols {
		scans += e.export.calls(v.Dir)
	}
	assert.Equal(t, 1000, scans)
	assert.LessOrEqual(t, listings, int(time.Minute/maxIdle)+1)
}

// TestEachVolumeOnItsExport: with two exports holding a directory of the
// same name, each volume is measured on its own export, a failing export
// doesn't stop the other's scans, and a volume of an export not served is
// left out.
func TestEachVolumeOnItsExport(t *testing.T) {
	t.Parallel()
	fast, bulk, broken := newFakeExport(), newFakeExport(), newFakeExport()
	fast.set("ns-x", 100)
	bulk.set("ns-x", 200)
	broken.errs["ns-y"] = fmt.Errorf("scan: %w", exportfs.ErrTimeout)
	onFast, onBulk, onBroken, elsewhere := vol("f", 1<<30), vol("b", 1<<30), vol("y", 1<<30), vol("z", 1<<30)
	onFast.Export, onFast.Dir = "fast", "ns-x"
	onBulk.Export, onBulk.Dir = "bulk", "ns-x"
	onBroken.Export, onBroken.Dir = "broken", "ns-y"
	elsewhere.Export, elsewhere.Dir = "gone", "ns-x"
	e := newEnvOf(t, map[string]Export{"fast": fast, "bulk": bulk, "broken": broken}, onFast, onBulk, onBroken, elsewhere)
	e.runFor(t, 2*interval)
	assert.Equal(t, 2, fast.calls("ns-x"))
	assert.Equal(t, 2, bulk.calls("ns-x"))
	assert.Equal(t, 2, broken.calls("ns-y"))
	assert.Zero(t, fast.calls("ns-y")+bulk.calls("ns-y")+broken.calls("ns-x"), "no volume scanned on another export")
	assert.Equal(t, map[string]uint64{"success": 4, "error": 2}, e.s.Scans())
	got := map[string]uint64{}
	for _, smp := range e.s.Samples() {
		got[smp.Export+"/"+smp.PV] = smp.Tally.Bytes
	}
	assert.Equal(t, map[string]uint64{"fast/pv-f": 100, "bulk/pv-b": 200, "broken/pv-y": 0}, got, "the volume of export gone is not measured")
}

// hungExport is an export whose scans never answer.
type hungExport struct{ calls atomic.Int32 }

func (h *hungExport) Scan(ctx context.Context, _ string, _ exportfs.ScanOptions) (exportfs.Tally, error) {
	h.calls.Add(1)
	<-ctx.Done()
	return exportfs.Tally{}, ctx.Err()
}

// TestHungExportDoesNotStopTheOthers: Run scans each export in a loop of
// its own, so a scan blocked in one export (here for good; exportfs gives
// up after its timeout) doesn't hold up the others'. Run returns once its
// context ends, the blocked scan included.
func TestHungExportDoesNotStopTheOthers(t *testing.T) {
	t.Parallel()
	hung, ok := &hungExport{}, newFakeExport()
	var vols []Volume
	for i := range 4 {
		h, o := vol(fmt.Sprint("h", i), 1), vol(fmt.Sprint("o", i), 1)
		h.Export, o.Export = "hung", "ok"
		vols = append(vols, h, o)
	}
	s := New(Config{Exports: map[string]Export{"hung": hung, "ok": ok}, Volumes: func() []Volume { return vols }, Interval: time.Millisecond})
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	require.Eventually(t, func() bool {
		for i := range 4 {
			if ok.calls(fmt.Sprint("ns-o", i)) < 5 {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "every volume of the export that answers scanned again and again")
	assert.Equal(t, int32(1), hung.calls.Load(), "the hung export's loop waits on its one scan")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.Empty(t, s.Samples())
}

func TestVolumesOfTwoExports(t *testing.T) {
	t.Parallel()
	set, err := exports.NewSet([]exports.Export{
		{Name: "fast", Server: "10.0.0.1", Path: "/ssd", Dir: "/exports/fast"},
		{Name: "bulk", Server: "nfs.example.com", Path: "/hdd/k8s", Dir: "/exports/bulk"},
	})
	require.NoError(t, err)
	pv := func(name, export, server, path string) *v1.PersistentVolume {
		p := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "example.com/nfs"}},
			Spec: v1.PersistentVolumeSpec{
				PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: server, Path: path}},
			},
			Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
		}
		if export != "" {
			p.Annotations[exports.Annotation] = export
		}
		return p
	}
	pvs := []*v1.PersistentVolume{
		pv("fast-annotated", "fast", "10.0.0.1", "/ssd/ns-a"),
		pv("bulk-annotated", "bulk", "nfs.example.com", "/hdd/k8s/ns-b"),
		pv("bulk-old", "", "NFS.Example.com.", "/hdd/k8s/ns-c"),
		pv("fast-old-mapped", "", "::ffff:10.0.0.1", "/ssd/ns-d"),
		pv("annotated-other-spelling", "fast", "fast.example.com", "/ssd/ns-e"),
		pv("old-other-server", "", "10.0.0.9", "/ssd/ns-f"),
		pv("annotated-unknown", "gone", "10.0.0.1", "/ssd/ns-g"),
		pv("annotated-wrong-path", "fast", "10.0.0.1", "/hdd/k8s/ns-h"),
		pv("outside-both", "", "10.0.0.1", "/srv/ns-i"),
	}
	got := map[string]string{}
	for _, v := range VolumesOf(pvs, "example.com/nfs", set) {
		got[v.PV] = v.Export + ":" + v.Dir
	}
	assert.Equal(t, map[string]string{
		"fast-annotated":  "fast:ns-a",
		"bulk-annotated":  "bulk:ns-b",
		"bulk-old":        "bulk:ns-c",
		"fast-old-mapped": "fast:ns-d",
	}, got)
}
