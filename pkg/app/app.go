// Package app wires the provisioner into a process: API clients, informers,
// the library's controller, leader election and the HTTP server.
package app

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
	libmetrics "sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller/metrics"

	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/incumbent"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/placement"
	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
	"github.com/kube-nfs/nfs-provisioner/pkg/resize"
	"github.com/kube-nfs/nfs-provisioner/pkg/retention"
	"github.com/kube-nfs/nfs-provisioner/pkg/router"
	"github.com/kube-nfs/nfs-provisioner/pkg/usage"
	"github.com/kube-nfs/nfs-provisioner/pkg/version"
)

// Run provisions until ctx is cancelled (nil error) or something fails.
// Standbys serve health and metrics too.
func Run(ctx context.Context, o config.Options) error {
	logger := klog.FromContext(ctx)
	set, err := o.ExportList()
	if err != nil {
		return err
	}
	logger.Info("Starting", "version", version.String(), "provisioner", o.ProvisionerName, "exports", set.All())
	if _, set := os.LookupEnv("GOGC"); !set {
		// Most of the heap is the informers' caches, which live as long as
		// the process: collecting at 1.5x of them rather than Go's 2x keeps
		// a replica with 10,000 volumes within 64 MiB, for little CPU.
		debug.SetGCPercent(defaultGCPercent)
	}

	fss, err := mountedExports(ctx, logger, set, o.FSTimeout)
	if err != nil {
		return err
	}
	if err := distinctExports(ctx, logger, set, fss, o.FSTimeout); err != nil {
		return err
	}

	restCfg, err := restConfig(o)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the API client: %w", err)
	}

	names := make([]string, 0, len(fss))
	ready := make([]exportReadiness, 0, len(fss))
	for _, e := range set.All() {
		names = append(names, e.Name)
		ready = append(ready, exportReadiness{e.Name, newReadiness(fss[e.Name], readyMaxAge, readyTimeout)})
	}
	m := metrics.New(names...)
	for _, r := range ready {
		m.RegisterExport(r.name, fss[r.name], r.ready.check, readyTimeout, logger)
	}
	lib := libmetrics.New("controller")
	m.Registry.MustRegister(
		lib.PersistentVolumeClaimProvisionTotal, lib.PersistentVolumeClaimProvisionFailedTotal,
		lib.PersistentVolumeClaimProvisionDurationSeconds, lib.PersistentVolumeDeleteTotal,
		lib.PersistentVolumeDeleteFailedTotal, lib.PersistentVolumeDeleteDurationSeconds,
	)

	// Events get a clientset, and so a client-side rate limit, of their own:
	// see withEventSink.
	eventClient, err := kubernetes.NewForConfig(rest.CopyConfig(restCfg))
	if err != nil {
		return fmt.Errorf("creating the event client: %w", err)
	}
	w, err := newController(logger, client, eventClient.CoreV1(), o, set, fss, m, lib)
	if err != nil {
		return err
	}

	health := leaderelection.NewLeaderHealthzAdaptor(o.LeaderElectRenewDeadline * 2)
	srv, err := newServer(o.HTTPAddress, m, ready, w.synced, health, o.PprofServeAddress())
	if err != nil {
		return err
	}
	go srv.serve(logger)
	defer srv.shutdown(logger)

	// The informers and the controller outlive SIGTERM (ctx), so that the
	// operations in flight can finish; they stop when Run returns. Whether
	// the controller acts is the actor's decision (see handover.go).
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.factory.Start(runCtx.Done())
	go w.resizeClaims.Run(runCtx.Done())
	w.events.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
	defer func() {
		cancel()
		w.factory.Shutdown()
		w.events.Shutdown()
	}()
	go func() {
		// The first lists leave garbage several times the size of what the
		// caches keep; hand it back at once rather than over minutes.
		if cache.WaitForCacheSync(runCtx.Done(), w.synced) {
			debug.FreeOSMemory()
		}
	}()
	go w.ctrl.Run(runCtx)

	identity := o.LeaderElectIdentity
	if identity == "" {
		host, _ := os.Hostname()
		identity = host
	}
	// A suffix keeps two processes with one name (a restarted pod, a
	// test) from both believing they lead.
	identity += "_" + string(uuid.NewUUID())[:8]
	namespace := o.LeaderElectNamespace
	if namespace == "" {
		namespace = inClusterNamespace()
	}
	checkClient, err := incumbentClient(restCfg)
	if err != nil {
		return err
	}
	interval := o.LeaderElectRetryPeriod
	if interval <= 0 {
		interval = config.DefaultRetryPeriod
	}
	a := &actor{
		logger:     logger,
		gate:       w.gate,
		informers:  w.switched,
		incumbent:  incumbent.NewChecker(checkClient.CoreV1(), namespace, o.LeaseName(), identity, time.Now),
		interval:   interval,
		grace:      o.ShutdownGracePeriod,
		metrics:    m,
		workers:    o.Workers,
		leaderOnly: w.leaderOnly,
	}
	if !o.LeaderElect {
		a.act(runCtx, ctx)
		return nil
	}

	// The Lease is given up only once the operations in flight have
	// finished: the elector runs on a context that SIGTERM does not end,
	// and releases the Lease when it is cancelled below.
	electorCtx, release := context.WithCancel(context.WithoutCancel(ctx))
	defer release()
	var mu sync.Mutex
	var acting chan struct{}
	lead := func(leadCtx context.Context) {
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			return
		}
		done := make(chan struct{})
		acting = done
		mu.Unlock()
		defer close(done)
		a.act(leadCtx, ctx)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-electorCtx.Done():
			return
		}
		mu.Lock()
		done := acting
		mu.Unlock()
		if done != nil {
			<-done
		}
		release()
	}()

	elector, err := newElector(o, restCfg, namespace, identity, lead, logger)
	if err != nil {
		return err
	}
	health.SetLeaderElection(elector)
	elector.Run(electorCtx)
	if ctx.Err() == nil {
		return errors.New("lost the leader Lease; exiting so that a fresh process can stand by")
	}
	return nil
}

// incumbentClient is the client that reads the incumbent's Endpoints
// record: rate-limited apart from provisioning, like the Lease's, and
// without the API server's deprecation warning for v1 Endpoints (1.33+),
// which every reading would log.
func incumbentClient(restCfg *rest.Config) (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(restCfg)
	cfg.QPS, cfg.Burst = 5, 10
	cfg.WarningHandler = rest.NoWarnings{}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the client that reads the incumbent's leader record: %w", err)
	}
	return client, nil
}

// wiring is the library's controller and the informers it runs on.
type wiring struct {
	ctrl    *controller.ProvisionController
	factory informers.SharedInformerFactory
	// synced reports whether every informer has completed its first list.
	synced func() bool
	// gate and switched decide whether the controller acts.
	gate     *gate
	switched []*switchedInformer
	// resize runs while the controller acts, on its own claim informer;
	// events carries its Events and the usage scanner's.
	resize       *resize.Controller
	resizeClaims cache.SharedIndexInformer
	events       record.EventBroadcaster
	// leaderOnly is what runs while the controller acts: resize, and the
	// usage scanner and archive retention when on.
	leaderOnly together
}

// mountedExports opens every export and checks, all at once, that it is
// mounted and writable. One that isn't is logged, and its claims fail until
// it is; start-up fails only if none is.
func mountedExports(ctx context.Context, logger klog.Logger, set *exports.Set, timeout time.Duration) (map[string]*exportfs.FS, error) {
	all := set.All()
	fss := make(map[string]*exportfs.FS, len(all))
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, e := range all {
		fs := exportfs.New(e.Dir, timeout)
		fss[e.Name] = fs
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fs.CheckWritable(ctx); err != nil {
				errs[i] = fmt.Errorf("NFS export %s: %w", e, err)
			}
		}()
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			if len(all) > 1 {
				logger.Error(err, "Export not writable; its claims and volumes fail until it is")
			}
		}
	}
	if failed == len(all) {
		return nil, errors.Join(errs...)
	}
	return fss, nil
}

// newController builds the library's controller around the router and one
// provisioner per export, on informers that the caller starts. The library
// records Events through events (client's own when nil).
func newController(logger klog.Logger, client kubernetes.Interface, events corev1client.EventsGetter, o config.Options, set *exports.Set, fss map[string]*exportfs.FS, m *metrics.Metrics, lib libmetrics.Metrics) (*wiring, error) {
	// Informers start on standbys too, so a takeover only has to start the
	// workers. They keep only what we read (see informers.go).
	factory, claims, volumes := newInformers(client, newCacheFilter(o.ProvisionerName, set))
	classes := factory.Storage().V1().StorageClasses()
	nodes := factory.Core().V1().Nodes()
	if err := volumes.AddIndexers(provisioner.Indexers(set)); err != nil {
		return nil, fmt.Errorf("indexing PersistentVolumes: %w", err)
	}

	backends := map[string]router.Backend{}
	placed := map[string]placement.Export{}
	var provs []*provisioner.Provisioner
	for _, e := range set.All() {
		fs := fss[e.Name]
		prov := provisioner.New(provisioner.Config{
			Name:       e.Name,
			Server:     e.Server,
			ExportPath: e.Path,
			Export:     fs,
			Volumes:    volumes.GetIndexer(),
			Classes:    classes.Lister(),
			Metrics:    m,
			Clone:      &provisioner.CloneConfig{Client: client, Root: fs.Root()},
		})
		provs = append(provs, prov)
		backends[e.Name] = prov
		placed[e.Name] = fs
	}
	placer := placement.New(placement.Config{
		Exports: placed,
		Committed: func(name string) (uint64, error) {
			pvs, err := provisioner.VolumesOn(volumes.GetIndexer(), name)
			var sum uint64
			for _, pv := range pvs {
				q := pv.Spec.Capacity[v1.ResourceStorage]
				// Saturating: a PV claiming exabytes must not wrap the sum.
				sum += min(uint64(max(q.Value(), 0)), math.MaxUint64-sum)
			}
			return sum, err
		},
	})
	prov := router.New(router.Config{Exports: set, Backends: backends, Placer: placer, Metrics: m, IsRefusal: provisioner.IsRefusal})
	if _, err := volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { volumeSeen(prov, obj) },
		UpdateFunc: func(_, obj any) { volumeSeen(prov, obj) },
	}); err != nil {
		return nil, fmt.Errorf("watching PersistentVolumes: %w", err)
	}
	informersSynced := []cache.InformerSynced{claims.HasSynced, volumes.HasSynced, classes.Informer().HasSynced, nodes.Informer().HasSynced}
	g := newGate(prov, logger)
	switchedClaims := &switchedInformer{SharedIndexInformer: claims}
	switchedVolumes := &switchedInformer{SharedIndexInformer: volumes}

	if events == nil {
		events = client.CoreV1()
	}
	// Every option of the library in one place. Leader election is ours, not
	// the library's: it exits the process when leadership is lost and can't
	// release the Lease on shutdown.
	ctrl := controller.NewProvisionController(logger, withPVWrites(withEventSink(client, events), g), o.ProvisionerName, g,
		controller.LeaderElection(false),
		controller.Threadiness(o.Workers),
		controller.ClaimsInformer(switchedClaims),
		controller.VolumesInformer(switchedVolumes),
		controller.ClassesInformer(classes.Informer()),
		controller.NodesLister(nodes.Lister()),
		// Our HTTP server serves the library's metrics; it must not open a port.
		controller.MetricsPort(0),
		controller.MetricsInstance(lib),
		// Save PVs through a retrying queue: the blocking store would, after a
		// few failed attempts, call Delete on a directory that may hold data.
		controller.CreateProvisionedPVLimiter(workqueue.DefaultControllerRateLimiter()),
		// Per-item back-off only: the library's default also caps all retries
		// at 10 per second, which throttles recovery after an export outage.
		controller.RateLimiter(workqueue.NewItemExponentialFailureRateLimiter(time.Second, 5*time.Minute)),
		// Never give up on a claim or PV, as CSI external-provisioner: past
		// the library's default 15 failures it stops retrying (and forgets a
		// copy running in the background) until a resync, so a long hang of
		// the export or a long clone would leave claims waiting for it. The
		// back-off above bounds the cost of retrying forever.
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
		controller.ProvisionTimeout(2*o.FSTimeout),
		controller.DeletionTimeout(10*o.FSTimeout), // one attempt of a huge removal; --fs-timeout bounds each of its steps
	)

	resizeClaims := newResizeClaimInformer(client)
	informersSynced = append(informersSynced, resizeClaims.HasSynced)
	// A scheme of our own for the recorder: the library adds types to
	// client-go's global one, which would race with our reads.
	eventScheme := runtime.NewScheme()
	if err := v1.AddToScheme(eventScheme); err != nil {
		return nil, fmt.Errorf("registering core types for Events: %w", err)
	}
	broadcaster := record.NewBroadcaster()
	recorder := broadcaster.NewRecorder(eventScheme, v1.EventSource{Component: "nfs-provisioner"})
	resizer := resize.New(resize.Config{
		ProvisionerName: o.ProvisionerName,
		Client:          client,
		Claims:          resizeClaims,
		Classes:         classes.Lister(),
		Recorder:        recorder,
		Metrics:         m,
		Workers:         resizeWorkers,
		Feasibility:     placement.Feasibility{Placer: placer, Exports: set, Classes: classes.Lister()},
	})

	leaderOnly := together{resizer}
	// Usage scans and archive sizes share one rate of filesystem calls;
	// each export has its own loop in both, so a hung one stalls only its
	// own.
	scanRate := usage.NewRate(o.UsageScanRate)
	scanned := map[string]usage.Export{}
	var archived []retention.Export
	for i, e := range set.All() {
		scanned[e.Name] = fss[e.Name]
		archived = append(archived, retention.Export{Name: e.Name, Archives: provs[i], Sizes: fss[e.Name]})
	}
	if o.UsageScanInterval > 0 {
		pvs := volumes.GetIndexer()
		scanner := usage.New(usage.Config{
			Exports: scanned,
			Volumes: func() []usage.Volume {
				return usage.VolumesOf(listPVs(pvs), o.ProvisionerName, set)
			},
			Interval: o.UsageScanInterval,
			Wait:     scanRate,
			Recorder: recorder,
		})
		m.Registry.MustRegister(scanner.Collector())
		leaderOnly = append(leaderOnly, scanner)
	}
	remover := retention.New(retention.Config{Exports: archived, Wait: scanRate, Retention: o.ArchiveRetention})
	m.Registry.MustRegister(remover.Collector())
	leaderOnly = append(leaderOnly, remover)

	synced := func() bool {
		for _, s := range informersSynced {
			if !s() {
				return false
			}
		}
		return true
	}
	return &wiring{ctrl: ctrl, factory: factory, synced: synced, gate: g, switched: []*switchedInformer{switchedClaims, switchedVolumes},
		resize: resizer, resizeClaims: resizeClaims, events: broadcaster, leaderOnly: leaderOnly}, nil
}

// listPVs returns the PVs in the informer's cache.
func listPVs(store cache.Store) []*v1.PersistentVolume {
	objs := store.List()
	out := make([]*v1.PersistentVolume, 0, len(objs))
	for _, obj := range objs {
		if pv, ok := obj.(*v1.PersistentVolume); ok {
			out = append(out, pv)
		}
	}
	return out
}

// resizeWorkers is the number of claims expanded at once: each expansion is
// a few API writes, and expansions are rare.
const resizeWorkers = 4

// defaultGCPercent is the garbage collector's target unless GOGC is set.
const defaultGCPercent = 50

// readyTimeout bounds /readyz and usage reads; kubelet's probes time out in
// seconds, not in --fs-timeout. Below the chart's 5 s probe timeout, so a
// hung export fails the probe with a 503 saying why rather than a timeout.
const readyTimeout = 4 * time.Second

// NewClient is an API client with the process's settings, for the report
// command.
func NewClient(o config.Options) (kubernetes.Interface, error) {
	cfg, err := restConfig(o)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	return client, nil
}

func restConfig(o config.Options) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading API credentials (--kubeconfig %q): %w", o.Kubeconfig, err)
	}
	cfg.QPS = float32(o.KubeAPIQPS)
	cfg.Burst = o.KubeAPIBurst
	// Protobuf, as the controller-manager speaks: decoding the PV and claim
	// watches costs a fraction of JSON's CPU here, and the API server encodes
	// each watch event once for all protobuf watchers instead of also in
	// JSON for us. JSON stays accepted for anything served without protobuf.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	cfg.UserAgent = "nfs-provisioner/" + version.Version
	return cfg, nil
}

func newElector(o config.Options, restCfg *rest.Config, namespace, identity string, lead func(context.Context), logger klog.Logger) (*leaderelection.LeaderElector, error) {
	// Lease renewals get a client of their own so a burst of provisioning
	// can't starve them under the client-side rate limit.
	leCfg := rest.CopyConfig(restCfg)
	leCfg.QPS, leCfg.Burst = 5, 10
	leClient, err := kubernetes.NewForConfig(leCfg)
	if err != nil {
		return nil, fmt.Errorf("creating the leader-election client: %w", err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: o.LeaseName(), Namespace: namespace},
		Client:     leClient.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	logger.Info("Waiting for the leader Lease", "lease", namespace+"/"+o.LeaseName(), "identity", identity)
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.LeaderElectLeaseDuration,
		RenewDeadline:   o.LeaderElectRenewDeadline,
		RetryPeriod:     o.LeaderElectRetryPeriod,
		ReleaseOnCancel: true,
		Name:            o.LeaseName(),
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: lead,
			OnStoppedLeading: func() { logger.Info("No longer the leader") },
			OnNewLeader:      func(id string) { logger.Info("Leader is", "identity", id) },
		},
	})
}

func inClusterNamespace() string {
	if data, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(data) > 0 {
		return string(data)
	}
	return "default"
}

func volumeSeen(p *router.Router, obj any) {
	if pv, ok := obj.(*v1.PersistentVolume); ok {
		p.VolumeAdded(pv)
	}
}
