package provisioner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

func ptr[T any](v T) *T { return &v }

func TestDataSourceKind(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		ds   *v1.TypedLocalObjectReference
		ref  *v1.TypedObjectReference
		want sourceKind
	}{
		"none":                      {want: sourceNone},
		"claim in dataSource":       {ds: &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}, want: sourceClaim},
		"claim in dataSourceRef":    {ref: &v1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}, want: sourceClaim},
		"claim, empty group":        {ref: &v1.TypedObjectReference{APIGroup: ptr(""), Kind: "PersistentVolumeClaim", Name: "src"}, want: sourceClaim},
		"claim of another group":    {ref: &v1.TypedObjectReference{APIGroup: ptr("example.com"), Kind: "PersistentVolumeClaim", Name: "src"}, want: sourcePopulator},
		"snapshot":                  {ds: &v1.TypedLocalObjectReference{APIGroup: ptr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "s"}, want: sourceSnapshot},
		"snapshot in ref":           {ref: &v1.TypedObjectReference{APIGroup: ptr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "s"}, want: sourceSnapshot},
		"snapshot of another group": {ref: &v1.TypedObjectReference{APIGroup: ptr("example.com"), Kind: "VolumeSnapshot", Name: "s"}, want: sourcePopulator},
		"populator":                 {ref: &v1.TypedObjectReference{APIGroup: ptr("hello.example.com"), Kind: "Hello", Name: "h"}, want: sourcePopulator},
		// The API server mirrors; should the two disagree, the ref wins.
		"ref wins": {
			ds:   &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"},
			ref:  &v1.TypedObjectReference{APIGroup: ptr("hello.example.com"), Kind: "Hello", Name: "h"},
			want: sourcePopulator,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pvc := claim("ns", "c", "u")
			pvc.Spec.DataSource, pvc.Spec.DataSourceRef = tc.ds, tc.ref
			_, got := dataSource(pvc)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestProvisionRefusesDataSources(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		ds      *v1.TypedLocalObjectReference
		ref     *v1.TypedObjectReference
		wantErr string
	}{
		"snapshot": {
			ds:      &v1.TypedLocalObjectReference{APIGroup: ptr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "snap-1"},
			ref:     &v1.TypedObjectReference{APIGroup: ptr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "snap-1"},
			wantErr: `VolumeSnapshot "snap-1", but NFS subdirectories have no snapshots`,
		},
		"claim": {
			ds:      &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"},
			ref:     &v1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "src"},
			wantErr: `PersistentVolumeClaim "src", but this provisioner can't clone volumes yet`,
		},
		"claim in dataSourceRef only": {
			ref:     &v1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "src"},
			wantErr: "can't clone volumes yet",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testPath)
			before := snapshot(t, e.root)
			pvc := claim("ns", "c", "u")
			pvc.Spec.DataSource, pvc.Spec.DataSourceRef = tc.ds, tc.ref
			pv, err := e.provision(t, class("nfs", nil), pvc)
			require.Error(t, err)
			assert.Nil(t, pv)
			assert.Contains(t, err.Error(), tc.wantErr)
			var ignored *controller.IgnoredError
			assert.NotErrorAs(t, err, &ignored, "a refusal the library turns into a Warning, not an ignored claim")
			assert.Equal(t, before, snapshot(t, e.root), "no directory, no ledger")
			assert.InDelta(t, 1, e.count(metrics.OpProvision, metrics.Refused), 0)
		})
	}
}

func TestProvisionIgnoresPopulatorClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testPath)
	before := snapshot(t, e.root)
	pvc := claim("ns", "c", "u")
	pvc.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: ptr("hello.example.com"), Kind: "Hello", Name: "h"}
	pv, err := e.provision(t, class("nfs", nil), pvc)
	assert.Nil(t, pv)
	// The library's own check: a type assertion on the bare error.
	ignored, ok := err.(*controller.IgnoredError) //nolint:errorlint // as the library does
	require.True(t, ok, "want a bare *controller.IgnoredError, got %T: %v", err, err)
	assert.Contains(t, ignored.Reason, `"Hello" "h" of API group "hello.example.com"`)
	assert.Equal(t, before, snapshot(t, e.root), "no directory, no ledger")
	for _, o := range []string{metrics.Success, metrics.Refused, metrics.Failed} {
		assert.InDelta(t, 0, e.count(metrics.OpProvision, o), 0, "outcome %s", o)
	}
}
