package provisioner

import (
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
)

// Annotations the library reads on PVs.
const (
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
	annMigratedTo    = "pv.kubernetes.io/migrated-to"
)

// annDirectoryIsPath exists only on cached PVs made by a Compactor: it
// stands for an AnnDirectory equal to the directory spec.nfs.path gives, so
// that PVs whose annotations differ only in their directory can share one
// annotation map. It is not a valid annotation key, so no stored PV can
// carry it.
const annDirectoryIsPath = "nfs.kube-nfs.io/(directory is spec.nfs.path)"

// Compactor reduces PVs, for the informer cache, to what Delete, the
// directory index and the library's controller read (name, UID, resource
// version, deletion timestamp, finalizers, the provisioned-by, migrated-to
// and our three annotations, spec.nfs, spec.csi's driver, reclaim policy,
// class, claim reference, storage capacity and phase), and shares the strings and annotation maps that
// thousands of PVs repeat. A cached PV costs about a third of a decoded one.
// Cached objects are never modified, so sharing is safe.
type Compactor struct {
	provisionerName string
	exports         *exports.Set

	mu      sync.Mutex
	strings map[string]string
	maps    map[annotationKey]map[string]string
	sizes   map[string]v1.ResourceList // by quantity, e.g. "1Gi"
}

type annotationKey struct{ provisionedBy, migratedTo, onDelete, export string }

// maxShared bounds each table; past it, values are not shared.
const maxShared = 1024

// NewCompactor returns a Compactor for the PVs of one provisioner and its
// exports.
func NewCompactor(provisionerName string, set *exports.Set) *Compactor {
	return &Compactor{
		provisionerName: provisionerName, exports: set,
		strings: map[string]string{}, maps: map[annotationKey]map[string]string{}, sizes: map[string]v1.ResourceList{},
	}
}

// Keep reports whether the provisioner or the library may ever read pv:
// PVs that name this provisioner (it may be asked to delete them) and NFS
// PVs below one of its exports, whoever made them (their directories must
// not be reused; see Indexers).
func (c *Compactor) Keep(pv *v1.PersistentVolume) bool {
	a := pv.Annotations
	switch {
	case a[annProvisionedBy] == c.provisionerName, a[annMigratedTo] == c.provisionerName:
		return true
	case pv.Spec.CSI != nil && pv.Spec.CSI.Driver == c.provisionerName:
		return true
	}
	return len(c.exports.On(pv)) > 0
}

// Compact returns a reduced copy of pv.
func (c *Compactor) Compact(pv *v1.PersistentVolume) *v1.PersistentVolume {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:              pv.Name,
			UID:               pv.UID,
			ResourceVersion:   pv.ResourceVersion,
			DeletionTimestamp: pv.DeletionTimestamp,
			Annotations:       c.annotations(pv),
		},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimPolicy(c.share(string(pv.Spec.PersistentVolumeReclaimPolicy))),
			StorageClassName:              c.share(pv.Spec.StorageClassName),
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.PersistentVolumePhase(c.share(string(pv.Status.Phase)))},
	}
	if len(pv.Finalizers) > 0 {
		out.Finalizers = make([]string, len(pv.Finalizers))
		for i, f := range pv.Finalizers {
			out.Finalizers[i] = c.share(f)
		}
	}
	if nfs := pv.Spec.NFS; nfs != nil {
		out.Spec.NFS = &v1.NFSVolumeSource{Server: c.share(nfs.Server), Path: nfs.Path, ReadOnly: nfs.ReadOnly}
	}
	// The claim and the capacity, for the per-volume usage metrics; a few
	// sizes recur, so their maps are shared.
	if ref := pv.Spec.ClaimRef; ref != nil {
		out.Spec.ClaimRef = &v1.ObjectReference{Namespace: c.share(ref.Namespace), Name: ref.Name, UID: ref.UID}
	}
	if q, ok := pv.Spec.Capacity[v1.ResourceStorage]; ok {
		out.Spec.Capacity = c.size(q)
	}
	if csi := pv.Spec.CSI; csi != nil {
		out.Spec.CSI = &v1.CSIPersistentVolumeSource{Driver: c.share(csi.Driver), VolumeHandle: csi.VolumeHandle}
	}
	return out
}

// annotations keeps the five annotations read on PVs; when the directory
// is the one spec.nfs.path gives on the PV's export, as on every PV we
// made, the map is shared.
func (c *Compactor) annotations(pv *v1.PersistentVolume) map[string]string {
	a := pv.Annotations
	if len(a) == 0 {
		return nil
	}
	dir, hasDir := a[AnnDirectory]
	if !hasDir || dir == "" {
		return c.ownMap(a)
	}
	home, ok := c.exports.Home(pv)
	if !ok {
		return c.ownMap(a)
	}
	if derived, ok := directoryOnExport(pv, home.Path); !ok || derived != dir {
		return c.ownMap(a)
	}
	provisionedBy, hasP := a[annProvisionedBy]
	migratedTo, hasM := a[annMigratedTo]
	onDelete, hasO := a[AnnOnDelete]
	export, hasE := a[exports.Annotation]
	key := annotationKey{provisionedBy, migratedTo, onDelete, export}
	if !hasE {
		// Told apart from an annotation with an empty value.
		key.export = "\x00"
	}
	if m, ok := c.maps[key]; ok {
		return m
	}
	m := map[string]string{annDirectoryIsPath: ""}
	if hasP {
		m[annProvisionedBy] = c.share(provisionedBy)
	}
	if hasM {
		m[annMigratedTo] = c.share(migratedTo)
	}
	if hasO {
		m[AnnOnDelete] = c.share(onDelete)
	}
	if hasE {
		m[exports.Annotation] = c.share(export)
	}
	if len(c.maps) < maxShared {
		c.maps[key] = m
	}
	return m
}

func (c *Compactor) ownMap(a map[string]string) map[string]string {
	var m map[string]string
	for _, key := range []string{annProvisionedBy, annMigratedTo, AnnDirectory, AnnOnDelete, exports.Annotation} {
		if v, ok := a[key]; ok {
			if m == nil {
				m = make(map[string]string, 5)
			}
			if key != AnnDirectory {
				v = c.share(v)
			}
			m[key] = v
		}
	}
	return m
}

func (c *Compactor) size(q resource.Quantity) v1.ResourceList {
	key := q.String()
	if l, ok := c.sizes[key]; ok {
		return l
	}
	l := v1.ResourceList{v1.ResourceStorage: q}
	if len(c.sizes) < maxShared {
		c.sizes[key] = l
	}
	return l
}

func (c *Compactor) share(s string) string {
	if s == "" {
		return s
	}
	if v, ok := c.strings[s]; ok {
		return v
	}
	if len(c.strings) < maxShared {
		c.strings[s] = s
	}
	return s
}
