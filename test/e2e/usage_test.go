package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// TestUsageFollowsData writes data over NFS into a claim's volume: its
// nfs_provisioner_volume_used_bytes follows what du -s says of the
// directory, and going above the claim's size raises one VolumeOverCapacity
// Warning, not one per scan.
func TestUsageFollowsData(t *testing.T) {
	const interval = 2 * time.Second
	e := newEnv(t, envOptions{})
	p := e.startProvisioner("--usage-scan-interval=" + interval.String())
	const ns = "team-a"
	e.namespace(ns)
	e.class("nfs", nil)
	e.claim(ns, "data", "nfs", func(pvc *v1.PersistentVolumeClaim) {
		pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("1Mi")
	})
	_, pv := e.waitBound(ns, "data", 30*time.Second)
	dir := filepath.Join(e.exportDir, ns+"-data-"+pv.Name)
	series := func(name string) string {
		return fmt.Sprintf(`%s{export="default",namespace=%q,persistentvolume=%q,persistentvolumeclaim=%q}`, name, ns, pv.Name, "data")
	}
	assert.Equal(t, float64(1<<20), waitMetric(t, e.ctx, p, series("nfs_provisioner_volume_capacity_bytes"), func(float64) bool { return true }))

	// follow writes a file over NFS and waits until the metric says what du
	// says of the directory.
	follow := func(name string, size int) {
		t.Helper()
		require.NoError(t, e.nfs.WriteFile(e.ctx, pv.Spec.NFS.Server, pv.Spec.NFS.Path, name, make([]byte, size)))
		written := time.Now()
		want := duBytes(t, dir)
		got := waitMetric(t, e.ctx, p, series("nfs_provisioner_volume_used_bytes"), func(v float64) bool { return v == want })
		t.Logf("after writing %d bytes: used_bytes %v (du -sB1 %v), %v after the write", size, got, want, time.Since(written).Round(time.Millisecond))
	}
	follow("small", 300<<10)
	assert.Empty(t, eventsWithReason(e.events(ns, "data"), "VolumeOverCapacity"))

	follow("big", 1<<20)
	ev := e.waitEvent(ns, "data", "VolumeOverCapacity", "more than its capacity of 1.0 MiB", 3*interval)
	assert.Equal(t, "Warning", ev.Type)
	t.Logf("Event: %s", ev.Message)
	_, body, err := p.Get(e.ctx, "/metrics")
	require.NoError(t, err)
	assert.Equal(t, 3.0, metricValue(t, body, series("nfs_provisioner_volume_used_inodes")), "the directory and two files")

	// Scans go on; the Warning is not repeated while the volume stays above.
	scans := metricValue(t, body, `nfs_provisioner_usage_scans_total{outcome="success"}`)
	waitMetric(t, e.ctx, p, `nfs_provisioner_usage_scans_total{outcome="success"}`, func(v float64) bool { return v >= scans+2 })
	over := eventsWithReason(e.events(ns, "data"), "VolumeOverCapacity")
	require.Len(t, over, 1)
	assert.Equal(t, int32(1), over[0].Count, "repeated while still above capacity")
}

func eventsWithReason(evs []v1.Event, reason string) []v1.Event {
	var out []v1.Event
	for _, ev := range evs {
		if ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// waitMetric polls /metrics until series has a sample for which ok holds,
// and returns it.
func waitMetric(t *testing.T, ctx context.Context, p *framework.ProvisionerProcess, series string, ok func(float64) bool) float64 {
	t.Helper()
	var last float64 = -1
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, body, err := p.Get(ctx, "/metrics")
		if err != nil {
			return false, nil
		}
		last = sample(body, series)
		return last >= 0 && ok(last), nil
	})
	require.NoError(t, err, "%s: last %v", series, last)
	return last
}

// duBytes is du -sxB1 of dir: allocated bytes, as the scanner counts them.
func duBytes(t *testing.T, dir string) float64 {
	t.Helper()
	out, err := exec.Command("du", "-sxB1", dir).Output()
	require.NoError(t, err)
	v, err := strconv.ParseFloat(strings.Fields(string(out))[0], 64)
	require.NoError(t, err)
	return v
}
