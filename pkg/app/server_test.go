package app

import (
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2/ktesting"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestServerEndpoints(t *testing.T) {
	t.Parallel()
	logger, _ := ktesting.NewTestContext(t)
	cases := map[string]struct {
		exportDir   string
		pprof       bool
		notSynced   bool
		wantReady   int
		wantReadyIn string
		wantPprof   int
	}{
		"writable export":       {exportDir: t.TempDir(), wantReady: http.StatusOK, wantReadyIn: "ok", wantPprof: http.StatusNotFound},
		"export not mounted":    {exportDir: filepath.Join(t.TempDir(), "missing"), wantReady: http.StatusServiceUnavailable, wantReadyIn: "does not exist", wantPprof: http.StatusNotFound},
		"pprof behind its flag": {exportDir: t.TempDir(), pprof: true, wantReady: http.StatusOK, wantReadyIn: "ok", wantPprof: http.StatusOK},
		"informers not synced":  {exportDir: t.TempDir(), notSynced: true, wantReady: http.StatusServiceUnavailable, wantReadyIn: "not synced", wantPprof: http.StatusNotFound},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := metrics.New()
			export := exportfs.New(tc.exportDir, time.Second)
			m.RegisterExportUsage(export, time.Second, logger)
			synced := func() bool { return !tc.notSynced }
			srv, err := newServer("127.0.0.1:0", m, export, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), tc.pprof)
			require.NoError(t, err)
			go srv.serve(logger)
			defer srv.shutdown(logger)
			base := "http://" + srv.listener.Addr().String()

			code, body := get(t, base+"/readyz")
			assert.Equal(t, tc.wantReady, code)
			assert.Contains(t, body, tc.wantReadyIn)
			code, _ = get(t, base+"/healthz")
			assert.Equal(t, http.StatusOK, code, "an export outage is not a liveness failure")
			code, body = get(t, base+"/metrics")
			assert.Equal(t, http.StatusOK, code)
			assert.Contains(t, body, "nfs_provisioner_leader 0")
			assert.Contains(t, body, `nfs_provisioner_operations_total{operation="provision",outcome="refused"} 0`)
			if !tc.notSynced && tc.wantReady == http.StatusOK {
				assert.Contains(t, body, "nfs_provisioner_export_usage_up 1")
				assert.Contains(t, body, "nfs_provisioner_export_free_bytes")
			} else if !tc.notSynced {
				assert.Contains(t, body, "nfs_provisioner_export_usage_up 0")
			}
			code, _ = get(t, base+"/debug/pprof/")
			assert.Equal(t, tc.wantPprof, code)
		})
	}
}

func TestServerAddressInUse(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	export := exportfs.New(t.TempDir(), time.Second)
	synced := func() bool { return true }
	first, err := newServer("127.0.0.1:0", m, export, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), false)
	require.NoError(t, err)
	defer first.listener.Close()
	_, err = newServer(first.listener.Addr().String(), m, export, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), false)
	require.ErrorContains(t, err, "listening on --http-address")
}
