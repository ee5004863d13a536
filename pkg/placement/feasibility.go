package placement

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	storagelisters "k8s.io/client-go/listers/storage/v1"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
)

// Feasibility checks expansions as the claim's class asks (capacityCheck,
// overcommitRatio) against the figures of the volume's export; it
// implements resize.Feasibility. Classes without a capacity check accept
// every size, as NFS directories have no quota.
type Feasibility struct {
	Placer  *Placer
	Exports *exports.Set
	Classes storagelisters.StorageClassLister
}

// Check refuses growing pv to newSize when its export lacks the room.
func (f Feasibility) Check(ctx context.Context, pv *v1.PersistentVolume, pvc *v1.PersistentVolumeClaim, newSize resource.Quantity) error {
	name := pv.Spec.StorageClassName
	if pvc.Spec.StorageClassName != nil {
		name = *pvc.Spec.StorageClassName
	}
	class, err := f.Classes.Get(name)
	if err != nil {
		return fmt.Errorf("reading StorageClass %q for its capacity check: %w", name, err)
	}
	cls, err := params.Parse(class.Parameters)
	if err != nil {
		return fmt.Errorf("StorageClass %q: %w", name, err)
	}
	if !cls.CapacityCheck {
		return nil
	}
	home, ok := f.Exports.Home(pv)
	if !ok {
		return fmt.Errorf("StorageClass %q checks capacity, but PersistentVolume %q is on none of this provisioner's exports (%s), or it can't tell which", name, pv.Name, f.Exports.Names())
	}
	current := pv.Spec.Capacity[v1.ResourceStorage]
	growth := newSize.Value() - current.Value()
	if growth <= 0 {
		return nil
	}
	return f.Placer.CheckGrowth(ctx, home.Name, uint64(growth), uint64(newSize.Value()), Check{Capacity: true, Ratio: cls.OvercommitRatio})
}
