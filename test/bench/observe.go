package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// annStorageProvisioner is set by the PV controller on a claim whose class
// names an external provisioner; only then does the provisioner act on it.
const annStorageProvisioner = "volume.kubernetes.io/storage-provisioner"

// observer watches every claim and PersistentVolume through informers of the
// admin client (1000 QPS, so observing is never the bottleneck) and records
// when each claim was first seen Bound and when each PV appeared and went.
type observer struct {
	mu sync.Mutex
	// created is when the bench sent the claim's create request (the
	// claim's creationTimestamp has one-second resolution only).
	created map[string]time.Time
	// bound is when the claim was first seen Bound.
	bound map[string]time.Time
	// annotated is when the claim was first seen with annStorageProvisioner.
	annotated map[string]time.Time
	// pvFor is when a PV for the claim was first seen.
	pvFor map[string]time.Time
	// pvAdded and pvGone are keyed by PV name; pvNS is its claim's namespace.
	pvAdded map[string]time.Time
	pvGone  map[string]time.Time
	pvNS    map[string]string

	perNS map[string]*nsCounts

	// hooks, when set, see every claim and PV update (the ideal
	// provisioner of ideal.go).
	onClaim  func(*v1.PersistentVolumeClaim)
	onVolume func(*v1.PersistentVolume)

	claims, volumes cache.Store
}

type nsCounts struct {
	annotated, bound, pvs, pvsGone   int
	lastBound, lastPVAdd, lastPVGone time.Time
}

func newObserver() *observer {
	return &observer{
		created: map[string]time.Time{}, bound: map[string]time.Time{}, annotated: map[string]time.Time{}, pvFor: map[string]time.Time{},
		pvAdded: map[string]time.Time{}, pvGone: map[string]time.Time{}, pvNS: map[string]string{},
		perNS: map[string]*nsCounts{},
	}
}

func (o *observer) ns(name string) *nsCounts {
	c := o.perNS[name]
	if c == nil {
		c = &nsCounts{}
		o.perNS[name] = c
	}
	return c
}

// start runs the informers until ctx ends and waits for their first sync.
func (o *observer) start(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(func(obj any) (any, error) {
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
		}
		return obj, nil
	}))
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	volumes := factory.Core().V1().PersistentVolumes().Informer()
	if _, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    o.claimSeen,
		UpdateFunc: func(_, obj any) { o.claimSeen(obj) },
	}); err != nil {
		return err
	}
	if _, err := volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    o.volumeAdded,
		UpdateFunc: func(_, obj any) { o.volumeAdded(obj) },
		DeleteFunc: o.volumeDeleted,
	}); err != nil {
		return err
	}
	o.claims, o.volumes = claims.GetStore(), volumes.GetStore()
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("bench informer for %v did not sync", typ)
		}
	}
	return nil
}

func (o *observer) claimSeen(obj any) {
	now := time.Now()
	pvc, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok {
		return
	}
	key := pvc.Namespace + "/" + pvc.Name
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.onClaim != nil {
		o.onClaim(pvc)
	}
	c := o.ns(pvc.Namespace)
	if _, ok := pvc.Annotations[annStorageProvisioner]; ok {
		if _, seen := o.annotated[key]; !seen {
			o.annotated[key] = now
			c.annotated++
		}
	}
	if pvc.Status.Phase == v1.ClaimBound {
		if _, seen := o.bound[key]; !seen {
			o.bound[key] = now
			c.bound++
			c.lastBound = now
		}
	}
}

func (o *observer) volumeAdded(obj any) {
	now := time.Now()
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok || pv.Spec.ClaimRef == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.onVolume != nil {
		o.onVolume(pv)
	}
	if _, seen := o.pvAdded[pv.Name]; seen {
		return
	}
	o.pvAdded[pv.Name] = now
	o.pvNS[pv.Name] = pv.Spec.ClaimRef.Namespace
	o.pvFor[pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name] = now
	c := o.ns(pv.Spec.ClaimRef.Namespace)
	c.pvs++
	c.lastPVAdd = now
}

func (o *observer) volumeDeleted(obj any) {
	now := time.Now()
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ns, known := o.pvNS[pv.Name]
	if !known {
		return
	}
	if _, gone := o.pvGone[pv.Name]; gone {
		return
	}
	o.pvGone[pv.Name] = now
	c := o.ns(ns)
	c.pvsGone++
	c.lastPVGone = now
}

// setHooks installs (or with nil, removes) the hooks.
func (o *observer) setHooks(onClaim func(*v1.PersistentVolumeClaim), onVolume func(*v1.PersistentVolume)) {
	o.mu.Lock()
	o.onClaim, o.onVolume = onClaim, onVolume
	o.mu.Unlock()
	// Objects that changed before the hooks were set.
	if onClaim != nil {
		for _, obj := range o.claims.List() {
			o.claimSeen(obj)
		}
	}
	if onVolume != nil {
		for _, obj := range o.volumes.List() {
			o.volumeAdded(obj)
		}
	}
}

// markCreated records when the create request of a claim was sent.
func (o *observer) markCreated(ns, name string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.created[ns+"/"+name] = at
}

// counts returns a copy of a namespace's counters.
func (o *observer) counts(ns string) nsCounts {
	o.mu.Lock()
	defer o.mu.Unlock()
	return *o.ns(ns)
}

// waitFor polls cond on the counters of ns until it holds or timeout.
func (o *observer) waitFor(ctx context.Context, ns string, timeout time.Duration, what string, cond func(nsCounts) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		c := o.counts(ns)
		if cond(c) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s in namespace %s: not reached in %s (annotated %d, bound %d, PVs %d, PVs gone %d)",
				what, ns, timeout, c.annotated, c.bound, c.pvs, c.pvsGone)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sample is one claim's timing: created by the bench, annotated by the PV
// controller, its PV created by the provisioner, Bound by the PV controller.
type sample struct {
	created, annotated, pv, bound time.Time
}

// samples returns, for every claim of ns the bench created, when it was
// created and when it was seen Bound (zero if not).
func (o *observer) samples(ns string) []sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []sample
	prefix := ns + "/"
	for key, c := range o.created {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix {
			out = append(out, sample{created: c, annotated: o.annotated[key], pv: o.pvFor[key], bound: o.bound[key]})
		}
	}
	return out
}
