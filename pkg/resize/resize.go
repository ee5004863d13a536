// Package resize completes the expansion of claims bound to NFS volumes we
// provisioned, by recording the new size on the PV and the claim the way
// kubernetes-csi/external-resizer does.
//
// kube-controller-manager finds no expandable plugin for nfs PVs: it emits
// ExternalExpanding and leaves the claim to an external controller, and
// kubelet and external-resizer ignore non-CSI volumes. external-resizer is
// not embedded: it only resizes through a CSI driver's ControllerExpandVolume
// and pins Kubernetes module versions other than ours. This is a small
// controller of its own following the same status protocol
// (RecoverVolumeExpansionFailure): see decide and Controller.expand.
package resize

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// Names shared with the rest of Kubernetes.
const (
	// AnnProvisionedBy names the provisioner of a PV; PVs the incumbent made
	// carry the same provisioner name, which the migration keeps.
	AnnProvisionedBy = "pv.kubernetes.io/provisioned-by"
	// AnnNodeExpansionNotRequired tells kubelet that no node expansion
	// follows (external-resizer's util.NodeExpansionNotRequired).
	AnnNodeExpansionNotRequired = "volume.kubernetes.io/node-expansion-not-required"
	annBetaStorageClass         = "volume.beta.kubernetes.io/storage-class"
)

// Event reasons, external-resizer's.
const (
	ReasonResizing        = "VolumeResizing"
	ReasonResizeSucceeded = "VolumeResizeSuccessful"
	ReasonResizeFailed    = "VolumeResizeFailed"
)

// Feasibility decides whether a volume may grow to newSize. An error
// refuses the resize: the claim is marked ControllerResizeInfeasible with
// the error as the reason, the PV is left alone, and the user may lower the
// request to recover.
type Feasibility interface {
	Check(ctx context.Context, pv *v1.PersistentVolume, pvc *v1.PersistentVolumeClaim, newSize resource.Quantity) error
}

// AcceptAll is the default Feasibility: NFS subdirectories have no quota,
// so nothing refuses a size yet. A capacity check of the exports plugs in
// here.
type AcceptAll struct{}

// Check accepts every size.
func (AcceptAll) Check(context.Context, *v1.PersistentVolume, *v1.PersistentVolumeClaim, resource.Quantity) error {
	return nil
}

// Config is everything a Controller needs.
type Config struct {
	// ProvisionerName is the name our classes and PVs carry.
	ProvisionerName string
	Client          kubernetes.Interface
	// Claims is an informer of the claims NeedsAttention keeps; the caller
	// runs it.
	Claims  cache.SharedIndexInformer
	Classes storagelisters.StorageClassLister
	// Recorder records Events on claims.
	Recorder record.EventRecorder
	Metrics  *metrics.Metrics
	// Feasibility is AcceptAll when nil.
	Feasibility Feasibility
	// Workers is the number of claims handled at once; 1 when not positive.
	Workers int
	// StepTimeout bounds each API call of a step; 30s when zero.
	StepTimeout time.Duration
	// InfeasibleRetry is how long a refused size waits before the
	// feasibility check sees it again; 5m when zero.
	InfeasibleRetry time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Controller expands claims. It does nothing until Run.
type Controller struct {
	cfg Config

	mu sync.Mutex
	// refused maps claims to when the feasibility check last refused their
	// allocated size (external-resizer's slowSet): the check is not asked
	// again, nor the Event repeated, on every update of the claim.
	refused map[string]time.Time
}

// New returns a Controller; it starts nothing.
func New(cfg Config) *Controller {
	if cfg.Feasibility == nil {
		cfg.Feasibility = AcceptAll{}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 30 * time.Second
	}
	if cfg.InfeasibleRetry <= 0 {
		cfg.InfeasibleRetry = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, refused: map[string]time.Time{}}
}

// Run expands claims until ctx ends, then returns once the workers have
// stopped. The API call in flight when ctx ends is let finish (within
// StepTimeout) and the next step is abandoned: every step is idempotent and
// the next Run, here or on another replica, resumes from what the claim and
// the PV record.
func (c *Controller) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("resize")
	ctx = klog.NewContext(ctx, logger)
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute))
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	// Registering replays every cached claim, so nothing that changed while
	// we did not run is missed. A claim leaving the cache (done, or
	// deleted) is synced once more to forget it.
	reg, err := c.cfg.Claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	if err != nil {
		logger.Error(err, "Watching claims to expand; volume expansion is off")
		queue.ShutDown()
		return
	}
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx, queue) {
			}
		}()
	}
	<-ctx.Done()
	if err := c.cfg.Claims.RemoveEventHandler(reg); err != nil {
		logger.Error(err, "Stopping to watch claims to expand")
	}
	queue.ShutDown()
	wg.Wait()
}

func (c *Controller) next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	logger := klog.FromContext(ctx)
	after, err := c.sync(ctx, key)
	switch {
	case err != nil && ctx.Err() != nil:
		// Stopping: whoever runs next resumes from the objects.
		queue.Forget(key)
	case apierrors.IsConflict(err):
		// Our copy of the claim was stale; the newer one is on its way.
		logger.V(4).Info("Claim changed meanwhile; retrying", "claim", key, "err", err)
		queue.AddRateLimited(key)
	case err != nil:
		c.cfg.Metrics.CountResize(metrics.Failed)
		logger.Error(err, "Expanding a claim failed; retrying", "claim", key)
		queue.AddRateLimited(key)
	case after > 0:
		queue.Forget(key)
		queue.AddAfter(key, after)
	default:
		queue.Forget(key)
	}
	return true
}

// sync handles one claim; a positive duration asks to look again then.
func (c *Controller) sync(ctx context.Context, key string) (time.Duration, error) {
	obj, exists, err := c.cfg.Claims.GetIndexer().GetByKey(key)
	if err != nil {
		return 0, fmt.Errorf("reading claim %s from the cache: %w", key, err)
	}
	pvc, ok := obj.(*v1.PersistentVolumeClaim)
	if !exists || !ok {
		c.clearRefused(key)
		return 0, nil
	}
	if !needsResize(pvc) || !c.classIsOurs(pvc) {
		return 0, nil
	}
	pv, err := c.volume(ctx, pvc.Spec.VolumeName)
	if err != nil {
		return 0, err
	}
	if !c.volumeIsOurs(pv, pvc) {
		klog.FromContext(ctx).V(4).Info("Not expanding: the PV is not an NFS volume of ours bound to the claim", "claim", key, "PV", pv.Name)
		return 0, nil
	}
	p := decide(pvc, pv.Spec.Capacity[v1.ResourceStorage])
	if !p.expand {
		return 0, nil
	}
	return c.expand(ctx, key, pvc, pv, p)
}

// expand runs the protocol's steps, each skipped when the objects show it
// done:
//
//  1. claim status: Resizing, allocatedResources = target,
//     ControllerResizeInProgress;
//  2. the feasibility check; a refusal marks the claim
//     ControllerResizeInfeasible and stops;
//  3. PV spec.capacity = target;
//  4. claim annotation node-expansion-not-required, then claim status:
//     capacity = target, no resize conditions, no resize status.
//
// The annotation comes before the final status so that a stop between the
// two leaves the claim needing a resize, and so resumed, not finished
// without it.
func (c *Controller) expand(ctx context.Context, key string, pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, p plan) (time.Duration, error) {
	logger := klog.FromContext(ctx).WithValues("claim", key, "PV", pv.Name, "size", p.target.String())
	if p.retryOfInfeasible {
		if wait := c.refusedFor(key); wait > 0 {
			return wait, nil
		}
	}

	pvc, err := c.markInProgress(ctx, pvc, p.target, p.markStatus)
	if err != nil {
		return 0, fmt.Errorf("recording on claim %s that its volume grows to %s: %w", key, p.target.String(), err)
	}
	if p.markStatus {
		c.cfg.Recorder.Eventf(pvc, v1.EventTypeNormal, ReasonResizing, "External resizer is resizing volume %s", pv.Name)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	if err := c.check(ctx, pv, pvc, p.target); err != nil {
		logger.Info("Volume expansion refused", "reason", err.Error())
		if _, markErr := c.markInfeasible(ctx, pvc, err); markErr != nil {
			return 0, fmt.Errorf("resizing volume %s to %s refused (%w), and recording that on claim %s failed: %w", pv.Name, p.target.String(), err, key, markErr)
		}
		c.cfg.Recorder.Event(pvc, v1.EventTypeWarning, ReasonResizeFailed, err.Error())
		c.cfg.Metrics.CountResize(metrics.Infeasible)
		c.setRefused(key)
		return c.cfg.InfeasibleRetry, nil
	}
	c.clearRefused(key)
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	if size := pv.Spec.Capacity[v1.ResourceStorage]; size.Cmp(p.target) < 0 {
		if err := c.patchVolumeCapacity(ctx, pv, p.target); err != nil {
			return 0, fmt.Errorf("setting the capacity of PersistentVolume %s to %s: %w", pv.Name, p.target.String(), err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	pvc, err = c.annotateNoNodeExpansion(ctx, pvc)
	if err != nil {
		return 0, fmt.Errorf("annotating claim %s with %s: %w", key, AnnNodeExpansionNotRequired, err)
	}
	pvc, err = c.markFinished(ctx, pvc, p.target)
	if err != nil {
		return 0, fmt.Errorf("recording on claim %s that its volume grew to %s: %w", key, p.target.String(), err)
	}
	c.cfg.Recorder.Event(pvc, v1.EventTypeNormal, ReasonResizeSucceeded, "Resize volume succeeded")
	c.cfg.Metrics.CountResize(metrics.Success)
	logger.Info("Volume expanded")
	return 0, nil
}

func (c *Controller) check(ctx context.Context, pv *v1.PersistentVolume, pvc *v1.PersistentVolumeClaim, size resource.Quantity) error {
	ctx, cancel := c.stepContext(ctx)
	defer cancel()
	return c.cfg.Feasibility.Check(ctx, pv, pvc, size)
}

// stepContext bounds one step and outlives ctx, so that stopping lets the
// call in flight land rather than leave it uncertain.
func (c *Controller) stepContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StepTimeout)
}

// classIsOurs: the claim's StorageClass names this provisioner.
func (c *Controller) classIsOurs(pvc *v1.PersistentVolumeClaim) bool {
	name := pvc.Annotations[annBetaStorageClass]
	if pvc.Spec.StorageClassName != nil {
		name = *pvc.Spec.StorageClassName
	}
	if name == "" {
		return false
	}
	class, err := c.cfg.Classes.Get(name)
	return err == nil && class.Provisioner == c.cfg.ProvisionerName
}

// volumeIsOurs: an NFS PV this provisioner made (or the incumbent, under
// the same name), bound to this claim.
func (c *Controller) volumeIsOurs(pv *v1.PersistentVolume, pvc *v1.PersistentVolumeClaim) bool {
	ref := pv.Spec.ClaimRef
	return pv.Spec.NFS != nil &&
		pv.Annotations[AnnProvisionedBy] == c.cfg.ProvisionerName &&
		ref != nil && ref.UID == pvc.UID && ref.Namespace == pvc.Namespace && ref.Name == pvc.Name
}

// errVolumeNotFound: the claim names a PV the API server does not have (yet).
var errVolumeNotFound = errors.New("not found")

// volume reads a PV whole. With list, by name, as kubelet reads its Node:
// the ClusterRole grants list on PVs but not get, and the PV informer keeps
// PVs compacted, without capacity or claim.
func (c *Controller) volume(ctx context.Context, name string) (*v1.PersistentVolume, error) {
	ctx, cancel := c.stepContext(ctx)
	defer cancel()
	list, err := c.cfg.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector(metav1.ObjectNameField, name).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("reading PersistentVolume %s: %w", name, err)
	}
	for i := range list.Items {
		if list.Items[i].Name == name {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("reading PersistentVolume %s: %w", name, errVolumeNotFound)
}

func (c *Controller) refusedFor(key string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.refused[key]
	if !ok {
		return 0
	}
	return at.Add(c.cfg.InfeasibleRetry).Sub(c.cfg.Now())
}

func (c *Controller) setRefused(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused[key] = c.cfg.Now()
}

func (c *Controller) clearRefused(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.refused, key)
}
