// Package router is the library's controller.Provisioner for an install of
// several exports: it hands each claim to the provisioner of the export
// placement picks among those its class names, and each released PV to the
// provisioner of the export it is on.
package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
	"github.com/kube-nfs/nfs-provisioner/pkg/placement"
)

// Backend is the provisioner of one export; *provisioner.Provisioner
// implements it.
type Backend interface {
	controller.Provisioner
	VolumeAdded(pv *v1.PersistentVolume)
	// Recorded tells whether the export's ledger records a directory made,
	// or about to be made, for the PV.
	Recorded(ctx context.Context, pvName string) (bool, error)
	// OnServer tells whether the PV names the export's server, under any
	// spelling.
	OnServer(ctx context.Context, pv *v1.PersistentVolume) (bool, error)
	// CloneSourceVolume returns the PV of a clone's source claim, nil if
	// none.
	CloneSourceVolume(ctx context.Context, claim *v1.PersistentVolumeClaim) (*v1.PersistentVolume, error)
	CancelClones(ctx context.Context)
}

// Config is what a Router needs.
type Config struct {
	Exports  *exports.Set
	Backends map[string]Backend // by export name, one per export
	Placer   *placement.Placer
	Metrics  *metrics.Metrics
	// IsRefusal tells a backend's refusals (bad input) from failures.
	IsRefusal func(error) bool
	Now       func() time.Time
}

// Router routes claims and PVs to the provisioners of their exports.
type Router struct {
	cfg Config

	mu sync.Mutex
	// sticky keeps, by claim, the export of an attempt that may have left
	// something there (it timed out, or a copy runs in the background), so
	// the retry goes back to it.
	sticky map[types.UID]stick
}

type stick struct {
	export string
	at     time.Time
}

// stickyTTL forgets the export of a claim not retried for this long (it
// was deleted); the ledger still sends a retry back (see Provision).
const stickyTTL = time.Hour

var _ controller.Provisioner = (*Router)(nil)

// New returns a Router.
func New(cfg Config) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Router{cfg: cfg, sticky: map[types.UID]stick{}}
}

// Provision picks the claim's export and lets its provisioner provision it.
// Errors before an export is chosen are counted with no export.
func (r *Router) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	start := time.Now()
	name, err := r.place(ctx, opts)
	if err != nil {
		var ignored *controller.IgnoredError
		if errors.As(err, &ignored) {
			return nil, controller.ProvisioningFinished, err
		}
		out := metrics.Failed
		if r.cfg.IsRefusal(err) || placement.IsRefusal(err) || errors.As(err, new(refusal)) {
			out = metrics.Refused
		}
		r.cfg.Metrics.ObserveOperation(metrics.OpProvision, out, metrics.NoExport, time.Since(start))
		logger := klog.FromContext(ctx)
		if out == metrics.Refused {
			logger.Info("Provisioning failed", "PVC", klog.KObj(opts.PVC), "outcome", out, "reason", err.Error())
		} else {
			logger.Error(err, "Provisioning failed", "PVC", klog.KObj(opts.PVC), "outcome", out)
		}
		return nil, controller.ProvisioningFinished, err
	}
	pv, state, err := r.cfg.Backends[name].Provision(ctx, opts)
	r.settle(opts, name, state, err)
	return pv, state, err
}

// refusal is a claim or class the router refuses.
type refusal struct{ error }

func refuse(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }

// place returns the export the claim goes to.
func (r *Router) place(ctx context.Context, opts controller.ProvisionOptions) (string, error) {
	class := opts.StorageClass
	cls, err := params.Parse(class.Parameters)
	if err != nil {
		return "", refusal{fmt.Errorf("StorageClass %q: %w: fix the class (its parameters can't be edited: recreate it)", class.Name, err)}
	}
	for _, name := range cls.Exports {
		if _, ok := r.cfg.Backends[name]; !ok {
			return "", refuse("StorageClass %q names export %q, which this provisioner doesn't serve: it serves %s; fix the class's %s parameter (recreate the class), or declare the export with --export", class.Name, name, r.cfg.Exports.Names(), params.KeyExport)
		}
	}
	names := cls.Exports
	if src, err := r.cloneSource(ctx, opts, cls); err != nil || src != "" {
		if err != nil {
			return "", err
		}
		names = []string{src}
	}
	if s, ok := r.stuck(opts.PVC.UID); ok && slices.Contains(names, s) {
		return s, nil
	}
	if len(names) > 1 {
		// A leader that stopped mid-attempt left a record on the export it
		// chose: go back there, to finish or undo it.
		for _, name := range names {
			if ok, err := r.cfg.Backends[name].Recorded(ctx, opts.PVName); err == nil && ok {
				r.record(opts.PVC.UID, name)
				return name, nil
			}
		}
	}
	request := opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]
	name, err := r.cfg.Placer.Place(ctx, opts.PVName, names, uint64(max(request.Value(), 0)), placement.Check{Capacity: cls.CapacityCheck, Ratio: cls.OvercommitRatio})
	if err != nil {
		return "", fmt.Errorf("StorageClass %q (exports %q): %w", class.Name, names, err)
	}
	return name, nil
}

// cloneSource returns the export a clone goes to: its source's, which must
// be one of the class's. "" for a claim that is no clone, or whose source
// has no PV yet (its export then refuses it, saying why).
func (r *Router) cloneSource(ctx context.Context, opts controller.ProvisionOptions, cls params.Class) (string, error) {
	if opts.PVC.Spec.DataSourceRef == nil && opts.PVC.Spec.DataSource == nil {
		return "", nil
	}
	if s, ok := r.stuck(opts.PVC.UID); ok {
		// A copy runs: no need to read the source again.
		return s, nil
	}
	pv, err := r.cfg.Backends[cls.Exports[0]].CloneSourceVolume(ctx, opts.PVC)
	if err != nil || pv == nil {
		return "", err
	}
	home, ok := r.cfg.Exports.Home(pv)
	if !ok {
		return "", refuse("the clone's source PersistentVolume %q is on none of the exports this provisioner serves (%s), or can't be told which: only volumes of its exports can be cloned", pv.Name, r.cfg.Exports.Names())
	}
	if !slices.Contains(cls.Exports, home.Name) {
		return "", refuse("the clone's source PersistentVolume %q is on export %q, which StorageClass %q doesn't name (it names %q): a clone is made on its source's export, so use a class naming it", pv.Name, home.Name, opts.StorageClass.Name, cls.Exports)
	}
	return home.Name, nil
}

// settle remembers or forgets the claim's export after an attempt there.
func (r *Router) settle(opts controller.ProvisionOptions, name string, state controller.ProvisioningState, err error) {
	uid, pv := opts.PVC.UID, opts.PVName
	switch {
	case state == controller.ProvisioningInBackground:
		r.record(uid, name)
	case err == nil:
		r.forgetClaim(uid)
	case (errors.Is(err, exportfs.ErrTimeout) && !errors.Is(err, exportfs.ErrNotSent)) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The call may still create the directory: come back here. One
		// that never reached the export can't: place it afresh.
		r.record(uid, name)
	default:
		r.forgetClaim(uid)
		r.cfg.Placer.Forget(pv)
	}
}

func (r *Router) stuck(uid types.UID) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sticky[uid]
	return s.export, ok
}

func (r *Router) record(uid types.UID, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	for k, s := range r.sticky {
		if now.Sub(s.at) > stickyTTL {
			delete(r.sticky, k)
		}
	}
	r.sticky[uid] = stick{export: name, at: now}
}

func (r *Router) forgetClaim(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sticky, uid)
}

// Delete lets the provisioner of the PV's export delete it.
func (r *Router) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	b, err := r.home(ctx, pv)
	if err != nil {
		if errors.As(err, new(refusal)) {
			r.cfg.Metrics.ObserveOperation(metrics.OpDelete, metrics.Refused, metrics.NoExport, 0)
			klog.FromContext(ctx).Info("Deleting volume failed", "PV", pv.Name, "outcome", metrics.Refused, "reason", err.Error())
		} else {
			r.cfg.Metrics.ObserveOperation(metrics.OpDelete, metrics.Failed, metrics.NoExport, 0)
			klog.FromContext(ctx).Error(err, "Deleting volume failed", "PV", pv.Name, "outcome", metrics.Failed)
		}
		return err
	}
	return b.Delete(ctx, pv)
}

// home is the backend of the export pv is on: the one its annotation
// names; else the only export whose path holds it, or the only one of
// several whose server it names. A PV on none goes to the first export,
// which refuses it saying why.
func (r *Router) home(ctx context.Context, pv *v1.PersistentVolume) (Backend, error) {
	if name, ok := pv.Annotations[exports.Annotation]; ok {
		b, ok := r.cfg.Backends[name]
		if !ok {
			return nil, refuse("PV %q records export %q (annotation %s), which this provisioner doesn't serve (it serves %s): declare the export again with --export to delete it, or delete its directory by hand, then the PV", pv.Name, name, exports.Annotation, r.cfg.Exports.Names())
		}
		return b, nil
	}
	on := r.cfg.Exports.On(pv)
	switch len(on) {
	case 0:
		return r.cfg.Backends[r.cfg.Exports.All()[0].Name], nil
	case 1:
		return r.cfg.Backends[on[0].Name], nil
	}
	var same []exports.Export
	for _, e := range on {
		ok, err := r.cfg.Backends[e.Name].OnServer(ctx, pv)
		if err != nil {
			return nil, err
		}
		if ok {
			same = append(same, e)
		}
	}
	switch len(same) {
	case 0:
		return r.cfg.Backends[on[0].Name], nil
	case 1:
		return r.cfg.Backends[same[0].Name], nil
	}
	return nil, refuse("PV %q (%s:%s) may be on exports %s and %s, which name one server: give it annotation %s naming its export, or delete its directory by hand, then the PV", pv.Name, pv.Spec.NFS.Server, pv.Spec.NFS.Path, same[0].Name, same[1].Name, exports.Annotation)
}

// VolumeAdded tells every export's provisioner and the placer that the PV
// exists.
func (r *Router) VolumeAdded(pv *v1.PersistentVolume) {
	for _, b := range r.cfg.Backends {
		b.VolumeAdded(pv)
	}
	r.cfg.Placer.Done(pv.Name)
}

// CancelClones stops the copies running on every export.
func (r *Router) CancelClones(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range r.cfg.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.CancelClones(ctx)
		}()
	}
	wg.Wait()
}
