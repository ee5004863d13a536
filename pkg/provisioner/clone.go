package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/clone"
	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
	"github.com/kube-nfs/nfs-provisioner/pkg/volpath"
)

// FinalizerCloneSource keeps a claim being cloned, and so its PV and
// directory, from going away during the copy.
const FinalizerCloneSource = "nfs.kube-nfs.io/clone-source-protection"

// CloneConfig is what cloning a claim needs besides the export.
type CloneConfig struct {
	// Client reads the source claim and its PV (the informers keep neither:
	// only unbound claims, and compacted PVs) and patches the source's
	// finalizers.
	Client kubernetes.Interface
	// Root is the export's directory on this machine (exportfs.FS.Root).
	Root string
	// Options tune the copy.
	Options clone.Options
}

// cloneJob is one copy running in the background, keyed by the claim's UID.
type cloneJob struct {
	source   types.NamespacedName
	rel, pv  string
	done     chan struct{}
	entries  atomic.Int64
	bytes    atomic.Int64
	cancel   context.CancelFunc
	started  time.Time
	volume   *v1.PersistentVolume // set before done closes, on success
	err      error                // set before done closes, on failure
	finished bool                 // Provision returned the outcome; guarded by p.mu
}

// provisionClone provisions a claim whose data source is another claim. The
// first call checks the source, protects it with FinalizerCloneSource,
// creates the directory and starts the copy; the library calls again (with
// back-off) while it runs, and the PV is returned only once it is done.
func (p *Provisioner) provisionClone(ctx context.Context, opts controller.ProvisionOptions, source v1.TypedObjectReference) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	claim := opts.PVC
	uid := claim.UID
	p.mu.Lock()
	job := p.clones[uid]
	p.mu.Unlock()
	if job != nil {
		select {
		case <-job.done:
			p.mu.Lock()
			job.finished = true
			if job.err != nil {
				// The next call starts afresh.
				delete(p.clones, uid)
			}
			p.mu.Unlock()
			return job.volume, controller.ProvisioningFinished, job.err
		default:
			return nil, controller.ProvisioningInBackground, fmt.Errorf("copying PersistentVolumeClaim %.128q into the new volume: %d entries and %d bytes copied in %s; the volume is created once the copy is done",
				source.Name, job.entries.Load(), job.bytes.Load(), time.Since(job.started).Round(time.Second))
		}
	}
	start := time.Now()
	job, err := p.startClone(ctx, opts, source)
	if err != nil {
		// A copy that started counts when it ends (see runClone).
		p.cfg.Metrics.ObserveOperation(metrics.OpProvision, outcome(err), p.cfg.Name, time.Since(start))
		logFailure(ctx, err, "Provisioning failed", "PVC", klog.KObj(claim))
		return nil, controller.ProvisioningFinished, err
	}
	return nil, controller.ProvisioningInBackground, fmt.Errorf("copying PersistentVolumeClaim %.128q into the new volume (directory %.128q) has started; the volume is created once the copy is done", source.Name, job.rel)
}

func (p *Provisioner) startClone(ctx context.Context, opts controller.ProvisionOptions, source v1.TypedObjectReference) (*cloneJob, error) {
	claim := opts.PVC
	rel, cls, err := p.directoryOf(opts)
	if err != nil {
		return nil, err
	}
	if cls.AllowSharedPath || cls.ReuseExisting {
		return nil, refuse("StorageClass %q shares or reuses existing directories (allowSharedPath or reuseExistingDirectory), but a clone needs a new, empty directory of its own: use a class without them", opts.StorageClass.Name)
	}
	src, srcPV, err := p.cloneSource(ctx, claim, source)
	if err != nil {
		return nil, err
	}
	if err := checkCloneSource(opts, src, srcPV); err != nil {
		return nil, err
	}
	srcRel, err := p.sourceDirectory(ctx, src, srcPV)
	if err != nil {
		return nil, err
	}
	name := types.NamespacedName{Namespace: src.Namespace, Name: src.Name}
	if err := p.protect(ctx, name); err != nil {
		return nil, err
	}
	// Private while it is copied: the class's mode comes once the copy is
	// done (see finishClone). Its owner comes now, so that an export that
	// refuses it (root squashed) fails before the copy, not after.
	private := cls
	private.Mode = 0o700
	if err := p.makeDir(ctx, rel, claimOf(claim, opts.StorageClass.Name, opts.PVName), private); err != nil {
		p.unprotect(ctx, name, false)
		return nil, err
	}
	// The copy outlives this call, whose ctx the library cancels after its
	// ProvisionTimeout; CancelClones stops it.
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	job := &cloneJob{source: name, rel: rel, pv: opts.PVName, done: make(chan struct{}), cancel: cancel, started: time.Now()}
	p.mu.Lock()
	p.clones[claim.UID] = job
	p.mu.Unlock()
	klog.FromContext(ctx).Info("Cloning a claim", "PVC", klog.KObj(claim), "source", klog.KObj(src), "from", srcRel, "to", rel)
	go p.runClone(jctx, job, srcRel, cls, func() *v1.PersistentVolume { return p.volume(opts, rel, cls) })
	return job, nil
}

// runClone copies, then leaves either the PV to return or a clean export.
func (p *Provisioner) runClone(ctx context.Context, job *cloneJob, srcRel string, cls params.Class, volume func() *v1.PersistentVolume) {
	defer job.cancel()
	logger := klog.FromContext(ctx).WithValues("PV", job.pv, "source", job.source.String())
	opts := p.cfg.Clone.Options
	opts.Progress = func(pr clone.Progress) {
		job.entries.Store(pr.Entries)
		job.bytes.Store(pr.Bytes)
	}
	if p.beforeCopy != nil {
		p.beforeCopy()
	}
	res, err := clone.Copy(ctx, p.cfg.Clone.Root, srcRel, job.rel, opts)
	if err == nil {
		err = p.finishClone(ctx, job, cls)
	}
	job.entries.Store(res.Entries)
	job.bytes.Store(res.Bytes)
	took := time.Since(job.started)
	if err != nil {
		job.err = fmt.Errorf("copying PersistentVolumeClaim %.128q into directory %.128q: %w", job.source.Name, job.rel, err)
		if errors.Is(err, clone.ErrTooDeep) {
			// The source's tree, not the export, is at fault.
			job.err = refusal{job.err}
		}
		p.cfg.Metrics.ObserveOperation(metrics.OpProvision, outcome(job.err), p.cfg.Name, took)
		// Cancelled means this replica stops provisioning: the next leader
		// may be copying into the directory already, and removes what is
		// left itself (a destination not empty is removed, see
		// discardClone).
		keep := ctx.Err() != nil
		logger.Error(err, "Clone failed", "entries", res.Entries, "bytes", res.Bytes, "partialCopyRemoved", !keep)
		p.discardClone(ctx, job, keep)
	} else {
		job.volume = volume()
		p.cfg.Metrics.ObserveOperation(metrics.OpProvision, metrics.Success, p.cfg.Name, took)
		logger.Info("Cloned", "entries", res.Entries, "bytes", res.Bytes, "hardLinks", res.HardLinks, "skipped", res.Skipped, "changed", res.Changed, "ownersDenied", res.OwnersDenied, "took", took.Round(time.Millisecond))
	}
	// A cancelled copy leaves the finalizer too: the next leader's copy
	// may hold it already, and removes it when done.
	p.unprotect(ctx, job.source, err != nil && ctx.Err() != nil)
	close(job.done)
}

// finishClone gives the copy's directory the class's mode and owner, as
// MkdirAll gives a new volume's, on the directory made for it (by inode).
func (p *Provisioner) finishClone(ctx context.Context, job *cloneJob, cls params.Class) error {
	led, err := p.ledger(ctx)
	if err != nil {
		return err
	}
	existing := exportfs.Existing{Any: true}
	for _, r := range led.At(job.rel) {
		if r.Kind == ledger.Volume && r.PV == job.pv && r.Ino != 0 {
			existing = exportfs.Existing{Ino: r.Ino}
		}
	}
	if _, err := p.cfg.Export.MkdirAll(ctx, job.rel, exportfs.DirOptions{Mode: cls.Mode, UID: cls.UID, GID: cls.GID}, existing); err != nil {
		return fmt.Errorf("setting the class's mode and owner on the copy: %w", err)
	}
	return nil
}

// discardClone removes the directory of a failed copy and its records,
// unless keep, and drops its reservation, so the next attempt starts from
// nothing. What a crashed or cancelled copy left, the next attempt finds
// not empty and removes here.
func (p *Provisioner) discardClone(ctx context.Context, job *cloneJob, keep bool) {
	defer func() {
		p.mu.Lock()
		delete(p.reserved, job.pv)
		p.mu.Unlock()
	}()
	if keep {
		return
	}
	logger := klog.FromContext(ctx).WithValues("PV", job.pv, "directory", job.rel)
	// A cancelled copy is cleaned up all the same, within its own bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := p.cfg.Export.RemoveAll(ctx, job.rel); err != nil {
		logger.Error(err, "Could not remove the partial copy; the next attempt finds the directory and fails until it is removed")
	} else if led, err := p.ledger(ctx); err == nil {
		if err := led.Append(ctx, forget(led, job.rel, job.pv)...); err != nil {
			logger.Info("Could not record in the directory ledger that the partial copy is gone", "err", err.Error())
		}
		p.removeParents(ctx, led, job.rel, job.pv)
	}
}

// CancelClones stops the copies running, on shutdown or when leadership
// is lost, and waits within ctx until each has stopped. Their partial
// copies and the sources' finalizers stay: whoever provisions next removes
// the copies, clones the claims again from the start, and then removes the
// finalizers.
func (p *Provisioner) CancelClones(ctx context.Context) {
	p.mu.Lock()
	jobs := make([]*cloneJob, 0, len(p.clones))
	for _, j := range p.clones {
		j.cancel()
		jobs = append(jobs, j)
	}
	p.mu.Unlock()
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			return
		}
	}
}

// cloneVolumeAdded forgets the job of a PV the library created.
func (p *Provisioner) cloneVolumeAdded(pvName string) {
	for uid, j := range p.clones {
		if j.pv == pvName && j.finished {
			delete(p.clones, uid)
		}
	}
}

// cloneSource reads the source claim and its PV from the API.
func (p *Provisioner) cloneSource(ctx context.Context, claim *v1.PersistentVolumeClaim, source v1.TypedObjectReference) (*v1.PersistentVolumeClaim, *v1.PersistentVolume, error) {
	if source.Namespace != nil && *source.Namespace != "" && *source.Namespace != claim.Namespace {
		return nil, nil, refuse("claim's data source is PersistentVolumeClaim %.128q in namespace %.128q: only a claim of the same namespace can be cloned", source.Name, *source.Namespace)
	}
	client := p.cfg.Clone.Client
	src, err := client.CoreV1().PersistentVolumeClaims(claim.Namespace).Get(ctx, source.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, refuse("source PersistentVolumeClaim %.128q of the clone does not exist in namespace %.128q: create it, or fix spec.dataSource", source.Name, claim.Namespace)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading source PersistentVolumeClaim %.128q: %w", source.Name, err)
	}
	if src.Spec.VolumeName == "" {
		return src, nil, nil
	}
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, src.Spec.VolumeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return src, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading PersistentVolume %q of source PersistentVolumeClaim %.128q: %w", src.Spec.VolumeName, source.Name, err)
	}
	return src, pv, nil
}

// checkCloneSource applies the rules CSI external-provisioner applies to a
// clone's source: bound, not being deleted, same class and volume mode, no
// larger than the clone, and its PV one of ours.
func checkCloneSource(opts controller.ProvisionOptions, src *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) error {
	claim, class := opts.PVC, opts.StorageClass
	name := src.Name
	switch {
	case src.DeletionTimestamp != nil:
		return refuse("source PersistentVolumeClaim %.128q is being deleted: clone another claim", name)
	case src.Status.Phase != v1.ClaimBound || pv == nil:
		return refuse("source PersistentVolumeClaim %.128q is not Bound (phase %q): the clone waits until it is", name, src.Status.Phase)
	case className(src) != className(claim):
		return refuse("source PersistentVolumeClaim %.128q is of StorageClass %q, the clone of %q: a clone must be of its source's class", name, className(src), className(claim))
	case volumeMode(src.Spec.VolumeMode) != volumeMode(claim.Spec.VolumeMode):
		return refuse("source PersistentVolumeClaim %.128q has volumeMode %s, the clone %s: they must match", name, volumeMode(src.Spec.VolumeMode), volumeMode(claim.Spec.VolumeMode))
	case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != src.UID:
		return refuse("PersistentVolume %q is not bound to source PersistentVolumeClaim %.128q: the clone waits until it is", pv.Name, name)
	case pv.Annotations[annProvisionedBy] != class.Provisioner:
		return refuse("source PersistentVolumeClaim %.128q has PersistentVolume %q, which provisioner %q did not make: only volumes of this provisioner can be cloned", name, pv.Name, class.Provisioner)
	}
	want := claim.Spec.Resources.Requests[v1.ResourceStorage]
	have, ok := src.Status.Capacity[v1.ResourceStorage]
	if !ok {
		have = src.Spec.Resources.Requests[v1.ResourceStorage]
	}
	if want.Cmp(have) < 0 {
		return refuse("the clone requests %s, less than the %s of source PersistentVolumeClaim %.128q: request at least as much", want.String(), have.String(), name)
	}
	return nil
}

func className(c *v1.PersistentVolumeClaim) string {
	if c.Spec.StorageClassName == nil {
		return ""
	}
	return *c.Spec.StorageClassName
}

func volumeMode(m *v1.PersistentVolumeMode) v1.PersistentVolumeMode {
	if m == nil {
		return v1.PersistentVolumeFilesystem
	}
	return *m
}

// sourceDirectory returns the directory of the source's PV on this export,
// from what the PV mounts: that is where its data is, whatever it records.
func (p *Provisioner) sourceDirectory(ctx context.Context, src *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) (string, error) {
	dir, ok := directoryOnExport(pv, p.cfg.ExportPath)
	if !ok {
		return "", refuse("source PersistentVolumeClaim %.128q has PersistentVolume %q, which is not a directory of this provisioner's export %s: only volumes of this export can be cloned", src.Name, pv.Name, volpath.Quote(p.cfg.ExportPath))
	}
	if err := p.checkServer(ctx, pv); err != nil {
		return "", refusal{fmt.Errorf("source PersistentVolumeClaim %.128q: %w", src.Name, err)}
	}
	return dir, nil
}

// protect adds FinalizerCloneSource to the source claim, read afresh, and
// counts one more copy from it. finMu serialises protect and unprotect, so
// a copy ending can't remove the finalizer a copy starting just found.
func (p *Provisioner) protect(ctx context.Context, source types.NamespacedName) error {
	p.finMu.Lock()
	defer p.finMu.Unlock()
	client := p.cfg.Clone.Client
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		src, err := client.CoreV1().PersistentVolumeClaims(source.Namespace).Get(ctx, source.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if src.DeletionTimestamp != nil {
			return refuse("source PersistentVolumeClaim %.128q is being deleted: clone another claim", source.Name)
		}
		if slices.Contains(src.Finalizers, FinalizerCloneSource) {
			return nil
		}
		return p.patchFinalizers(ctx, src, append(slices.Clone(src.Finalizers), FinalizerCloneSource))
	})
	var r refusal
	if errors.As(err, &r) {
		return err
	}
	if err != nil {
		return fmt.Errorf("protecting source PersistentVolumeClaim %.128q with finalizer %s: %w", source.Name, FinalizerCloneSource, err)
	}
	p.sources[source]++
	return nil
}

// unprotect counts one copy from the source less and, at none and unless
// keep, removes FinalizerCloneSource from it. A failure is logged: the
// finalizer then stays until the next clone of that source ends, or an
// admin removes it.
func (p *Provisioner) unprotect(ctx context.Context, source types.NamespacedName, keep bool) {
	p.finMu.Lock()
	defer p.finMu.Unlock()
	if p.sources[source]--; p.sources[source] > 0 {
		return
	}
	delete(p.sources, source)
	if keep {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	client := p.cfg.Clone.Client
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		src, err := client.CoreV1().PersistentVolumeClaims(source.Namespace).Get(ctx, source.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !slices.Contains(src.Finalizers, FinalizerCloneSource) {
			return nil
		}
		return p.patchFinalizers(ctx, src, slices.DeleteFunc(slices.Clone(src.Finalizers), func(f string) bool { return f == FinalizerCloneSource }))
	})
	if err != nil && !apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Error(err, "Could not remove the clone-source finalizer; remove it by hand once no clone of the claim is Pending", "PVC", source.String(), "finalizer", FinalizerCloneSource)
	}
}

func (p *Provisioner) patchFinalizers(ctx context.Context, src *v1.PersistentVolumeClaim, finalizers []string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": finalizers, "resourceVersion": src.ResourceVersion}})
	if err != nil {
		return err
	}
	_, err = p.cfg.Clone.Client.CoreV1().PersistentVolumeClaims(src.Namespace).Patch(ctx, src.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}
