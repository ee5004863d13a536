// Package provisioner implements the library's controller.Provisioner: it
// creates a claim's directory on the export and describes it as an NFS
// PersistentVolume, and deletes, archives or retains it on release.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
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
	MkdirAll(ctx context.Context, rel string, opts exportfs.DirOptions) (created bool, err error)
	RemoveAll(ctx context.Context, rel string) error
	Rename(ctx context.Context, rel, newName string) error
}

// Config is everything a Provisioner needs.
type Config struct {
	// Server and ExportPath are written into every PV (NFS_SERVER, NFS_PATH).
	Server     string
	ExportPath string
	Export     Export
	// Volumes is the PV informer's indexer, with Indexers added.
	Volumes cache.Indexer
	// Classes looks up StorageClasses, for PVs made by the incumbent.
	Classes storagelisters.StorageClassLister
	Metrics *metrics.Metrics
	// Now is the clock used for archive names; time.Now when nil.
	Now func() time.Time
	// Resolver tells whether a PV's server is Server spelled otherwise;
	// net.DefaultResolver when nil.
	Resolver Resolver
}

// Provisioner provisions and deletes directories on one export.
type Provisioner struct {
	cfg Config

	mu sync.Mutex
	// reserved maps the PVs being provisioned to their claim and directory,
	// so two claims resolving to one directory at once can't both get it. An
	// entry lives until the PV shows up in the informer (see VolumeAdded).
	reserved map[string]reservation
}

type reservation struct {
	claimUID string
	dir      string
}

var _ controller.Provisioner = (*Provisioner)(nil)

// New returns a Provisioner; it starts nothing.
func New(cfg Config) *Provisioner {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Provisioner{cfg: cfg, reserved: map[string]reservation{}}
}

// refusal marks errors caused by the claim, class or PV rather than by the
// export or the API: they are counted apart and retrying won't help until
// someone fixes the input.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

func refuse(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }

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
// final for this attempt (ProvisioningFinished): nothing runs on in the
// background, and the library retries with back-off, emitting an Event each
// time.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	start := time.Now()
	pv, err := p.provision(ctx, opts)
	p.cfg.Metrics.ObserveOperation(metrics.OpProvision, outcome(err), time.Since(start))
	if err != nil {
		klog.FromContext(ctx).Error(err, "Provisioning failed", "PVC", klog.KObj(opts.PVC), "outcome", outcome(err))
	}
	return pv, controller.ProvisioningFinished, err
}

func (p *Provisioner) provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, error) {
	claim, class := opts.PVC, opts.StorageClass
	if claim.Spec.Selector != nil {
		return nil, refuse("claim has a selector, which dynamically provisioned NFS volumes can't satisfy: remove spec.selector")
	}
	cls, err := params.Parse(class.Parameters)
	if err != nil {
		return nil, refusal{fmt.Errorf("StorageClass %q: %w: fix the class (its parameters can't be edited: recreate it)", class.Name, err)}
	}
	rel, err := volpath.Resolve(cls.PathPattern, volpath.Claim{
		Namespace: claim.Namespace, Name: claim.Name, UID: string(claim.UID),
		Labels: claim.Labels, Annotations: claim.Annotations, PVName: opts.PVName,
	})
	if err != nil {
		return nil, refusal{fmt.Errorf("refusing the claim's directory: %w: fix the claim's labels or annotations, or the class's pathPattern", err)}
	}

	release, err := p.reserve(rel, string(claim.UID), opts.PVName, cls.AllowSharedPath)
	if err != nil {
		return nil, err
	}
	if _, err := p.cfg.Export.MkdirAll(ctx, rel, exportfs.DirOptions{Mode: cls.Mode, UID: cls.UID, GID: cls.GID}); err != nil {
		release()
		if errors.Is(err, exportfs.ErrSymlink) || errors.Is(err, exportfs.ErrNotDirectory) || errors.Is(err, exportfs.ErrInvalidPath) {
			return nil, refusal{fmt.Errorf("refusing directory %q: %w", rel, err)}
		}
		return nil, fmt.Errorf("creating directory %q on the export: %w", rel, err)
	}

	reclaim := v1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	fsMode := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: opts.PVName,
			Annotations: map[string]string{
				AnnDirectory: rel,
				AnnOnDelete:  string(cls.OnDelete),
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
	}, nil
}

// Delete acts on the directory and policy recorded on the PV when it was
// provisioned (or, for the incumbent's PVs, derived from it and its class).
// It refuses, with an error the library turns into an Event, rather than
// touch the export root, anything outside it, or a directory another PV uses.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	start := time.Now()
	err := p.delete(ctx, pv)
	p.cfg.Metrics.ObserveOperation(metrics.OpDelete, outcome(err), time.Since(start))
	if err != nil {
		klog.FromContext(ctx).Error(err, "Deleting volume failed", "PV", pv.Name, "outcome", outcome(err))
	}
	return err
}

func (p *Provisioner) delete(ctx context.Context, pv *v1.PersistentVolume) error {
	rel, policy, err := p.recordOf(ctx, pv)
	if err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("PV", pv.Name, "directory", rel, "onDelete", policy)
	if policy == params.Retain {
		logger.V(2).Info("Retaining directory")
		return nil
	}
	users, err := p.usersOf(rel, pv.Name)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return refuse("refusing to %s directory %q: PersistentVolume %q still uses it or a directory nested with it; this PV is deleted once that one is gone", policy, rel, users[0])
	}
	switch policy {
	case params.Delete:
		if err := p.cfg.Export.RemoveAll(ctx, rel); err != nil {
			return fmt.Errorf("deleting directory %q on the export: %w", rel, err)
		}
		logger.V(2).Info("Deleted directory")
	case params.Archive:
		name, err := p.archive(ctx, rel)
		if errors.Is(err, fs.ErrNotExist) {
			logger.Info("Directory already gone, nothing to archive")
			return nil
		}
		if err != nil {
			return fmt.Errorf("archiving directory %q on the export: %w", rel, err)
		}
		logger.V(2).Info("Archived directory", "archive", name)
	}
	return nil
}
