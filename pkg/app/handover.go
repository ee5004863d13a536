package app

import (
	"context"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/incumbent"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// The library's controller runs once per process and cannot be paused: its
// Run returns at once when its context ends and leaves the operations in
// flight running (with that context cancelled). So the controller runs on
// a context of its own for the whole process, and what lets it act is:
//
//   - its event handlers, connected to the shared informers only while this
//     replica may act (connecting replays every cached object, so nothing
//     that arrived meanwhile is missed); and
//   - a gate around the provisioner, which ignores operations while closed
//     and counts each one from Provision or Delete until the library's
//     write of its PV (create or delete) returns.
//
// Stopping to act closes the gate, disconnects the handlers and waits
// until the count is zero, so a standby that takes over next never works
// on a claim or PV this replica is still working on. Volume expansion,
// usage scans and archive retention are simpler: they run only while
// acting, and stopping them waits for their steps in flight.

// cloneCanceller is what pause needs of a provisioner that copies in the
// background.
type cloneCanceller interface{ CancelClones(ctx context.Context) }

// gate lets operations through while open and tracks them.
type gate struct {
	inner  controller.Provisioner
	logger klog.Logger

	mu      sync.Mutex
	open    bool
	reason  string
	running int
	// Operations whose Provision or Delete succeeded and that wait for the
	// library to create or delete their PV, by operation and PV name.
	awaiting map[string]int
	// idle is closed, and replaced, whenever running drops to zero.
	idle chan struct{}
}

var _ controller.Provisioner = (*gate)(nil)

func newGate(inner controller.Provisioner, logger klog.Logger) *gate {
	return &gate{inner: inner, logger: logger, reason: "not acting yet", awaiting: map[string]int{}, idle: make(chan struct{})}
}

// Provision runs the inner Provision if the gate is open.
func (g *gate) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if reason, ok := g.begin(metrics.OpProvision, opts.PVName); !ok {
		// Ignored, not failed: no Event, no retry here; whoever acts next
		// sees the claim when its handlers connect.
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: reason}
	}
	pv, state, err := g.inner.Provision(ctx, opts)
	if err != nil || pv == nil {
		g.settle(metrics.OpProvision, opts.PVName, err)
	} else {
		g.await(metrics.OpProvision, pv.Name)
	}
	return pv, state, err
}

// Delete runs the inner Delete if the gate is open.
func (g *gate) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	if reason, ok := g.begin(metrics.OpDelete, pv.Name); !ok {
		return &controller.IgnoredError{Reason: reason}
	}
	err := g.inner.Delete(ctx, pv)
	if err != nil {
		g.settle(metrics.OpDelete, pv.Name, err)
	} else {
		g.await(metrics.OpDelete, pv.Name)
	}
	return err
}

// setOpen opens the gate, or closes it for reason.
func (g *gate) setOpen(open bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open, g.reason = open, reason
}

func (g *gate) begin(op, pv string) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		return g.reason, false
	}
	g.running++
	// The handover test reads these to prove that no two replicas work on
	// one PV at once.
	g.logger.V(4).Info("Operation started", "operation", op, "PV", pv)
	return "", true
}

func (g *gate) await(op, pv string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.awaiting[op+"/"+pv]++
}

// written is called when the library's create or delete of a PV returns.
func (g *gate) written(op, pv string, err error) {
	g.mu.Lock()
	key := op + "/" + pv
	n := g.awaiting[key]
	if n == 0 {
		// A retry of the library's own, not one of our operations.
		g.mu.Unlock()
		return
	}
	if n == 1 {
		delete(g.awaiting, key)
	} else {
		g.awaiting[key] = n - 1
	}
	g.mu.Unlock()
	g.settle(op, pv, err)
}

func (g *gate) settle(op, pv string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	g.logger.V(4).Info("Operation finished", "operation", op, "PV", pv, "err", err)
	if g.running == 0 {
		close(g.idle)
		g.idle = make(chan struct{})
	}
}

// inFlight is the number of operations begun and not finished.
func (g *gate) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}

// wait returns when no operation runs, or when ctx ends, with the number
// still running.
func (g *gate) wait(ctx context.Context) int {
	for {
		g.mu.Lock()
		n, idle := g.running, g.idle
		g.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return g.inFlight()
		}
	}
}

// withPVWrites tells g when the library's create or delete of a PV returns:
// that write ends the operation.
func withPVWrites(client kubernetes.Interface, g *gate) kubernetes.Interface {
	return pvWriteClient{Interface: client, core: pvWriteCore{CoreV1Interface: client.CoreV1(), g: g}}
}

type pvWriteClient struct {
	kubernetes.Interface
	core pvWriteCore
}

func (c pvWriteClient) CoreV1() corev1client.CoreV1Interface { return c.core }

type pvWriteCore struct {
	corev1client.CoreV1Interface
	g *gate
}

func (c pvWriteCore) PersistentVolumes() corev1client.PersistentVolumeInterface {
	return pvWrites{PersistentVolumeInterface: c.CoreV1Interface.PersistentVolumes(), g: c.g}
}

type pvWrites struct {
	corev1client.PersistentVolumeInterface
	g *gate
}

func (p pvWrites) Create(ctx context.Context, pv *v1.PersistentVolume, opts metav1.CreateOptions) (*v1.PersistentVolume, error) {
	created, err := p.PersistentVolumeInterface.Create(ctx, pv, opts)
	p.g.written(metrics.OpProvision, pv.Name, err)
	return created, err
}

func (p pvWrites) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	err := p.PersistentVolumeInterface.Delete(ctx, name, opts)
	p.g.written(metrics.OpDelete, name, err)
	return err
}

// switchedInformer holds the event handlers the library adds and connects
// them to the shared informer only between connect and disconnect.
type switchedInformer struct {
	cache.SharedIndexInformer

	mu       sync.Mutex
	handlers []*switchedHandler
}

type switchedHandler struct {
	handler cache.ResourceEventHandler
	options cache.HandlerOptions
	reg     cache.ResourceEventHandlerRegistration
}

// HasSynced reports whether the handler is connected and has seen every
// cached object; the library does not ask.
func (h *switchedHandler) HasSynced() bool { return h.reg != nil && h.reg.HasSynced() }

func (s *switchedInformer) AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return s.AddEventHandlerWithOptions(handler, cache.HandlerOptions{})
}

func (s *switchedInformer) AddEventHandlerWithResyncPeriod(handler cache.ResourceEventHandler, resync time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	return s.AddEventHandlerWithOptions(handler, cache.HandlerOptions{ResyncPeriod: &resync})
}

func (s *switchedInformer) AddEventHandlerWithOptions(handler cache.ResourceEventHandler, options cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &switchedHandler{handler: handler, options: options}
	s.handlers = append(s.handlers, h)
	return h, nil
}

// connect registers the handlers: each receives an add for every cached
// object, then the informer's events.
func (s *switchedInformer) connect() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.handlers {
		if h.reg != nil {
			continue
		}
		reg, err := s.SharedIndexInformer.AddEventHandlerWithOptions(h.handler, h.options)
		if err != nil {
			return err
		}
		h.reg = reg
	}
	return nil
}

// disconnect unregisters the handlers.
func (s *switchedInformer) disconnect() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.handlers {
		if h.reg == nil {
			continue
		}
		if err := s.SharedIndexInformer.RemoveEventHandler(h.reg); err != nil {
			return err
		}
		h.reg = nil
	}
	return nil
}

// incumbentChecker reads the incumbent's leader record; incumbent.Checker
// implements it.
type incumbentChecker interface {
	Check(ctx context.Context) (incumbent.Status, error)
	Object() string
}

// runner is a controller that works until its context ends and returns
// once its work in flight has; resize.Controller, usage.Scanner and
// retention.Remover are.
type runner interface {
	Run(ctx context.Context)
}

// together runs several runners as one, returning once all have.
type together []runner

func (t together) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range t {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(ctx)
		}()
	}
	wg.Wait()
}

// actor lets the controller act while this replica may: it leads (or
// leader election is off) and no incumbent is active.
type actor struct {
	logger    klog.Logger
	gate      *gate
	informers []*switchedInformer
	incumbent incumbentChecker
	// interval between two readings of the incumbent's record.
	interval time.Duration
	// grace bounds the wait for operations in flight when stopping.
	grace   time.Duration
	metrics *metrics.Metrics
	workers int
	// leaderOnly, when set, runs exactly while the controller acts:
	// volume expansion, usage scans, archive retention.
	leaderOnly runner
	// stopLeaderOnly ends that run; leaderOnlyDone is closed when it has
	// returned.
	stopLeaderOnly context.CancelFunc
	leaderOnlyDone chan struct{}
}

// act lets the controller act, pausing while an incumbent is active,
// until stop or ctx ends. stop ends it gracefully: no new operation starts
// and those in flight finish, for up to the grace period. ctx ending (the
// Lease lost) ends it without waiting, since another replica may lead.
func (a *actor) act(ctx, stop context.Context) {
	ticker := time.NewTicker(a.interval)
	defer ticker.Stop()
	acting, waiting := false, false
	var waitingFor, lastErr string
	var lastErrLogged time.Time
	defer a.metrics.SetWaitingForIncumbent(false)
	for ctx.Err() == nil && stop.Err() == nil {
		s, err := a.incumbent.Check(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				break
			}
			// Again every minute: nothing is provisioned meanwhile, and a
			// missing RBAC rule must not hide behind one old log line.
			if err.Error() != lastErr || time.Since(lastErrLogged) >= time.Minute {
				a.logger.Error(err, "Cannot tell whether nfs-subdir-external-provisioner runs; not provisioning until it can be read", "acting", acting)
				lastErr, lastErrLogged = err.Error(), time.Now()
			}
			if !acting {
				// Unknown is not gone: wait until a reading succeeds.
				a.metrics.SetWaitingForIncumbent(true)
			}
		case s.Active:
			lastErr = ""
			if acting {
				a.logger.Info("nfs-subdir-external-provisioner leads: pausing", "endpoints", a.incumbent.Object(), "holder", s.Holder)
				a.pause(ctx, "waiting for nfs-subdir-external-provisioner "+s.Holder+" to stop")
				acting = false
			}
			if !waiting || waitingFor != s.Holder {
				a.logger.Info("Waiting for nfs-subdir-external-provisioner to stop before provisioning", "endpoints", a.incumbent.Object(), "holder", s.Holder, "expires", s.Expires)
			}
			waiting, waitingFor = true, s.Holder
			a.metrics.SetWaitingForIncumbent(true)
		default:
			lastErr = ""
			if waiting {
				a.logger.Info("nfs-subdir-external-provisioner no longer leads", "endpoints", a.incumbent.Object(), "holder", s.Holder)
			}
			waiting = false
			a.metrics.SetWaitingForIncumbent(false)
			if !acting {
				if err := a.resume(ctx); err != nil {
					a.logger.Error(err, "Connecting the controller to the informers")
				} else {
					acting = true
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-stop.Done():
		case <-ticker.C:
		}
	}
	if acting {
		a.pause(ctx, "shutting down")
	}
}

func (a *actor) resume(ctx context.Context) error {
	a.gate.setOpen(true, "")
	for _, inf := range a.informers {
		if err := inf.connect(); err != nil {
			a.gate.setOpen(false, "not connected to the informers")
			return err
		}
	}
	if a.leaderOnly != nil {
		// Its own context: pausing ends it, and steps in flight finish
		// unless the Lease is lost (see pause).
		rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.leaderOnly.Run(rctx)
		}()
		a.stopLeaderOnly, a.leaderOnlyDone = stop, done
	}
	a.metrics.SetLeader(true)
	a.logger.Info("Provisioning", "workers", a.workers)
	return nil
}

// pause stops new operations and, unless ctx has ended, waits up to the
// grace period for those in flight.
func (a *actor) pause(ctx context.Context, reason string) {
	a.gate.setOpen(false, reason)
	for _, inf := range a.informers {
		if err := inf.disconnect(); err != nil {
			a.logger.Error(err, "Disconnecting the controller from the informers")
		}
	}
	a.metrics.SetLeader(false)
	leaderOnlyDone := a.leaderOnlyDone
	if a.stopLeaderOnly != nil {
		a.stopLeaderOnly()
		a.stopLeaderOnly, a.leaderOnlyDone = nil, nil
	}
	if c, ok := a.gate.inner.(cloneCanceller); ok {
		// A copy runs past its Provision call: stop it, so the next leader
		// clones from the start; when stopping gracefully, wait for it to
		// release its source (a lost Lease waits for nothing).
		cctx, cancel := context.WithTimeout(ctx, a.grace)
		c.CancelClones(cctx)
		cancel()
	}
	if ctx.Err() != nil {
		// The Lease is lost: no waiting. A resize step still in flight
		// (one API write, bounded) and the next leader's may both land;
		// both write the same sizes, and stale status patches conflict.
		return
	}
	started := time.Now()
	n := a.gate.inFlight()
	a.logger.Info("Stopped provisioning; waiting for operations in flight", "reason", reason, "operations", n, "gracePeriod", a.grace)
	wctx, cancel := context.WithTimeout(ctx, a.grace)
	defer cancel()
	if left := a.gate.wait(wctx); left > 0 {
		a.logger.Error(nil, "Operations still running after the shutdown grace period; handing over anyway", "operations", left, "gracePeriod", a.grace)
		return
	}
	if leaderOnlyDone != nil {
		select {
		case <-leaderOnlyDone:
		case <-wctx.Done():
			a.logger.Error(nil, "A volume expansion step or a usage scan still running after the shutdown grace period; handing over anyway", "gracePeriod", a.grace)
			return
		}
	}
	a.logger.Info("Operations in flight finished", "operations", n, "after", time.Since(started).Round(time.Millisecond))
}
