package resize

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// NeedsAttention reports whether a claim may have resize work left: it is
// bound and its request exceeds its capacity, or an expansion left its
// status behind (in progress, infeasible, or another resizer's node
// states). The claim informer keeps only these, so its cache stays small
// however many claims exist.
func NeedsAttention(pvc *v1.PersistentVolumeClaim) bool {
	if pvc.Spec.VolumeName == "" {
		return false
	}
	if _, ok := pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage]; ok {
		return true
	}
	return needsResize(pvc)
}

// needsResize is external-resizer's pvcNeedResize: only a Bound claim whose
// request exceeds its capacity is expanded. Shrinking is never ours: the API
// server refuses a request below status.capacity for a bound claim.
func needsResize(pvc *v1.PersistentVolumeClaim) bool {
	if pvc.Status.Phase != v1.ClaimBound || pvc.Spec.VolumeName == "" {
		return false
	}
	request := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	capacity := pvc.Status.Capacity[v1.ResourceStorage]
	return request.Cmp(capacity) > 0
}

// plan is what one pass over a claim does.
type plan struct {
	// expand: run the protocol to target.
	expand bool
	target resource.Quantity
	// markStatus: record target as the allocated size with
	// ControllerResizeInProgress; false when allocatedResources already
	// holds target (a restart, or a retry of the same size).
	markStatus bool
	// retryOfInfeasible: target is the size the feasibility check refused
	// last time; retried only slowly.
	retryOfInfeasible bool
}

// decide is external-resizer's expandAndRecover (RecoverVolumeExpansionFailure
// on, as in every supported Kubernetes) for a volume whose controller
// expansion is bookkeeping only and never needs node expansion: it picks the
// size to expand to from the claim's request, its allocated size and resize
// status, and the PV's capacity.
func decide(pvc *v1.PersistentVolumeClaim, pvSize resource.Quantity) plan {
	if !needsResize(pvc) {
		return plan{}
	}
	request := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	status := pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage]
	allocated, hasAllocated := pvc.Status.AllocatedResources[v1.ResourceStorage]
	target := request
	orAllocated := func() {
		if hasAllocated {
			target = allocated
		}
	}

	if pvSize.Cmp(request) < 0 {
		switch status {
		case v1.PersistentVolumeClaimNodeResizeInfeasible:
			orAllocated()
		case v1.PersistentVolumeClaimNodeResizePending, v1.PersistentVolumeClaimNodeResizeInProgress:
			orAllocated()
			if pvSize.Cmp(target) >= 0 {
				return plan{}
			}
		case v1.PersistentVolumeClaimControllerResizeInProgress:
			// A previous pass stopped between its steps: finish the size it
			// recorded before starting a new one. (external-resizer resumes
			// with the request only after a final error, which for us is
			// always recorded as ControllerResizeInfeasible.)
			orAllocated()
		default:
			// Nothing in progress, or ControllerResizeInfeasible: the
			// request, possibly lowered by the user to recover.
		}
	} else {
		switch status {
		case v1.PersistentVolumeClaimNodeResizeInProgress, v1.PersistentVolumeClaimNodeResizePending:
			return plan{}
		case v1.PersistentVolumeClaimNodeResizeInfeasible:
			// We expand in the control plane only.
			orAllocated()
		case v1.PersistentVolumeClaimControllerResizeInProgress, v1.PersistentVolumeClaimControllerResizeInfeasible:
			// The PV was updated and the claim not yet (a restart after
			// the PV step), or the user lowered the request after that.
			orAllocated()
		default:
			if status == "" && hasAllocated {
				target = allocated
			} else if hasCondition(pvc, v1.PersistentVolumeClaimFileSystemResizePending) {
				return plan{}
			}
		}
	}
	p := plan{expand: true, target: target, markStatus: true}
	if hasAllocated && allocated.Cmp(target) == 0 {
		p.markStatus = false
		p.retryOfInfeasible = status == v1.PersistentVolumeClaimControllerResizeInfeasible
	}
	return p
}

func hasCondition(pvc *v1.PersistentVolumeClaim, t v1.PersistentVolumeClaimConditionType) bool {
	for _, c := range pvc.Status.Conditions {
		if c.Type == t && c.Status == v1.ConditionTrue {
			return true
		}
	}
	return false
}
