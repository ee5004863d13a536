// Package provisioner implements the library's controller.Provisioner: it
// creates a claim's directory on the export and describes it as an NFS
// PersistentVolume, and deletes, archives or retains it on release.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// Annotations recording, on each PV we make, what Delete must act on; the
// StorageClass may change or vanish before then.
const (
	AnnDirectory = "nfs.kube-nfs.io/directory"
	AnnOnDelete  = "nfs.kube-nfs.io/on-delete"
)

// Export is what the provisioner needs of the mounted export; exportfs.FS
// implements it on a real directory.
type Export interface {
	MkdirAll(ctx context.Context, rel string, opts exportfs.DirOptions, existing exportfs.Existing) (exportfs.Made, error)
	RemoveAll(ctx context.Context, rel string) error
	Rename(ctx context.Context, rel, newName string) error
	Rmdir(ctx context.Context, rel string) error
	// The ledger's file.
	ledger.Store
}

// Config is everything a Provisioner needs.
type Config struct {
	// Name is the export's name, recorded on every PV (exports.Annotation);
	// Server and ExportPath are written into every PV's spec.nfs.
	Name       string
	Server     string
	ExportPath string
	Export     Export
	// Volumes is the PV informer's indexer, with Indexers added for a set
	// of exports holding this one.
	Volumes cache.Indexer
	// Classes looks up StorageClasses, for PVs made by the incumbent.
	Classes storagelisters.StorageClassLister
	Metrics *metrics.Metrics
	// Now is the clock used for archive names; time.Now when nil.
	Now func() time.Time
	// Resolver tells whether a PV's server is Server spelled otherwise;
	// net.DefaultResolver when nil.
	Resolver Resolver
	// Clone enables cloning claims whose data source is another claim;
	// nil refuses them.
	Clone *CloneConfig
}

// Provisioner provisions and deletes directories on one export; a router
// hands it the claims placed there and the PVs on it.
type Provisioner struct {
	cfg Config

	mu sync.Mutex
	// reserved maps the PVs being provisioned to their claim and directory,
	// so two claims resolving to one directory at once can't both get it. An
	// entry lives until the PV shows up in the informer (see VolumeAdded).
	reserved map[string]reservation
	// detached holds the PVs Delete was called for, until they leave the
	// informer: they no longer count as users of their directory.
	detached map[string]struct{}
	// removing maps the directories being deleted, archived or removed
	// right now to the PV responsible, so none is handed to a claim
	// meanwhile.
	removing map[string]string

	// clones are the copies running or finished and not yet collected, by
	// claim UID.
	clones map[types.UID]*cloneJob

	// finMu serialises adding and removing FinalizerCloneSource; sources
	// counts, by source claim, the copies that hold it.
	finMu   sync.Mutex
	sources map[types.NamespacedName]int

	// beforeCopy, when set (only by tests), runs before a clone's copy.
	beforeCopy func()

	// ledgerMu guards led, read from the export on first use.
	ledgerMu sync.Mutex
	led      *ledger.Ledger
}

type reservation struct {
	claimUID string
	dir      string
	class    string // the claim's StorageClass
}

// claimRef is who a directory is being provisioned for.
type claimRef struct {
	uid, namespace, class, pv string
}

func claimOf(claim *v1.PersistentVolumeClaim, class, pv string) claimRef {
	return claimRef{uid: string(claim.UID), namespace: claim.Namespace, class: class, pv: pv}
}

// claimNamespace is the namespace of the claim pv was bound to, "" if none.
func claimNamespace(pv *v1.PersistentVolume) string {
	if pv.Spec.ClaimRef == nil {
		return ""
	}
	return pv.Spec.ClaimRef.Namespace
}

var _ controller.Provisioner = (*Provisioner)(nil)

// New returns a Provisioner; it starts nothing.
func New(cfg Config) *Provisioner {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Provisioner{cfg: cfg, reserved: map[string]reservation{}, detached: map[string]struct{}{}, removing: map[string]string{}, clones: map[types.UID]*cloneJob{}, sources: map[types.NamespacedName]int{}}
}

// refusal marks errors caused by the claim, class or PV rather than by the
// export or the API: they are counted apart and retrying won't help until
// someone fixes the input.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

func refuse(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }

// logFailure logs a failed operation: refusals at Info, as the Event on the
// object already tells what to fix and they repeat on every retry; export or
// API failures as errors.
func logFailure(ctx context.Context, err error, msg string, kv ...any) {
	if err == nil {
		return
	}
	logger := klog.FromContext(ctx)
	kv = append(kv, "outcome", outcome(err))
	if outcome(err) == metrics.Refused {
		logger.Info(msg, append(kv, "reason", err.Error())...)
		return
	}
	logger.Error(err, msg, kv...)
}

func outcome(err error) string {
	var r refusal
	switch {
	case err == nil:
		return metrics.Success
	case errors.As(err, &r):
		return metrics.Refused
	}
	return metrics.Failed
}

// Provision creates the claim's directory and returns its PV. Every error is
// final for this attempt (ProvisioningFinished), and the library retries
// with back-off, emitting an Event each time; only a clone's copy runs on in
// the background (ProvisioningInBackground, see provisionClone). A claim to
// be filled by a volume populator is ignored (see checkDataSource).
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	start := time.Now()
	if ref, kind := dataSource(opts.PVC); kind == sourceClaim && p.cfg.Clone != nil {
		return p.provisionClone(ctx, opts, ref)
	}
	err := checkDataSource(opts.PVC)
	var ignored *controller.IgnoredError
	if errors.As(err, &ignored) {
		// Not an operation of ours: not counted, and no Event.
		klog.FromContext(ctx).V(2).Info("Leaving the claim to a volume populator", "PVC", klog.KObj(opts.PVC), "reason", ignored.Reason)
		return nil, controller.ProvisioningFinished, err
	}
	var pv *v1.PersistentVolume
	if err == nil {
		pv, err = p.provision(ctx, opts)
	}
	p.cfg.Metrics.ObserveOperation(metrics.OpProvision, outcome(err), p.cfg.Name, time.Since(start))
	logFailure(ctx, err, "Provisioning failed", "PVC", klog.KObj(opts.PVC))
	return pv, controller.ProvisioningFinished, err
}

func (p *Provisioner) provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, error) {
	rel, cls, err := p.directoryOf(opts)
	if err != nil {
		return nil, err
	}
	if err := p.makeDir(ctx, rel, claimOf(opts.PVC, opts.StorageClass.Name, opts.PVName), cls); err != nil {
		return nil, err
	}
	return p.volume(opts, rel, cls), nil
}

// directoryOf checks the claim and its class and returns the claim's
// directory.
func (p *Provisioner) directoryOf(opts controller.ProvisionOptions) (string, params.Class, error) {
	claim, class := opts.PVC, opts.StorageClass
	if claim.Spec.Selector != nil {
		return "", params.Class{}, refuse("claim has a selector, which dynamically provisioned NFS volumes can't satisfy: remove spec.selector")
	}
	cls, err := params.Parse(class.Parameters)
	if err != nil {
		return "", params.Class{}, refusal{fmt.Errorf("StorageClass %q: %w: fix the class (its parameters can't be edited: recreate it)", class.Name, err)}
	}
	rel, err := volpath.Resolve(cls.PathPattern, volpath.Claim{
		Namespace: claim.Namespace, Name: claim.Name, UID: string(claim.UID),
		Labels: claim.Labels, Annotations: claim.Annotations, PVName: opts.PVName,
	})
	if err != nil {
		return "", params.Class{}, refusal{fmt.Errorf("refusing the claim's directory: %w: fix the claim's labels or annotations, or the class's pathPattern", err)}
	}
	if err := checkReservedName(rel); err != nil {
		return "", params.Class{}, err
	}
	return rel, cls, nil
}

// volume describes the claim's directory rel as its PV.
func (p *Provisioner) volume(opts controller.ProvisionOptions, rel string, cls params.Class) *v1.PersistentVolume {
	claim, class := opts.PVC, opts.StorageClass
	reclaim := v1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	fsMode := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: opts.PVName,
			Annotations: map[string]string{
				AnnDirectory:       rel,
				AnnOnDelete:        string(cls.OnDelete),
				exports.Annotation: p.cfg.Name,
			},
		},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   claim.Spec.AccessModes,
			MountOptions:                  class.MountOptions,
			VolumeMode:                    &fsMode,
			Capacity: v1.ResourceList{
				v1.ResourceStorage: claim.Spec.Resources.Requests[v1.ResourceStorage],
			},
			PersistentVolumeSource: v1.PersistentVolumeSource{
				NFS: &v1.NFSVolumeSource{
					Server: p.cfg.Server,
					Path:   volpath.NFSPath(p.cfg.ExportPath, rel),
				},
			},
		},
	}
}

// Delete acts on the directory and policy recorded on the PV when it was
// provisioned (or, for the incumbent's PVs, derived from it and its class).
// It refuses, with an error the library turns into an Event, rather than
// touch the export root, anything outside it, or a directory another PV uses.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	start := time.Now()
	err := p.delete(ctx, pv)
	p.cfg.Metrics.ObserveOperation(metrics.OpDelete, outcome(err), p.cfg.Name, time.Since(start))
	logFailure(ctx, err, "Deleting volume failed", "PV", pv.Name)
	return err
}

// makeDir reserves rel for the PV and creates it, or adopts it where the
// ownership rules allow, recording it in the ledger; on error the
// reservation is dropped.
func (p *Provisioner) makeDir(ctx context.Context, rel string, c claimRef, cls params.Class) error {
	pvName := c.pv
	led, err := p.ledger(ctx)
	if err != nil {
		return err
	}
	pl, release, err := p.reserve(led, rel, c, cls)
	if err != nil {
		return err
	}
	intent := ledger.Record{Kind: ledger.Volume, Dir: rel, PV: pvName, NS: c.namespace, Time: p.cfg.Now().UTC()}
	if pl.intent {
		// Before creating it, so that a crash in between can't leave a
		// directory of ours looking like someone else's.
		if err := led.Append(ctx, intent); err != nil {
			release()
			return err
		}
	}
	made, err := p.cfg.Export.MkdirAll(ctx, rel, exportfs.DirOptions{Mode: cls.Mode, UID: cls.UID, GID: cls.GID}, pl.existing)
	if err != nil {
		p.undoMade(ctx, led, intent, pl.intent, made, err)
		release()
		refused := errors.Is(err, fs.ErrExist) || errors.Is(err, exportfs.ErrSymlink) || errors.Is(err, exportfs.ErrNotDirectory) || errors.Is(err, exportfs.ErrInvalidPath) || errors.Is(err, exportfs.ErrHoldsArchive)
		switch {
		case errors.Is(err, fs.ErrExist):
			return existingRefusal(rel, pvName, pl, err)
		case refused:
			return refusal{fmt.Errorf("refusing directory %.128q: %w", rel, err)}
		}
		return fmt.Errorf("creating directory %.128q on the export: %w", rel, err)
	}
	recs := []ledger.Record{{Kind: ledger.Volume, Dir: rel, PV: pvName, Ino: made.Ino, NS: c.namespace}}
	for _, dir := range made.Parents {
		recs = append(recs, ledger.Record{Kind: ledger.Parent, Dir: dir})
	}
	for _, r := range pl.replaces {
		r.Drop = true
		recs = append(recs, r)
	}
	if err := led.Append(ctx, recs...); err != nil {
		release()
		return fmt.Errorf("recording directory %.128q in the ledger: %w", rel, err)
	}
	return nil
}

// undoMade removes what a failed MkdirAll made for the volume record vol:
// the leaf (empty, and still 0700 or refused its owner) and the parents it
// created, so a claim that never binds leaves nothing on the export. What
// can't be removed is recorded, so the retry adopts it and the volume's
// delete removes it. intent says whether vol was recorded as an intent; it
// is dropped once nothing of it is left, unless the call was abandoned
// (mkErr a timeout or cancellation): that call may still create the
// directory, which exportfs then reports to the retry as its own.
func (p *Provisioner) undoMade(ctx context.Context, led *ledger.Ledger, vol ledger.Record, intent bool, made exportfs.Made, mkErr error) {
	logger := klog.FromContext(ctx).WithValues("PV", vol.PV, "directory", vol.Dir)
	var keep []ledger.Record
	leafGone := !made.Created
	if made.Created {
		if err := p.cfg.Export.Rmdir(ctx, vol.Dir); err == nil || errors.Is(err, fs.ErrNotExist) {
			leafGone = true
		} else {
			logger.Info("Could not remove the directory a failed provisioning attempt created; the retry takes it over", "err", err.Error())
			rec := vol
			rec.Ino = made.Ino
			keep = append(keep, rec)
		}
	}
	for i := len(made.Parents) - 1; i >= 0; i-- {
		dir := made.Parents[i]
		if !leafGone || p.cfg.Export.Rmdir(ctx, dir) != nil {
			// Kept, and removed with the last volume below it.
			for _, d := range made.Parents[:i+1] {
				keep = append(keep, ledger.Record{Kind: ledger.Parent, Dir: d})
			}
			break
		}
	}
	abandoned := (errors.Is(mkErr, exportfs.ErrTimeout) && !errors.Is(mkErr, exportfs.ErrNotSent)) || errors.Is(mkErr, context.Canceled) || errors.Is(mkErr, context.DeadlineExceeded)
	if leafGone && intent && !abandoned {
		drop := vol
		drop.Drop = true
		keep = append(keep, drop)
	}
	if err := led.Append(ctx, keep...); err != nil {
		logger.Info("Could not record in the directory ledger what a failed provisioning attempt left", "records", len(keep), "err", err.Error())
	}
}

func (p *Provisioner) delete(ctx context.Context, pv *v1.PersistentVolume) error {
	rel, policy, err := p.recordOf(ctx, pv)
	if err != nil {
		return err
	}
	if rel == ledgerDir || strings.HasPrefix(rel, ledgerDir+"/") {
		return refuse("refusing to %s directory %.128q of PV %q: it holds the provisioner's own records", policy, rel, pv.Name)
	}
	logger := klog.FromContext(ctx).WithValues("PV", pv.Name, "directory", rel, "onDelete", policy)
	led, err := p.ledger(ctx)
	if err != nil {
		return err
	}
	d, done, err := p.detach(led, rel, pv.Name, policy)
	if err != nil {
		return err
	}
	defer done()
	mine := func(r ledger.Record) bool { return r.Kind == ledger.Volume && r.PV == pv.Name }
	if len(d.others) > 0 {
		logger.Info("Leaving the directory to the PersistentVolumes still using it; the last one to go applies its onDelete", "users", d.others)
		return led.Append(ctx, drops(led.At(rel), mine)...)
	}
	switch policy {
	case params.Retain:
		recs := drops(led.At(rel), mine)
		if err := led.Append(ctx, append(recs, ledger.Record{Kind: ledger.Retained, Dir: rel, PV: pv.Name, Time: p.cfg.Now().UTC(), NS: claimNamespace(pv)})...); err != nil {
			return fmt.Errorf("recording retained directory %.128q in the ledger: %w", rel, err)
		}
		logger.Info("Retained directory")
		return nil
	case params.Delete:
		if err := p.cfg.Export.RemoveAll(ctx, rel); err != nil {
			return fmt.Errorf("deleting directory %.128q on the export: %w", rel, err)
		}
		logger.Info("Deleted directory")
		if err := led.Append(ctx, forget(led, rel, pv.Name)...); err != nil {
			return fmt.Errorf("recording deleted directory %.128q in the ledger: %w", rel, err)
		}
	case params.Archive:
		name, err := p.archive(ctx, rel)
		if errors.Is(err, fs.ErrNotExist) {
			logger.Info("Directory already gone, nothing to archive")
			return led.Append(ctx, forget(led, rel, pv.Name)...)
		}
		if err != nil {
			return fmt.Errorf("archiving directory %.128q on the export: %w", rel, err)
		}
		logger.Info("Archived directory", "archive", name)
		archived := ledger.Record{Kind: ledger.Archive, Dir: path.Join(path.Dir(rel), name), PV: pv.Name, From: rel, Time: p.cfg.Now().UTC(), NS: claimNamespace(pv)}
		if err := led.Append(ctx, append(forget(led, rel, pv.Name), archived)...); err != nil {
			return fmt.Errorf("recording archive %q in the ledger: %w", name, err)
		}
	}
	done()
	p.removeParents(ctx, led, rel, pv.Name)
	return nil
}

// drops returns the records for which keep says so, as drops.
func drops(recs []ledger.Record, keep func(ledger.Record) bool) []ledger.Record {
	var out []ledger.Record
	for _, r := range recs {
		if keep(r) {
			r.Drop = true
			out = append(out, r)
		}
	}
	return out
}
