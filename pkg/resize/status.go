package resize

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// resizeConditions are the claim conditions resizers own
// (external-resizer's knownResizeConditions).
var resizeConditions = map[v1.PersistentVolumeClaimConditionType]bool{
	v1.PersistentVolumeClaimResizing:                true,
	v1.PersistentVolumeClaimFileSystemResizePending: true,
	v1.PersistentVolumeClaimControllerResizeError:   true,
	v1.PersistentVolumeClaimNodeResizeError:         true,
}

// mergeResizeConditions is external-resizer's MergeResizeConditionsOfPVC:
// conditions not about resizing stay; resize conditions are replaced by
// those of add with the same type, and the others stay only with keepOld.
// A condition already there with the same status keeps its
// LastTransitionTime, so repeating a step changes nothing.
func mergeResizeConditions(old []v1.PersistentVolumeClaimCondition, add []v1.PersistentVolumeClaimCondition, keepOld bool) []v1.PersistentVolumeClaimCondition {
	pending := map[v1.PersistentVolumeClaimConditionType]v1.PersistentVolumeClaimCondition{}
	for _, c := range add {
		pending[c.Type] = c
	}
	var out []v1.PersistentVolumeClaimCondition
	for _, c := range old {
		if !resizeConditions[c.Type] {
			out = append(out, c)
			continue
		}
		if n, ok := pending[c.Type]; ok {
			if n.Status == c.Status && n.Message == c.Message {
				n.LastTransitionTime = c.LastTransitionTime
			}
			out = append(out, n)
			delete(pending, c.Type)
		} else if keepOld {
			out = append(out, c)
		}
	}
	for _, c := range add {
		if _, ok := pending[c.Type]; ok {
			out = append(out, c)
		}
	}
	return out
}

// markInProgress is step 1 (external-resizer's
// markControllerResizeInProgress). With markStatus false only the
// Resizing condition is ensured.
func (c *Controller) markInProgress(ctx context.Context, pvc *v1.PersistentVolumeClaim, target resource.Quantity, markStatus bool) (*v1.PersistentVolumeClaim, error) {
	n := pvc.DeepCopy()
	resizing := v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimResizing, Status: v1.ConditionTrue, LastTransitionTime: metav1.NewTime(c.cfg.Now())}
	n.Status.Conditions = mergeResizeConditions(n.Status.Conditions, []v1.PersistentVolumeClaimCondition{resizing}, !markStatus)
	if markStatus {
		if n.Status.AllocatedResourceStatuses == nil {
			n.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
		}
		n.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimControllerResizeInProgress
	}
	if n.Status.AllocatedResources == nil {
		n.Status.AllocatedResources = v1.ResourceList{}
	}
	n.Status.AllocatedResources[v1.ResourceStorage] = target
	return c.patchClaimStatus(ctx, pvc, n, true)
}

// markInfeasible records a refusal (external-resizer's
// markControllerExpansionInfeasible). Without a resourceVersion check, as
// there: a slightly older copy of the claim must not keep the refusal from
// being recorded.
func (c *Controller) markInfeasible(ctx context.Context, pvc *v1.PersistentVolumeClaim, reason error) (*v1.PersistentVolumeClaim, error) {
	n := pvc.DeepCopy()
	if n.Status.AllocatedResourceStatuses == nil {
		n.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
	}
	n.Status.AllocatedResourceStatuses[v1.ResourceStorage] = v1.PersistentVolumeClaimControllerResizeInfeasible
	failed := v1.PersistentVolumeClaimCondition{
		Type: v1.PersistentVolumeClaimControllerResizeError, Status: v1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(c.cfg.Now()),
		Message:            fmt.Sprintf("failed to expand pvc with %v", reason),
	}
	n.Status.Conditions = mergeResizeConditions(n.Status.Conditions, []v1.PersistentVolumeClaimCondition{failed}, true)
	return c.patchClaimStatus(ctx, pvc, n, false)
}

// markFinished is the last step (external-resizer's
// markOverallExpansionAsFinished).
func (c *Controller) markFinished(ctx context.Context, pvc *v1.PersistentVolumeClaim, size resource.Quantity) (*v1.PersistentVolumeClaim, error) {
	n := pvc.DeepCopy()
	if n.Status.Capacity == nil {
		n.Status.Capacity = v1.ResourceList{}
	}
	n.Status.Capacity[v1.ResourceStorage] = size
	n.Status.Conditions = mergeResizeConditions(n.Status.Conditions, nil, false)
	delete(n.Status.AllocatedResourceStatuses, v1.ResourceStorage)
	if len(n.Status.AllocatedResourceStatuses) == 0 {
		n.Status.AllocatedResourceStatuses = nil
	}
	return c.patchClaimStatus(ctx, pvc, n, true)
}

// annotateNoNodeExpansion adds node-expansion-not-required. It is metadata,
// which the status subresource ignores, so it is written through the claim
// itself, with update: the ClusterRole grants update on claims (the
// provisioning library's), not patch. Our copy is the one the last status
// patch returned; a conflict retries the pass.
func (c *Controller) annotateNoNodeExpansion(ctx context.Context, pvc *v1.PersistentVolumeClaim) (*v1.PersistentVolumeClaim, error) {
	if pvc.Annotations[AnnNodeExpansionNotRequired] == "true" {
		return pvc, nil
	}
	n := pvc.DeepCopy()
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[AnnNodeExpansionNotRequired] = "true"
	ctx, cancel := c.stepContext(ctx)
	defer cancel()
	return c.cfg.Client.CoreV1().PersistentVolumeClaims(n.Namespace).Update(ctx, n, metav1.UpdateOptions{})
}

// patchVolumeCapacity sets the PV's capacity with a patch of that field
// alone (external-resizer's updatePVCapacity): repeating it is harmless.
func (c *Controller) patchVolumeCapacity(ctx context.Context, pv *v1.PersistentVolume, size resource.Quantity) error {
	n := pv.DeepCopy()
	if n.Spec.Capacity == nil {
		n.Spec.Capacity = v1.ResourceList{}
	}
	n.Spec.Capacity[v1.ResourceStorage] = size
	patch, err := twoWayPatch(pv, n, "")
	if err != nil {
		return err
	}
	ctx, cancel := c.stepContext(ctx)
	defer cancel()
	_, err = c.cfg.Client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return err
}

// patchClaimStatus patches the claim's status from old to n, as
// external-resizer's PatchClaim: a strategic merge patch of the difference,
// with old's resourceVersion when checkVersion so that a stale copy fails
// with a conflict instead of undoing someone's change. No difference, no
// call.
func (c *Controller) patchClaimStatus(ctx context.Context, old, n *v1.PersistentVolumeClaim, checkVersion bool) (*v1.PersistentVolumeClaim, error) {
	version := ""
	if checkVersion {
		version = old.ResourceVersion
	}
	patch, err := twoWayPatch(old, n, version)
	if err != nil || patch == nil {
		return old, err
	}
	ctx, cancel := c.stepContext(ctx)
	defer cancel()
	return c.cfg.Client.CoreV1().PersistentVolumeClaims(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
}

// twoWayPatch is the strategic merge patch from old to n, with
// metadata.resourceVersion set when version is not empty; nil when they do
// not differ.
func twoWayPatch[T any](old, n *T, version string) ([]byte, error) {
	oldData, err := json.Marshal(old)
	if err != nil {
		return nil, fmt.Errorf("encoding the object to patch: %w", err)
	}
	newData, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encoding the patched object: %w", err)
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldData, newData, old)
	if err != nil {
		return nil, fmt.Errorf("computing the patch: %w", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(patch, &fields); err != nil {
		return nil, fmt.Errorf("decoding the patch: %w", err)
	}
	if len(fields) == 0 {
		return nil, nil
	}
	if version != "" {
		meta, _ := fields["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["resourceVersion"] = version
		fields["metadata"] = meta
		patch, err = json.Marshal(fields)
		if err != nil {
			return nil, fmt.Errorf("encoding the patch: %w", err)
		}
	}
	return patch, nil
}
