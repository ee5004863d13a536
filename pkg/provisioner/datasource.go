package provisioner

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// The data sources Kubernetes itself defines; any other kind belongs to a
// volume populator.
const (
	snapshotGroup = "snapshot.storage.k8s.io"
	snapshotKind  = "VolumeSnapshot"
	claimKind     = "PersistentVolumeClaim"
)

// sourceKind is what a claim asks its volume to be filled from.
type sourceKind int

const (
	sourceNone sourceKind = iota
	sourceClaim
	sourceSnapshot
	// sourcePopulator is any other kind: a volume populator fills the
	// volume, not us.
	sourcePopulator
)

// dataSource returns the claim's data source and what kind it is.
// dataSourceRef wins: the API server mirrors dataSource into it, and only it
// can name a populator's custom resource or another namespace.
func dataSource(claim *v1.PersistentVolumeClaim) (v1.TypedObjectReference, sourceKind) {
	var ref v1.TypedObjectReference
	switch {
	case claim.Spec.DataSourceRef != nil:
		ref = *claim.Spec.DataSourceRef
	case claim.Spec.DataSource != nil:
		ds := claim.Spec.DataSource
		ref = v1.TypedObjectReference{APIGroup: ds.APIGroup, Kind: ds.Kind, Name: ds.Name}
	default:
		return ref, sourceNone
	}
	group := ""
	if ref.APIGroup != nil {
		group = *ref.APIGroup
	}
	switch {
	case ref.Kind == claimKind && group == "":
		return ref, sourceClaim
	case ref.Kind == snapshotKind && group == snapshotGroup:
		return ref, sourceSnapshot
	}
	return ref, sourcePopulator
}

// checkDataSource decides, before anything is created, about a claim that
// asks to be filled with data: a snapshot, or a clone when cloning is off
// (Config.Clone nil), is refused (an empty volume in their place would be
// silently wrong) and a populator's claim is
// ignored, as CSI external-provisioner does, so the library leaves it to the
// populator. The IgnoredError is returned bare: the library recognises it
// by type assertion, not errors.As.
func checkDataSource(claim *v1.PersistentVolumeClaim) error {
	ref, kind := dataSource(claim)
	switch kind {
	case sourceSnapshot:
		return refuse("claim's data source is VolumeSnapshot %.128q, but NFS subdirectories have no snapshots: clone the PersistentVolumeClaim itself instead (spec.dataSource kind PersistentVolumeClaim), or restore the data with a backup tool into a claim without spec.dataSource and spec.dataSourceRef", ref.Name)
	case sourceClaim:
		return refuse("claim's data source is PersistentVolumeClaim %.128q, but this provisioner can't clone volumes yet and won't hand out an empty volume in its place: remove spec.dataSource and spec.dataSourceRef and copy the data into the new claim yourself, for example from a pod mounting both claims", ref.Name)
	case sourcePopulator:
		group := ""
		if ref.APIGroup != nil {
			group = *ref.APIGroup
		}
		return &controller.IgnoredError{Reason: fmt.Sprintf("data source %.128q %.128q of API group %.128q is not handled by this provisioner, assuming an external populator will provision it", ref.Kind, ref.Name, group)}
	}
	return nil
}
