package app

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
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
		"pprof behind its flag": {exportDir: t.TempDir(), pprof: true, wantReady: http.StatusOK, wantReadyIn: "ok", wantPprof: http.StatusNotFound},
		"informers not synced":  {exportDir: t.TempDir(), notSynced: true, wantReady: http.StatusServiceUnavailable, wantReadyIn: "not synced", wantPprof: http.StatusNotFound},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := metrics.New("default")
			export := exportfs.New(tc.exportDir, time.Second)
			ready := one("default", export)
			m.RegisterExport("default", export, ready[0].ready.check, time.Second, logger)
			synced := func() bool { return !tc.notSynced }
			pprofAddress := ""
			if tc.pprof {
				pprofAddress = "127.0.0.1:0"
			}
			srv, err := newServer("127.0.0.1:0", m, ready, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), pprofAddress)
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
			assert.Contains(t, body, `nfs_provisioner_operations_total{export="default",operation="provision",outcome="refused"} 0`)
			if !tc.notSynced && tc.wantReady == http.StatusOK {
				assert.Contains(t, body, `nfs_provisioner_export_usage_up{export="default"} 1`)
				assert.Contains(t, body, `nfs_provisioner_export_ready{export="default"} 1`)
				assert.Contains(t, body, "nfs_provisioner_export_free_bytes")
			} else if !tc.notSynced {
				assert.Contains(t, body, `nfs_provisioner_export_usage_up{export="default"} 0`)
				assert.Contains(t, body, `nfs_provisioner_export_ready{export="default"} 0`)
			}
			code, _ = get(t, base+"/debug/pprof/")
			assert.Equal(t, tc.wantPprof, code, "profiles are never on the metrics port")
			if tc.pprof {
				code, _ = get(t, "http://"+srv.pprofListener.Addr().String()+"/debug/pprof/")
				assert.Equal(t, http.StatusOK, code, "profiles on --pprof-address")
			} else {
				assert.Nil(t, srv.pprofListener)
			}
		})
	}
}

func TestServerAddressInUse(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	export := one("default", exportfs.New(t.TempDir(), time.Second))
	synced := func() bool { return true }
	first, err := newServer("127.0.0.1:0", m, export, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), "")
	require.NoError(t, err)
	defer first.listener.Close()
	_, err = newServer(first.listener.Addr().String(), m, export, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), "")
	require.ErrorContains(t, err, "listening on --http-address")
	_, err = newServer("127.0.0.1:0", m, export, synced, leaderelection.NewLeaderHealthzAdaptor(time.Second), first.listener.Addr().String())
	require.ErrorContains(t, err, "listening on --pprof-address")
}

// one is the readiness of a single export.
func one(name string, export writableChecker) []exportReadiness {
	return []exportReadiness{{name, newReadiness(export, readyMaxAge, time.Second)}}
}

// TestReadyWhileOneExportIsWritable checks the readiness rule of several
// exports: ready while any is writable, the body naming each.
func TestReadyWhileOneExportIsWritable(t *testing.T) {
	t.Parallel()
	logger, _ := ktesting.NewTestContext(t)
	missing := filepath.Join(t.TempDir(), "missing")
	for name, tc := range map[string]struct {
		dirs     []string
		code     int
		contains []string
	}{
		"one of two writable": {[]string{t.TempDir(), missing}, http.StatusOK, []string{"export fast: ok", "export bulk: ", "does not exist"}},
		"none writable":       {[]string{missing, missing}, http.StatusServiceUnavailable, []string{"export fast: ", "export bulk: ", "does not exist"}},
		"both writable":       {[]string{t.TempDir(), t.TempDir()}, http.StatusOK, []string{"export fast: ok", "export bulk: ok"}},
	} {
		ready := append(one("fast", exportfs.New(tc.dirs[0], time.Second)), one("bulk", exportfs.New(tc.dirs[1], time.Second))...)
		srv, err := newServer("127.0.0.1:0", metrics.New(), ready, func() bool { return true }, leaderelection.NewLeaderHealthzAdaptor(time.Second), "")
		require.NoError(t, err)
		go srv.serve(logger)
		code, body := get(t, "http://"+srv.listener.Addr().String()+"/readyz")
		srv.shutdown(logger)
		assert.Equal(t, tc.code, code, name)
		for _, s := range tc.contains {
			assert.Contains(t, body, s, name)
		}
	}
}

// countingChecker counts writability checks; each blocks until release is
// closed (nil: returns at once).
type countingChecker struct {
	calls   atomic.Int32
	release chan struct{}
}

func (c *countingChecker) CheckWritable(ctx context.Context) error {
	c.calls.Add(1)
	if c.release != nil {
		<-c.release // a hung NFS call ignores ctx
	}
	return nil
}

// TestReadyzRateLimited checks that /readyz requests, however many, do not
// turn into writes on the export at their own rate.
func TestReadyzRateLimited(t *testing.T) {
	t.Parallel()
	logger, _ := ktesting.NewTestContext(t)
	export := &countingChecker{}
	srv, err := newServer("127.0.0.1:0", metrics.New(), one("default", export), func() bool { return true }, leaderelection.NewLeaderHealthzAdaptor(time.Second), "")
	require.NoError(t, err)
	go srv.serve(logger)
	defer srv.shutdown(logger)
	url := "http://" + srv.listener.Addr().String() + "/readyz"

	const requests, clients = 300, 10
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range requests / clients {
				code, body := get(t, url)
				assert.Equal(t, http.StatusOK, code, body)
			}
		})
	}
	wg.Wait()
	// One check, plus one per readyMaxAge the requests took.
	bound := 1 + int32(time.Since(start)/readyMaxAge) + 1
	assert.LessOrEqual(t, export.calls.Load(), bound, "%d requests", requests)
	assert.GreaterOrEqual(t, export.calls.Load(), int32(1))
}

// TestReadinessHungExport checks that a check that never returns fails the
// requests within the timeout, and that requests meanwhile don't start more.
func TestReadinessHungExport(t *testing.T) {
	t.Parallel()
	export := &countingChecker{release: make(chan struct{})}
	defer close(export.release)
	r := newReadiness(export, time.Hour, 100*time.Millisecond)
	for range 5 {
		start := time.Now()
		err := r.check(context.Background())
		require.ErrorContains(t, err, "writability check still running after 100ms")
		assert.Less(t, time.Since(start), 2*time.Second)
	}
	assert.EqualValues(t, 1, export.calls.Load(), "one check in flight at a time")
}

// hungChecker is a countingChecker whose breaker says it is hung.
type hungChecker struct{ countingChecker }

func (h *hungChecker) Hung() (time.Time, int) { return time.Unix(1700000000, 0), 1 }

// TestReadinessKnownHung checks that an export known to be hung fails the
// check at once, while the check still runs, so it can tell when the
// export answers again.
func TestReadinessKnownHung(t *testing.T) {
	t.Parallel()
	export := &hungChecker{countingChecker{release: make(chan struct{})}}
	r := newReadiness(export, time.Hour, time.Minute)
	start := time.Now()
	err := r.check(context.Background())
	require.ErrorContains(t, err, "not answering since 2023-11-14T22:13:20Z")
	assert.Less(t, time.Since(start), time.Second, "no waiting for the timeout")
	close(export.release)
	require.Eventually(t, func() bool { return r.check(context.Background()) == nil }, 5*time.Second, 10*time.Millisecond, "the check that kept running tells it answers")
	assert.EqualValues(t, 1, export.calls.Load())
}
