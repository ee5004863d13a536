package app

import (
	"context"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/provisioner"
	"github.com/kube-nfs/nfs-provisioner/pkg/resize"
)

// Informers keep in memory only what the provisioner and the library read,
// so that memory stays flat with tens of thousands of claims and volumes:
//
//   - claims: only unbound ones (spec.volumeName empty). A bound claim is
//     never provisioned again; a claim that becomes bound leaves the cache
//     as if deleted.
//   - volumes: only those provisioner.Compactor keeps (this provisioner may
//     delete them, or their directories are on our server), compacted to
//     the fields Delete, the directory index and the library read.
//   - claims for resizing, in an informer of their own: only bound claims
//     with resize work left (resize.NeedsAttention), untrimmed.
//   - nodes: the name (the library only checks that the selected node
//     exists); everything: no managed fields, no last-applied copy.
//
// Claims and volumes are filtered and trimmed in their list and watch
// functions, before the reflector holds them, rather than by the transform.
// And the first list of each informer is fetched in pages: a list at
// resourceVersion "0" is served whole from the API server's cache, and
// decoding 10,000 objects at once costs several times their size.

// cacheFilter decides what the informers keep.
type cacheFilter struct {
	volumes *provisioner.Compactor
}

func newCacheFilter(provisionerName string, set *exports.Set) *cacheFilter {
	return &cacheFilter{volumes: provisioner.NewCompactor(provisionerName, set)}
}

// keepClaim: only claims that may still need provisioning.
func keepClaim(obj runtime.Object) bool {
	pvc, ok := obj.(*v1.PersistentVolumeClaim)
	return ok && pvc.Spec.VolumeName == ""
}

func (f *cacheFilter) keepVolume(obj runtime.Object) bool {
	pv, ok := obj.(*v1.PersistentVolume)
	return ok && f.volumes.Keep(pv)
}

// trim is the informers' transform: it drops from cached objects what the
// provisioner never reads. Volumes arrive compacted already (see
// newInformers).
func (f *cacheFilter) trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Node:
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}}, nil
	case *v1.PersistentVolume:
		return o, nil
	case metav1.Object:
		f.trimMeta(o)
	}
	return obj, nil
}

// trimMeta drops managed fields and kubectl's copy of the last applied
// object.
func (f *cacheFilter) trimMeta(o metav1.Object) {
	o.SetManagedFields(nil)
	if a := o.GetAnnotations(); a != nil {
		delete(a, v1.LastAppliedConfigAnnotation)
	}
}

// newInformers creates the factory with the claims and volumes informers
// registered on it, filtered and paged as described above.
func newInformers(client kubernetes.Interface, f *cacheFilter) (informers.SharedInformerFactory, cache.SharedIndexInformer, cache.SharedIndexInformer) {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(f.trim))
	claims := factory.InformerFor(&v1.PersistentVolumeClaim{}, func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return newClaimInformer(client, keepClaim, f.trimMeta, resync)
	})
	volumes := factory.InformerFor(&v1.PersistentVolume{}, func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		c := client.CoreV1().PersistentVolumes()
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				list, err := c.List(ctx, paged(o))
				if err != nil {
					return nil, err
				}
				// Trimmed here, page by page, rather than by the transform:
				// the reflector holds every page until the last one arrives.
				kept := list.Items[:0]
				for i := range list.Items {
					if f.keepVolume(&list.Items[i]) {
						kept = append(kept, *f.volumes.Compact(&list.Items[i]))
					}
				}
				clear(list.Items[len(kept):])
				list.Items = kept
				return list, nil
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				w, err := c.Watch(ctx, o)
				if err != nil {
					return nil, err
				}
				return filterWatch(w, f.keepVolume, func(obj runtime.Object) runtime.Object {
					if pv, ok := obj.(*v1.PersistentVolume); ok {
						return f.volumes.Compact(pv)
					}
					return obj
				}), nil
			},
		}
		return cache.NewSharedIndexInformer(lw, &v1.PersistentVolume{}, resync, cache.Indexers{})
	})
	return factory, claims, volumes
}

// newClaimInformer is an informer of the claims keep accepts, trimmed by
// trim.
func newClaimInformer(client kubernetes.Interface, keep func(runtime.Object) bool, trim func(metav1.Object), resync time.Duration) cache.SharedIndexInformer {
	c := client.CoreV1().PersistentVolumeClaims(v1.NamespaceAll)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list, err := c.List(ctx, paged(o))
			if err != nil {
				return nil, err
			}
			kept := list.Items[:0]
			for i := range list.Items {
				if keep(&list.Items[i]) {
					kept = append(kept, list.Items[i])
					trim(&kept[len(kept)-1])
				}
			}
			clear(list.Items[len(kept):])
			list.Items = kept
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := c.Watch(ctx, o)
			if err != nil {
				return nil, err
			}
			return filterWatch(w, keep, func(obj runtime.Object) runtime.Object {
				if m, ok := obj.(metav1.Object); ok {
					trim(m)
				}
				return obj
			}), nil
		},
	}
	return cache.NewSharedIndexInformer(lw, &v1.PersistentVolumeClaim{}, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// newResizeClaimInformer is the resize controller's informer, apart from
// the factory's (which keeps unbound claims only): bound claims that may
// have resize work left, so a handful whatever the number of claims. They
// are kept whole: the controller updates a claim from its cached copy, and
// a trimmed one would drop kubectl's last-applied annotation.
func newResizeClaimInformer(client kubernetes.Interface) cache.SharedIndexInformer {
	keep := func(obj runtime.Object) bool {
		pvc, ok := obj.(*v1.PersistentVolumeClaim)
		return ok && resize.NeedsAttention(pvc)
	}
	return newClaimInformer(client, keep, func(metav1.Object) {}, 0)
}

// paged turns the informer's first list (resourceVersion "0", which the API
// server answers whole from its cache, ignoring the limit) into a consistent
// list in pages of the reflector's limit. Later lists are left alone.
func paged(o metav1.ListOptions) metav1.ListOptions {
	if o.ResourceVersion == "0" && o.Limit > 0 && o.Continue == "" {
		o.ResourceVersion = ""
	}
	return o
}

// filterWatch passes on the events of w with their objects trimmed,
// turning an Added or Modified object that keep rejects into a Deleted one:
// the informer drops it if it had it and ignores it otherwise.
func filterWatch(w watch.Interface, keep func(runtime.Object) bool, trim func(runtime.Object) runtime.Object) watch.Interface {
	fw := &filteredWatch{in: w, out: make(chan watch.Event), stop: make(chan struct{})}
	go fw.run(keep, trim)
	return fw
}

type filteredWatch struct {
	in   watch.Interface
	out  chan watch.Event
	stop chan struct{}
	once sync.Once
}

func (w *filteredWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *filteredWatch) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.in.Stop()
	})
}

func (w *filteredWatch) run(keep func(runtime.Object) bool, trim func(runtime.Object) runtime.Object) {
	defer close(w.out)
	for ev := range w.in.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified:
			if !keep(ev.Object) {
				ev.Type = watch.Deleted
			}
			ev.Object = trim(ev.Object)
		case watch.Deleted:
			ev.Object = trim(ev.Object)
		}
		select {
		case w.out <- ev:
		case <-w.stop:
			return
		}
	}
}
