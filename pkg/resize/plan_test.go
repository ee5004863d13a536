package resize

import (
	"testing"

	"github.com/stretchr/testify/assert"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// claimState builds a bound claim: request, capacity, allocated size ("" for
// none) and resize status.
func claimState(request, capacity, allocated string, status v1.ClaimResourceStatus) *v1.PersistentVolumeClaim {
	pvc := &v1.PersistentVolumeClaim{
		Spec: v1.PersistentVolumeClaimSpec{
			VolumeName: "pv-1",
			Resources:  v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(request)}},
		},
		Status: v1.PersistentVolumeClaimStatus{
			Phase:    v1.ClaimBound,
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse(capacity)},
		},
	}
	if allocated != "" {
		pvc.Status.AllocatedResources = v1.ResourceList{v1.ResourceStorage: resource.MustParse(allocated)}
	}
	if status != "" {
		pvc.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{v1.ResourceStorage: status}
	}
	return pvc
}

func TestDecide(t *testing.T) {
	t.Parallel()
	const (
		inProgress = v1.PersistentVolumeClaimControllerResizeInProgress
		infeasible = v1.PersistentVolumeClaimControllerResizeInfeasible
		nodePend   = v1.PersistentVolumeClaimNodeResizePending
	)
	for name, tc := range map[string]struct {
		pvc    *v1.PersistentVolumeClaim
		pvSize string
		// want is the target, "" for nothing to do.
		want           string
		markStatus     bool
		retryRefused   bool
		fsResizePendin bool
	}{
		"no request above capacity":            {pvc: claimState("1Gi", "1Gi", "", ""), pvSize: "1Gi"},
		"request below capacity: not ours":     {pvc: claimState("1Gi", "2Gi", "", ""), pvSize: "2Gi"},
		"fresh request":                        {pvc: claimState("10Gi", "1Gi", "", ""), pvSize: "1Gi", want: "10Gi", markStatus: true},
		"fresh request after an earlier one":   {pvc: claimState("10Gi", "2Gi", "2Gi", ""), pvSize: "2Gi", want: "10Gi", markStatus: true},
		"restart after the claim status step":  {pvc: claimState("10Gi", "1Gi", "10Gi", inProgress), pvSize: "1Gi", want: "10Gi"},
		"restart after the PV step":            {pvc: claimState("10Gi", "1Gi", "10Gi", inProgress), pvSize: "10Gi", want: "10Gi"},
		"request raised during a resize":       {pvc: claimState("20Gi", "1Gi", "10Gi", inProgress), pvSize: "1Gi", want: "10Gi"},
		"request raised after the PV step":     {pvc: claimState("20Gi", "1Gi", "10Gi", inProgress), pvSize: "10Gi", want: "10Gi"},
		"refused size, request unchanged":      {pvc: claimState("100Gi", "1Gi", "100Gi", infeasible), pvSize: "1Gi", want: "100Gi", retryRefused: true},
		"refused size, request lowered":        {pvc: claimState("5Gi", "1Gi", "100Gi", infeasible), pvSize: "1Gi", want: "5Gi", markStatus: true},
		"no status but allocated, PV expanded": {pvc: claimState("10Gi", "1Gi", "10Gi", ""), pvSize: "10Gi", want: "10Gi"},
		"node expansion pending elsewhere":     {pvc: claimState("10Gi", "1Gi", "10Gi", nodePend), pvSize: "10Gi"},
		"file system resize pending":           {pvc: claimState("10Gi", "1Gi", "", ""), pvSize: "10Gi", fsResizePendin: true},
		"not bound": {pvc: func() *v1.PersistentVolumeClaim {
			p := claimState("10Gi", "1Gi", "", "")
			p.Status.Phase = v1.ClaimPending
			return p
		}(), pvSize: "1Gi"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if tc.fsResizePendin {
				tc.pvc.Status.Conditions = []v1.PersistentVolumeClaimCondition{{Type: v1.PersistentVolumeClaimFileSystemResizePending, Status: v1.ConditionTrue}}
			}
			p := decide(tc.pvc, resource.MustParse(tc.pvSize))
			if tc.want == "" {
				assert.False(t, p.expand, "%+v", p)
				return
			}
			assert.True(t, p.expand)
			assert.Equal(t, tc.want, p.target.String())
			assert.Equal(t, tc.markStatus, p.markStatus, "markStatus")
			assert.Equal(t, tc.retryRefused, p.retryOfInfeasible, "retryOfInfeasible")
		})
	}
}

func TestNeedsAttention(t *testing.T) {
	t.Parallel()
	unbound := claimState("10Gi", "1Gi", "", "")
	unbound.Spec.VolumeName = ""
	for name, tc := range map[string]struct {
		pvc  *v1.PersistentVolumeClaim
		want bool
	}{
		"request above capacity":          {claimState("10Gi", "1Gi", "", ""), true},
		"done":                            {claimState("10Gi", "10Gi", "10Gi", ""), false},
		"never resized":                   {claimState("1Gi", "1Gi", "", ""), false},
		"status left behind":              {claimState("10Gi", "10Gi", "10Gi", v1.PersistentVolumeClaimControllerResizeInfeasible), true},
		"unbound: the provisioner's, not": {unbound, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, NeedsAttention(tc.pvc))
		})
	}
}

func TestMergeResizeConditions(t *testing.T) {
	t.Parallel()
	other := v1.PersistentVolumeClaimCondition{Type: "ModifyingVolume", Status: v1.ConditionTrue}
	pending := v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimFileSystemResizePending, Status: v1.ConditionTrue}
	resizing := v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimResizing, Status: v1.ConditionTrue}
	failed := v1.PersistentVolumeClaimCondition{Type: v1.PersistentVolumeClaimControllerResizeError, Status: v1.ConditionTrue, Message: "no"}
	old := []v1.PersistentVolumeClaimCondition{other, pending}

	assert.Equal(t, []v1.PersistentVolumeClaimCondition{other, resizing}, mergeResizeConditions(old, []v1.PersistentVolumeClaimCondition{resizing}, false))
	assert.Equal(t, []v1.PersistentVolumeClaimCondition{other, pending, failed}, mergeResizeConditions(old, []v1.PersistentVolumeClaimCondition{failed}, true))
	assert.Equal(t, []v1.PersistentVolumeClaimCondition{other}, mergeResizeConditions(append(old, resizing, failed), nil, false), "finishing drops every resize condition")
}
