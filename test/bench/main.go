// Command bench is `make bench`: performance of the provisioner at scale on
// the test control plane (the controller-manager at 1000 API QPS, so its
// client-side limit is not what is measured) and a real NFS server, the
// provisioner at its default settings. Each scenario runs in a fresh
// cluster:
//
//   - floor: a bare client creating N PVs with the provisioner's default
//     client settings and credentials;
//   - ideal: the cold and burst scenarios below with the bench itself as an
//     instant provisioner (no filesystem, no Events, 1000 QPS): what the
//     rest of the system allows any provisioner on this machine;
//   - cold: N claims pending before the provisioner starts, time from its
//     start until all are Bound, then the release of all of them;
//   - burst: N claims created at once against a running provisioner,
//     claim-to-Bound latency of each, then the release of all of them;
//   - steady: claims at a constant rate, claim-to-Bound latency;
//   - memory: start-up to ready and resident memory with many PVs and
//     bound claims in the cluster, for the leader and for a standby.
//
// The provisioner's API requests are counted from the API server's audit
// log (its ServiceAccount only). Results go to stdout and to -out.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// Names deploy/ uses: its RBAC grants this ServiceAccount what the
// provisioner needs, and the Lease Role names the Lease of this provisioner.
const (
	provisionerName           = "k8s-sigs.io/nfs-subdir-external-provisioner"
	provisionerNamespace      = "nfs-provisioner"
	provisionerServiceAccount = "nfs-provisioner"
	className                 = "nfs"
)

type options struct {
	n             int
	rate          float64
	steadyFor     time.Duration
	objects       int
	floorRuns     int
	kcmQPS        float64
	out           string
	plot          string
	bin           string
	provArgs      string
	scenarios     string
	profile       bool
	floorProtobuf bool
	hold          bool
	repeat        int
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 1000, "claims in the cold-start and burst runs (and PVs in the floor run)")
	flag.Float64Var(&o.rate, "rate", 50, "claims per second in the steady run")
	flag.DurationVar(&o.steadyFor, "steady-duration", time.Minute, "length of the steady run")
	flag.IntVar(&o.objects, "objects", 10000, "PVs and bound claims in the cluster for the memory run")
	flag.IntVar(&o.floorRuns, "floor-runs", 3, "floor runs; the median counts")
	flag.Float64Var(&o.kcmQPS, "controller-manager-qps", 1000, "kube-controller-manager --kube-api-qps (burst twice that)")
	flag.StringVar(&o.out, "out", "", "directory for results, logs and profiles (default <repo>/.cache/bench)")
	flag.StringVar(&o.plot, "plot", "", "PNG of claim-to-Bound latency over time (default <out>/bench-latency.png)")
	flag.StringVar(&o.bin, "provisioner-binary", "", "provisioner binary to measure (default: build ./cmd/nfs-provisioner into <out>)")
	flag.StringVar(&o.provArgs, "provisioner-args", "", "extra provisioner flags, space separated (default none: the defaults are measured)")
	flag.StringVar(&o.scenarios, "scenarios", "floor,ideal,cold,burst,steady,memory", "scenarios to run, in this order")
	flag.BoolVar(&o.profile, "profile", false, "save CPU profiles of the provisioner during cold and burst, and a heap profile in memory")
	flag.BoolVar(&o.floorProtobuf, "floor-protobuf", true, "floor client speaks protobuf, as the provisioner does")
	flag.IntVar(&o.repeat, "repeat", 3, "runs of the ideal, cold, burst and steady scenarios, each in a fresh cluster; the median run counts")
	flag.BoolVar(&o.hold, "hold", false, "keep each scenario's control plane and NFS server running after it until interrupted (for work by hand; use with one scenario)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	ctx          context.Context
	o            options
	cp           *framework.ControlPlane
	nfs          *framework.NFSServer
	admin        kubernetes.Interface
	bin          string
	saKubeconfig string
	exportDir    string
	logDir       string
	auditLog     string
	cpDir        string
	obs          *observer
	root, binDir string
	// scenarioLogDir holds the current scenario's logs.
	scenarioLogDir string

	prov     *framework.ProvisionerProcess
	provs    int
	provPid  atomic.Int64
	peakRSS  atomic.Uint64
	results  results
	floorDur time.Duration
}

func run(ctx context.Context, o options) error {
	root, err := framework.RepoRoot()
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(root, ".cache", "bench")
	}
	if o.plot == "" {
		o.plot = filepath.Join(o.out, "bench-latency.png")
	}
	if err := os.RemoveAll(filepath.Join(o.out, "logs")); err != nil {
		return err
	}
	logDir := filepath.Join(o.out, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	if o.profile {
		f, err := os.Create(filepath.Join(o.out, "bench.cpu.pprof"))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	b := &bench{ctx: ctx, o: o, logDir: logDir}
	b.results.Machine = describeMachine()
	b.results.Started = time.Now().UTC().Format(time.RFC3339)
	b.results.LoadBefore = loadAverage()

	step("Building the control plane (cached) and the provisioner")
	binDir, err := framework.BuildControlPlaneBinaries(ctx, nil)
	if err != nil {
		return err
	}
	b.bin = o.bin
	if b.bin == "" {
		// Our own copy, built as the image builds it (see Dockerfile): other
		// builds of .cache/bin/nfs-provisioner (a test running meanwhile)
		// must not swap the binary under a run.
		b.bin = filepath.Join(o.out, "nfs-provisioner")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", b.bin, "./cmd/nfs-provisioner")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building the provisioner: %w\n%s", err, out)
		}
	}

	b.root, b.binDir = root, binDir
	go b.sampleRSS(ctx)

	for _, s := range strings.Split(o.scenarios, ",") {
		s = strings.TrimSpace(s)
		var run func() error
		switch s {
		case "floor":
			run = b.runFloor
		case "ideal":
			run = b.runIdeal
		case "cold":
			run = b.runCold
		case "burst":
			run = b.runBurst
		case "steady":
			run = b.runSteady
		case "memory":
			run = b.runMemory
		case "":
			continue
		default:
			return fmt.Errorf("unknown scenario %q", s)
		}
		runs := 1
		if s != "floor" && s != "memory" {
			runs = max(1, b.o.repeat)
		}
		for i := range runs {
			name := s
			if runs > 1 {
				name = fmt.Sprintf("%s-%d", s, i+1)
			}
			// Every run gets a cluster of its own, so none inherits the
			// Events, archives and etcd history of another.
			if err := b.inCluster(name, run); err != nil {
				return fmt.Errorf("scenario %s: %w (logs in %s)", name, err, filepath.Join(logDir, name))
			}
		}
	}
	b.results.LoadAfter = loadAverage()
	return b.report()
}

// inCluster starts a control plane, an NFS server and the RBAC of deploy/,
// runs f, and stops everything (with -hold, only once interrupted).
func (b *bench) inCluster(name string, f func() error) error {
	ctx := b.ctx
	step(fmt.Sprintf("Starting a control plane (controller-manager at %g QPS) and an NFS server for %q", b.o.kcmQPS, name))
	logDir := filepath.Join(b.logDir, name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "nfs-provisioner-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	args, auditLog, err := auditArgs(logDir)
	if err != nil {
		return err
	}
	b.auditLog, b.scenarioLogDir = auditLog, logDir
	cp, err := framework.StartControlPlane(ctx, framework.ControlPlaneOptions{
		BinDir:               b.binDir,
		Dir:                  filepath.Join(work, "controlplane"),
		LogDir:               filepath.Join(logDir, "controlplane"),
		ControllerManagerQPS: float32(b.o.kcmQPS),
		APIServerArgs:        args,
	})
	if err != nil {
		return err
	}
	defer cp.Stop()
	b.cp, b.cpDir = cp, cp.Dir
	// Protobuf, like the controller-manager: the API server then encodes
	// each watch event once for both, and the bench costs it less.
	adminCfg := rest.CopyConfig(cp.AdminConfig)
	adminCfg.ContentType = "application/vnd.kubernetes.protobuf"
	adminCfg.UserAgent = "bench"
	if b.admin, err = kubernetes.NewForConfig(adminCfg); err != nil {
		return err
	}

	b.exportDir = filepath.Join(work, "export")
	if err := os.MkdirAll(b.exportDir, 0o755); err != nil {
		return err
	}
	if b.nfs, err = framework.StartNFSServer(ctx, framework.NFSOptions{Dir: b.exportDir, WorkDir: filepath.Join(work, "nfs")}); err != nil {
		return err
	}
	defer b.nfs.Stop()

	objs, err := framework.ReadManifests(filepath.Join(b.root, "deploy", "namespace.yaml"), filepath.Join(b.root, "deploy", "rbac.yaml"))
	if err != nil {
		return err
	}
	if err := framework.Apply(ctx, cp.AdminConfig, objs, framework.ApplyOptions{}); err != nil {
		return err
	}
	if b.saKubeconfig, err = cp.ServiceAccountKubeconfig(ctx, provisionerNamespace, provisionerServiceAccount); err != nil {
		return err
	}
	if _, err := b.admin.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: className}, Provisioner: provisionerName,
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	obsCtx, stopObserver := context.WithCancel(ctx)
	defer stopObserver()
	b.obs = newObserver()
	if err := b.obs.start(obsCtx, b.admin); err != nil {
		return err
	}
	defer b.stopProvisioner()

	err = f()
	if b.o.hold && err == nil {
		b.stopProvisioner()
		fmt.Printf("\nHolding after %q (Ctrl-C ends). Admin kubeconfig: %s\nProvisioner kubeconfig: %s\nNFS server %s, path %s, export dir %s\n",
			name, cp.KubeconfigPath, b.saKubeconfig, b.nfs.Server, b.nfs.ExportPath, b.exportDir)
		<-ctx.Done()
	}
	return err
}

func (b *bench) takeCPU() cpuSnapshot { return takeCPU(b.cpDir, b.exportDir) }

func step(msg string) { fmt.Printf("==> %s\n", msg) }

// startProvisioner starts one replica at default settings (plus
// -provisioner-args) and makes it the one whose memory is sampled.
func (b *bench) startProvisioner() (*framework.ProvisionerProcess, error) {
	b.provs++
	id := fmt.Sprintf("provisioner-%d", b.provs)
	var args []string
	if b.o.provArgs != "" {
		args = strings.Fields(b.o.provArgs)
	}
	p, err := framework.StartProvisioner(b.ctx, framework.ProvisionerOptions{
		Binary: b.bin, Kubeconfig: b.saKubeconfig,
		Name: provisionerName, NFSServer: b.nfs.Server, NFSPath: b.nfs.ExportPath, ExportDir: b.exportDir,
		Namespace: provisionerNamespace, Identity: id, Args: args,
		LogPath: filepath.Join(b.scenarioLogDir, id+".log"),
	})
	if err != nil {
		return nil, err
	}
	b.provPid.Store(int64(p.Pid()))
	return p, nil
}

// ensureProvisioner starts the provisioner unless it runs, and waits until
// it is ready.
func (b *bench) ensureProvisioner() error {
	if b.prov != nil {
		return nil
	}
	p, err := b.startProvisioner()
	if err != nil {
		return err
	}
	b.prov = p
	_, err = b.waitReady(p, time.Minute)
	return err
}

func (b *bench) stopProvisioner() {
	if b.prov != nil {
		b.prov.Terminate(10 * time.Second)
		b.prov = nil
		b.provPid.Store(0)
	}
}

// waitReady polls /readyz every 10ms and returns when it answered 200.
func (b *bench) waitReady(p *framework.ProvisionerProcess, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := client.Get("http://" + p.HTTPAddress + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		if p.Exited() {
			return time.Time{}, fmt.Errorf("provisioner exited; log %s", p.LogPath)
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("provisioner not ready within %s (last: %v); log %s", timeout, err, p.LogPath)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sampleRSS keeps the peak VmRSS of the current provisioner, every 20ms.
func (b *bench) sampleRSS(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pid := b.provPid.Load()
		if pid == 0 {
			continue
		}
		if rss, err := residentBytes(int(pid)); err == nil {
			for {
				peak := b.peakRSS.Load()
				if rss <= peak || b.peakRSS.CompareAndSwap(peak, rss) {
					break
				}
			}
		}
	}
}

func residentBytes(pid int) (uint64, error) { return procStatus(pid, "VmRSS") }

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// profile saves a CPU profile of the provisioner over the next seconds.
func (b *bench) profile(p *framework.ProvisionerProcess, name string, seconds int) func() {
	if !b.o.profile {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.PprofAddress, seconds)
		if err := download(url, filepath.Join(b.o.out, name+".cpu.pprof")); err != nil {
			fmt.Fprintln(os.Stderr, "bench: profile:", err)
		}
	}()
	return func() { <-done }
}

func download(url, path string) error {
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// parallel runs f(i) for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(n, workers int, f func(i int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func claimName(i int) string { return fmt.Sprintf("c-%05d", i) }

func newClaim(ns, name string) *v1.PersistentVolumeClaim {
	class := className
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func (b *bench) createNamespace(ns string) error {
	_, err := b.admin.CoreV1().Namespaces().Create(b.ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	return err
}

// createClaim creates one claim of our class and records when it was sent.
func (b *bench) createClaim(ns string, i int) error {
	name := claimName(i)
	b.obs.markCreated(ns, name, time.Now())
	_, err := b.admin.CoreV1().PersistentVolumeClaims(ns).Create(b.ctx, newClaim(ns, name), metav1.CreateOptions{})
	return err
}

// release deletes the n claims of ns at once and waits until their PVs are
// gone; it returns the time that took and checks that every directory was
// archived (the default class archives).
func (b *bench) release(ns string, n int) (time.Duration, string, error) {
	cpu := b.takeCPU()
	start := time.Now()
	err := parallel(n, 64, func(i int) error {
		err := b.admin.CoreV1().PersistentVolumeClaims(ns).Delete(b.ctx, claimName(i), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, "", err
	}
	if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all PVs deleted", func(c nsCounts) bool { return c.pvsGone >= n }); err != nil {
		return 0, "", err
	}
	took := b.obs.counts(ns).lastPVGone.Sub(start)
	entries, err := os.ReadDir(b.exportDir)
	if err != nil {
		return 0, "", err
	}
	live, archived := 0, 0
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Name(), ns+"-"):
			live++
		case strings.HasPrefix(e.Name(), "archived-"+ns+"-"):
			archived++
		}
	}
	if live != 0 || archived != n {
		return took, "", fmt.Errorf("after releasing %s: %d directories left unarchived, %d archived, want 0 and %d", ns, live, archived, n)
	}
	use, other := cpuUse(cpu, b.takeCPU())
	if other > disturbed {
		use += fmt.Sprintf(" (DISTURBED: %.0f%% of the CPU time went to other processes)", 100*other)
	}
	return took, use, nil
}

// requestsSince waits until the provisioner has been quiet in the audit log
// for a second and counts its requests since from.
func (b *bench) requestsSince(from time.Time) (requestCounts, error) {
	var last int
	for i := 0; ; i++ {
		time.Sleep(time.Second)
		counts, err := countRequests(b.auditLog, from, time.Now().Add(-500*time.Millisecond))
		if err != nil {
			return nil, err
		}
		// Lease renewals go on forever: quiet means fewer than 3 a second.
		if i > 0 && counts.total()-last < 3 || i > 30 {
			return counts, nil
		}
		last = counts.total()
	}
}

// runFloor: a bare client with the provisioner's default client settings
// (QPS, burst, workers, content type) and credentials creates N PVs like
// the provisioner's, as fast as it can.
func (b *bench) runFloor() error {
	step(fmt.Sprintf("Floor: a bare client creating %d PVs at %d QPS / %d burst with %d workers, %d runs",
		b.o.n, config.DefaultKubeAPIQPS, config.DefaultKubeAPIBurst, config.DefaultWorkers, b.o.floorRuns))
	var runs []time.Duration
	for r := range b.o.floorRuns {
		cfg, err := clientcmd.BuildConfigFromFlags("", b.saKubeconfig)
		if err != nil {
			return err
		}
		cfg.QPS, cfg.Burst = config.DefaultKubeAPIQPS, config.DefaultKubeAPIBurst
		cfg.UserAgent = "bench-floor"
		if b.o.floorProtobuf {
			cfg.ContentType = "application/vnd.kubernetes.protobuf"
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		start := time.Now()
		err = parallel(b.o.n, config.DefaultWorkers, func(i int) error {
			_, err := client.CoreV1().PersistentVolumes().Create(b.ctx, floorPV(r, i, b.nfs.Server, b.nfs.ExportPath), metav1.CreateOptions{})
			return err
		})
		took := time.Since(start)
		if err != nil {
			return err
		}
		runs = append(runs, took)
		fmt.Printf("    run %d: %s\n", r+1, took.Round(time.Millisecond))
		if err := parallel(b.o.n, 64, func(i int) error {
			return b.admin.CoreV1().PersistentVolumes().Delete(b.ctx, fmt.Sprintf("floor-%d-%05d", r, i), metav1.DeleteOptions{})
		}); err != nil {
			return err
		}
		for {
			list, err := b.admin.CoreV1().PersistentVolumes().List(b.ctx, metav1.ListOptions{LabelSelector: "bench=floor"})
			if err != nil {
				return err
			}
			if len(list.Items) == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i] < runs[j] })
	b.floorDur = runs[len(runs)/2]
	b.results.Floor = &floorResult{N: b.o.n, Runs: durations(runs), Median: dur(b.floorDur),
		QPS: config.DefaultKubeAPIQPS, Burst: config.DefaultKubeAPIBurst, Workers: config.DefaultWorkers}
	return nil
}

// floorPV is shaped like the provisioner's PVs but belongs to no claim and
// names no provisioner, so nothing acts on it but the PV binder.
func floorPV(run, i int, server, exportPath string) *v1.PersistentVolume {
	name := fmt.Sprintf("floor-%d-%05d", run, i)
	pv := volume(name, server, exportPath+"/"+name, name)
	pv.Labels = map[string]string{"bench": "floor"}
	pv.Spec.StorageClassName = "floor"
	pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimRetain
	return pv
}

func volume(name, server, path, dir string) *v1.PersistentVolume {
	fs := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"nfs.kube-nfs.io/directory": dir, "nfs.kube-nfs.io/on-delete": "archive"},
		},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			VolumeMode:                    &fs,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			StorageClassName:              className,
			PersistentVolumeSource: v1.PersistentVolumeSource{
				NFS: &v1.NFSVolumeSource{Server: server, Path: path},
			},
		},
	}
}

// runCold: N claims pending (already annotated by the PV controller), then
// the provisioner starts; time until all are Bound. Then they are released.
func (b *bench) runCold() error {
	const ns = "cold"
	n := b.o.n
	step(fmt.Sprintf("Cold start: %d pending claims, then the provisioner starts", n))
	b.stopProvisioner()
	if err := b.createNamespace(ns); err != nil {
		return err
	}
	if err := parallel(n, 64, func(i int) error { return b.createClaim(ns, i) }); err != nil {
		return err
	}
	if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "claims annotated by the PV controller", func(c nsCounts) bool { return c.annotated >= n }); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let the control plane settle
	load := loadAverage()

	b.peakRSS.Store(0)
	cpu := b.takeCPU()
	start := time.Now()
	p, err := b.startProvisioner()
	if err != nil {
		return err
	}
	b.prov = p
	wait := b.profile(p, "cold", 8)
	if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all claims Bound", func(c nsCounts) bool { return c.bound >= n }); err != nil {
		return err
	}
	wait()
	res, reqs, err := b.provisioned(scenarioResult{Name: "cold start", N: n, Load: load}, ns, start, cpu, true)
	if err != nil {
		return err
	}
	res.FloorRatio = b.floorRatio(res.AllPVs)
	fmt.Printf("    all Bound %s after start, all PVs %s, %.2f requests/claim (%s)\n", res.AllBound, res.AllPVs, res.RequestsPerClaim, reqs)

	return b.releaseAll(ns, n, res)
}

// runBurst: N claims created at once against a ready provisioner.
func (b *bench) runBurst() error {
	const ns = "burst"
	n := b.o.n
	step(fmt.Sprintf("Burst: %d claims created at once against a ready provisioner", n))
	if err := b.ensureProvisioner(); err != nil {
		return err
	}
	if err := b.createNamespace(ns); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	load := loadAverage()
	b.peakRSS.Store(0)
	wait := b.profile(b.prov, "burst", 8)
	cpu := b.takeCPU()
	start := time.Now()
	if err := parallel(n, 64, func(i int) error { return b.createClaim(ns, i) }); err != nil {
		return err
	}
	created := time.Since(start)
	if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all claims Bound", func(c nsCounts) bool { return c.bound >= n }); err != nil {
		return err
	}
	wait()
	res, reqs, err := b.provisioned(scenarioResult{Name: "burst", N: n, Load: load, CreatedIn: dur(created)}, ns, start, cpu, false)
	if err != nil {
		return err
	}
	res.FloorRatio = b.floorRatio(res.AllPVs)
	fmt.Printf("    created in %s, all Bound %s after the first, p50 %s p99 %s, %.2f requests/claim (%s)\n",
		res.CreatedIn, res.AllBound, res.P50, res.P99, res.RequestsPerClaim, reqs)

	return b.releaseAll(ns, n, res)
}

// runSteady: claims at a fixed rate, each create on its own goroutine so a
// slow request doesn't delay the schedule.
func (b *bench) runSteady() error {
	const ns = "steady"
	n := int(b.o.rate * b.o.steadyFor.Seconds())
	step(fmt.Sprintf("Steady: %g claims/s for %s (%d claims)", b.o.rate, b.o.steadyFor, n))
	if err := b.ensureProvisioner(); err != nil {
		return err
	}
	if err := b.createNamespace(ns); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	load := loadAverage()
	b.peakRSS.Store(0)
	wait := b.profile(b.prov, "steady", int(min(b.o.steadyFor, 50*time.Second).Seconds()))
	defer wait()
	cpu := b.takeCPU()
	start := time.Now()
	if err := b.createAtRate(ns, n, start); err != nil {
		return err
	}
	if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all claims Bound", func(c nsCounts) bool { return c.bound >= n }); err != nil {
		return err
	}
	res, reqs, err := b.provisioned(scenarioResult{Name: fmt.Sprintf("steady %g/s", b.o.rate), N: n, Load: load}, ns, start, cpu, false)
	if err != nil {
		return err
	}
	fmt.Printf("    p50 %s p99 %s max %s, %.2f requests/claim (%s)\n", res.P50, res.P99, res.Max, res.RequestsPerClaim, reqs)

	return b.releaseAll(ns, n, res)
}

// provisioned completes res for a scenario whose claims in ns are all Bound:
// times since start, CPU since cpu, latencies (from start when fromStart,
// the provisioner's start in a cold start, else from each claim's creation),
// the provisioner's requests and peak memory.
func (b *bench) provisioned(res scenarioResult, ns string, start time.Time, cpu cpuSnapshot, fromStart bool) (scenarioResult, requestCounts, error) {
	c := b.obs.counts(ns)
	res.AllBound, res.AllPVs = dur(c.lastBound.Sub(start)), dur(c.lastPVAdd.Sub(start))
	res.setCPU(cpu, b.takeCPU())
	res.LatencyFrom = "claim creation"
	if fromStart {
		res.LatencyFrom = "provisioner start"
	}
	samples := b.obs.samples(ns)
	res.setLatencies(samples, start, fromStart)
	if !fromStart {
		res.points = toPoints(samples, start)
	}
	reqs, err := b.requestsSince(start)
	if err != nil {
		return res, nil, err
	}
	res.setRequests(reqs, res.N)
	res.PeakRSS = b.peakRSS.Load()
	return res, reqs, nil
}

// floorRatio is how many times the floor's time a batch of PVs took; 0
// when the floor did not run.
func (b *bench) floorRatio(allPVs dur) float64 {
	if b.floorDur == 0 {
		return 0
	}
	return float64(allPVs) / float64(b.floorDur)
}

// releaseAll releases the n claims of a scenario, records in res how long
// that took, its CPU and the provisioner's requests, and adds res to the
// results.
func (b *bench) releaseAll(ns string, n int, res scenarioResult) error {
	step(fmt.Sprintf("Releasing the %d claims", n))
	start := time.Now()
	took, cpu, err := b.release(ns, n)
	if err != nil {
		return err
	}
	res.Delete, res.DeleteCPU = dur(took), cpu
	reqs, err := b.requestsSince(start)
	if err != nil {
		return err
	}
	res.DeleteRequests = reqs.String()
	res.DeleteRequestsPerClaim = float64(reqs.total()) / float64(n)
	fmt.Printf("    all PVs gone and directories archived in %s, %.2f requests/claim (%s)\n", res.Delete, res.DeleteRequestsPerClaim, reqs)
	b.results.Scenarios = append(b.results.Scenarios, res)
	return nil
}

// createAtRate creates n claims in ns at -rate claims per second from
// start, each on its own goroutine so that a slow request doesn't delay the
// schedule.
func (b *bench) createAtRate(ns string, n int, start time.Time) error {
	interval := time.Duration(float64(time.Second) / b.o.rate)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.createClaim(ns, i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// runMemory: OBJECTS bound claims and their PVs, made directly with the
// admin client (as the provisioner and the PV binder would have left them),
// then the provisioner (re)starts: time to ready, and memory once settled.
// A standby replica is measured too.
func (b *bench) runMemory() error {
	const ns = "memory"
	n := b.o.objects
	step(fmt.Sprintf("Memory: %d bound claims and PVs in the cluster, then the provisioner (re)starts", n))
	b.stopProvisioner()
	if err := b.createNamespace(ns); err != nil {
		return err
	}
	start := time.Now()
	var done atomic.Int64
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				fmt.Printf("    %d/%d pairs\n", done.Load(), n)
			}
		}
	}()
	err := parallel(n, 64, func(i int) error {
		defer done.Add(1)
		return b.boundPair(ns, i)
	})
	close(stopProgress)
	if err != nil {
		return err
	}
	fmt.Printf("    created %d pairs in %s\n", n, time.Since(start).Round(time.Second))
	if err := b.obs.waitFor(b.ctx, ns, 5*time.Minute, "all claims Bound", func(c nsCounts) bool { return c.bound >= n }); err != nil {
		return err
	}
	// Let the PV binder's resync and the API server's caches settle.
	time.Sleep(5 * time.Second)

	res := memoryResult{Objects: n, Load: loadAverage()}
	for _, role := range []string{"leader", "standby"} {
		b.peakRSS.Store(0)
		t0 := time.Now()
		p, err := b.startProvisioner()
		if err != nil {
			return err
		}
		ready, err := b.waitReady(p, 2*time.Minute)
		if err != nil {
			return err
		}
		r := memoryRun{Role: role, StartToReady: dur(ready.Sub(t0))}
		time.Sleep(15 * time.Second)
		if r.SettledRSS, err = residentBytes(p.Pid()); err != nil {
			return err
		}
		r.RSSAnon, _ = procStatus(p.Pid(), "RssAnon")
		r.RSSFile, _ = procStatus(p.Pid(), "RssFile")
		r.PeakRSS = b.peakRSS.Load()
		// After the RSS readings: a heap profile with gc=1 collects first,
		// so the heap metrics read next are what is live.
		if err := download(fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", p.PprofAddress), filepath.Join(b.o.out, "memory-"+role+".heap.pprof")); err != nil {
			return err
		}
		if r.LiveHeap, err = scrapeGauge(p, "go_memstats_heap_alloc_bytes"); err != nil {
			return err
		}
		fmt.Printf("    %s: ready %s after start, RSS %s settled (anon %s, file %s), %s peak, live heap %s\n", role, r.StartToReady, mib(r.SettledRSS), mib(r.RSSAnon), mib(r.RSSFile), mib(r.PeakRSS), mib(r.LiveHeap))
		res.Runs = append(res.Runs, r)
		if role == "leader" {
			b.prov = p
		} else {
			p.Terminate(10 * time.Second)
			b.provPid.Store(int64(b.prov.Pid()))
		}
	}
	b.results.Memory = &res
	return nil
}

// boundPair creates claim i of ns and its PV, bound to each other in spec
// and status, so the PV binder has nothing left to write.
func (b *bench) boundPair(ns string, i int) error {
	name := claimName(i)
	pvName := "pv-" + ns + "-" + name
	dir := ns + "-" + name + "-" + pvName
	pvc := newClaim(ns, name)
	pvc.Spec.VolumeName = pvName
	pvc.Annotations = map[string]string{
		"pv.kubernetes.io/bind-completed":               "yes",
		"pv.kubernetes.io/bound-by-controller":          "yes",
		annStorageProvisioner:                           provisionerName,
		"volume.beta.kubernetes.io/storage-provisioner": provisionerName,
	}
	claims := b.admin.CoreV1().PersistentVolumeClaims(ns)
	pvc, err := claims.Create(b.ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pv := volume(pvName, b.nfs.Server, b.nfs.ExportPath+"/"+dir, dir)
	pv.Annotations["pv.kubernetes.io/provisioned-by"] = provisionerName
	pv.Annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
	pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion}
	pv, err = b.admin.CoreV1().PersistentVolumes().Create(b.ctx, pv, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pv.Status.Phase = v1.VolumeBound
	if _, err := b.admin.CoreV1().PersistentVolumes().UpdateStatus(b.ctx, pv, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
		return err
	}
	pvc.Status.Phase = v1.ClaimBound
	pvc.Status.AccessModes = pvc.Spec.AccessModes
	pvc.Status.Capacity = v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}
	if _, err := claims.UpdateStatus(b.ctx, pvc, metav1.UpdateOptions{}); err != nil {
		if !apierrors.IsConflict(err) {
			return err
		}
		// The PV binder got there first (it may have marked the claim Lost
		// before the PV existed); it sets Bound itself on its next sync.
	}
	return nil
}

// scrapeGauge reads one unlabelled gauge from the provisioner's /metrics.
func scrapeGauge(p *framework.ProvisionerProcess, name string) (uint64, error) {
	code, body, err := p.Get(context.Background(), "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: HTTP %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscanf(v, "%g", &f); err != nil {
				return 0, err
			}
			return uint64(f), nil
		}
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func describeMachine() string {
	cpu := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb uint64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s RAM, Kubernetes %s", numCPU(), cpu, mem, framework.KubernetesVersion)
}

func numCPU() int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "processor\t:")
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

var errTargets = errors.New("some targets were missed")
