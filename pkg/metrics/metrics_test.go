package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2/ktesting"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
)

type fakeUsage struct {
	u       exportfs.Usage
	err     error
	since   time.Time
	blocked int
}

func (f fakeUsage) Usage(context.Context) (exportfs.Usage, error) { return f.u, f.err }
func (f fakeUsage) Hung() (time.Time, int)                        { return f.since, f.blocked }

func TestExposition(t *testing.T) {
	t.Parallel()
	logger, _ := ktesting.NewTestContext(t)
	m := New("fast", "bulk")
	m.RegisterExport("fast", fakeUsage{u: exportfs.Usage{FreeBytes: 1024, TotalBytes: 4096, FreeInodes: 10, TotalInodes: 20}}, func(context.Context) error { return nil }, time.Second, logger)
	m.RegisterExport("bulk", fakeUsage{err: errors.New("hung")}, func(context.Context) error { return errors.New("hung") }, time.Second, logger)
	m.ObserveOperation(OpProvision, Success, "fast", 30*time.Millisecond)
	m.ObserveOperation(OpDelete, Refused, "bulk", time.Millisecond)
	m.ObserveOperation(OpProvision, Refused, NoExport, time.Millisecond)
	m.SetLeader(true)
	m.SetWaitingForIncumbent(true)
	m.CountResize(Success)
	m.CountResize(Infeasible)
	m.CountResize(Infeasible)

	problems, err := testutil.GatherAndLint(m.Registry)
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")

	want := `
# HELP nfs_provisioner_export_blocked_calls Filesystem calls given up after a timeout that are still blocked in the export, each holding an OS thread.
# TYPE nfs_provisioner_export_blocked_calls gauge
nfs_provisioner_export_blocked_calls{export="bulk"} 0
nfs_provisioner_export_blocked_calls{export="fast"} 0
# HELP nfs_provisioner_export_free_bytes Bytes available to the provisioner on the export.
# TYPE nfs_provisioner_export_free_bytes gauge
nfs_provisioner_export_free_bytes{export="fast"} 1024
# HELP nfs_provisioner_export_hung_seconds Seconds since a call on the export timed out with no call answering since; 0 while the export answers.
# TYPE nfs_provisioner_export_hung_seconds gauge
nfs_provisioner_export_hung_seconds{export="bulk"} 0
nfs_provisioner_export_hung_seconds{export="fast"} 0
# HELP nfs_provisioner_export_free_inodes Inodes available on the export.
# TYPE nfs_provisioner_export_free_inodes gauge
nfs_provisioner_export_free_inodes{export="fast"} 10
# HELP nfs_provisioner_export_inodes Total inodes of the export's filesystem.
# TYPE nfs_provisioner_export_inodes gauge
nfs_provisioner_export_inodes{export="fast"} 20
# HELP nfs_provisioner_export_size_bytes Size of the export's filesystem in bytes.
# TYPE nfs_provisioner_export_size_bytes gauge
nfs_provisioner_export_size_bytes{export="fast"} 4096
# HELP nfs_provisioner_export_usage_up 1 if the export's usage could be read at the last scrape, 0 if it failed or timed out.
# TYPE nfs_provisioner_export_usage_up gauge
nfs_provisioner_export_usage_up{export="bulk"} 0
nfs_provisioner_export_usage_up{export="fast"} 1
# HELP nfs_provisioner_export_ready 1 if the export was mounted and writable at the last readiness check, 0 if not.
# TYPE nfs_provisioner_export_ready gauge
nfs_provisioner_export_ready{export="bulk"} 0
nfs_provisioner_export_ready{export="fast"} 1
# HELP nfs_provisioner_leader 1 while this replica holds the leader Lease and provisions, 0 while it stands by.
# TYPE nfs_provisioner_leader gauge
nfs_provisioner_leader 1
# HELP nfs_provisioner_operations_total Provision and delete operations, by export and outcome: success, refused (bad claim, class or PV) or error (export or API failure); export is empty for claims refused or failed before an export was chosen.
# TYPE nfs_provisioner_operations_total counter
nfs_provisioner_operations_total{export="bulk",operation="delete",outcome="error"} 0
nfs_provisioner_operations_total{export="fast",operation="delete",outcome="error"} 0
nfs_provisioner_operations_total{export="bulk",operation="delete",outcome="refused"} 1
nfs_provisioner_operations_total{export="fast",operation="delete",outcome="refused"} 0
nfs_provisioner_operations_total{export="bulk",operation="delete",outcome="success"} 0
nfs_provisioner_operations_total{export="fast",operation="delete",outcome="success"} 0
nfs_provisioner_operations_total{export="",operation="provision",outcome="error"} 0
nfs_provisioner_operations_total{export="bulk",operation="provision",outcome="error"} 0
nfs_provisioner_operations_total{export="fast",operation="provision",outcome="error"} 0
nfs_provisioner_operations_total{export="",operation="provision",outcome="refused"} 1
nfs_provisioner_operations_total{export="bulk",operation="provision",outcome="refused"} 0
nfs_provisioner_operations_total{export="fast",operation="provision",outcome="refused"} 0
nfs_provisioner_operations_total{export="bulk",operation="provision",outcome="success"} 0
nfs_provisioner_operations_total{export="fast",operation="provision",outcome="success"} 1
# HELP nfs_provisioner_resizes_total Volume expansion attempts, by outcome: success (recorded on the claim and its PV), infeasible (refused by the feasibility check) or error (API failure; retried).
# TYPE nfs_provisioner_resizes_total counter
nfs_provisioner_resizes_total{outcome="error"} 0
nfs_provisioner_resizes_total{outcome="infeasible"} 2
nfs_provisioner_resizes_total{outcome="success"} 1
# HELP nfs_provisioner_waiting_for_incumbent 1 while this replica would provision but a running nfs-subdir-external-provisioner leads (or it cannot tell yet), 0 otherwise.
# TYPE nfs_provisioner_waiting_for_incumbent gauge
nfs_provisioner_waiting_for_incumbent 1
`
	require.NoError(t, testutil.GatherAndCompare(m.Registry, strings.NewReader(want),
		"nfs_provisioner_export_blocked_calls", "nfs_provisioner_export_free_bytes", "nfs_provisioner_export_hung_seconds",
		"nfs_provisioner_export_free_inodes", "nfs_provisioner_export_inodes",
		"nfs_provisioner_export_size_bytes", "nfs_provisioner_export_usage_up", "nfs_provisioner_export_ready", "nfs_provisioner_leader",
		"nfs_provisioner_operations_total", "nfs_provisioner_resizes_total", "nfs_provisioner_waiting_for_incumbent"))
	assert.Equal(t, 2, testutil.CollectAndCount(m.duration))
}

func TestUsageFailureIsReported(t *testing.T) {
	t.Parallel()
	logger, _ := ktesting.NewTestContext(t)
	m := New()
	m.RegisterExport("default", fakeUsage{err: errors.New("export hung"), since: time.Now().Add(-time.Minute), blocked: 3}, func(context.Context) error { return nil }, time.Second, logger)
	want := `
# HELP nfs_provisioner_export_blocked_calls Filesystem calls given up after a timeout that are still blocked in the export, each holding an OS thread.
# TYPE nfs_provisioner_export_blocked_calls gauge
nfs_provisioner_export_blocked_calls{export="default"} 3
# HELP nfs_provisioner_export_usage_up 1 if the export's usage could be read at the last scrape, 0 if it failed or timed out.
# TYPE nfs_provisioner_export_usage_up gauge
nfs_provisioner_export_usage_up{export="default"} 0
`
	require.NoError(t, testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "nfs_provisioner_export_usage_up", "nfs_provisioner_export_free_bytes", "nfs_provisioner_export_blocked_calls"))
	mfs, err := m.Registry.Gather()
	require.NoError(t, err)
	var hung float64
	for _, mf := range mfs {
		if mf.GetName() == "nfs_provisioner_export_hung_seconds" {
			hung = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	assert.InDelta(t, 60, hung, 5, "seconds since the export stopped answering")
}
