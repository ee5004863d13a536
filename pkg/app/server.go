package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
)

// writableChecker is what /readyz asks of the export.
type writableChecker interface {
	CheckWritable(ctx context.Context) error
}

// server serves /metrics, /healthz, /readyz and, if enabled, /debug/pprof/.
type server struct {
	listener net.Listener
	http     *http.Server
}

// newServer binds the address at once, so a port clash fails start-up.
// synced tells whether the informers have completed their first list.
func newServer(address string, m *metrics.Metrics, export writableChecker, synced func() bool, leader *leaderelection.HealthzAdaptor, enablePprof bool) (*server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	// Liveness fails only when this replica leads but could not renew the
	// Lease for a while: a restart is the cure. An export outage is not.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := leader.Check(r); err != nil {
			http.Error(w, "leader election: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// Readiness: the informers have listed everything (until then neither a
	// leader nor a standby could provision), and the export is mounted and
	// writable, checked within readyTimeout so a hung NFS mount fails the
	// probe instead of hanging it.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !synced() {
			http.Error(w, "informers: not synced yet", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := export.CheckWritable(ctx); err != nil {
			http.Error(w, "export: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("listening on --http-address %q: %w", address, err)
	}
	return &server{listener: l, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}, nil
}

func (s *server) serve(logger klog.Logger) {
	logger.Info("Serving metrics and probes", "address", s.listener.Addr().String())
	if err := s.http.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error(err, "HTTP server failed")
	}
}

func (s *server) shutdown(logger klog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		logger.Error(err, "Stopping the HTTP server")
	}
}
