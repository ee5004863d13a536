package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
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

// server serves /metrics, /healthz and /readyz on one listener and, if
// enabled, /debug/pprof/ on a listener of its own.
type server struct {
	listener net.Listener
	http     *http.Server
	// pprofListener and pprof are nil unless profiling is enabled.
	pprofListener net.Listener
	pprof         *http.Server
}

// readyMaxAge is how old a /readyz answer may be. Probes and scrapers are
// unauthenticated: without it, every request would write on the export.
const readyMaxAge = time.Second

// exportReadiness is one export's readiness check, by name.
type exportReadiness struct {
	name  string
	ready *readiness
}

// newServer binds the addresses at once, so a port clash fails start-up.
// synced tells whether the informers have completed their first list.
// pprofAddress "" serves no profiles.
func newServer(address string, m *metrics.Metrics, exports []exportReadiness, synced func() bool, leader *leaderelection.HealthzAdaptor, pprofAddress string) (*server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	// Liveness fails only when this replica leads but its last renewal of
	// the Lease is older than the lease duration plus the adaptor's timeout:
	// it should have exited after the renew deadline, so it is stuck, and a
	// restart is the cure. An export outage is not.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := leader.Check(r); err != nil {
			http.Error(w, "leader election: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// Readiness: the informers have listed everything (until then neither a
	// leader nor a standby could provision), and at least one export is
	// mounted and writable, each checked within readyTimeout so a hung NFS
	// mount fails the probe instead of hanging it. Not all of them: an
	// unready pod leaves the metrics Service, so one dead export of several
	// would hide the very metrics and alerts that tell which (export_ready),
	// and stall every rollout, while the others provision on.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !synced() {
			http.Error(w, "informers: not synced yet", http.StatusServiceUnavailable)
			return
		}
		results := make([]error, len(exports))
		var wg sync.WaitGroup
		for i, e := range exports {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = e.ready.check(r.Context())
			}()
		}
		wg.Wait()
		var body strings.Builder
		writable := 0
		for i, e := range exports {
			if results[i] == nil {
				writable++
				fmt.Fprintf(&body, "export %s: ok\n", e.name)
			} else {
				fmt.Fprintf(&body, "export %s: %v\n", e.name, results[i])
			}
		}
		if writable == 0 {
			http.Error(w, strings.TrimSuffix(body.String(), "\n"), http.StatusServiceUnavailable)
			return
		}
		if len(exports) == 1 {
			fmt.Fprintln(w, "ok")
			return
		}
		fmt.Fprint(w, body.String())
	})
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("listening on --http-address %q: %w", address, err)
	}
	s := &server{listener: l, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	if pprofAddress == "" {
		return s, nil
	}
	// Profiles on their own listener (loopback by default), never behind
	// the metrics Service: they expose memory and a CPU profile costs CPU.
	pm := http.NewServeMux()
	pm.HandleFunc("/debug/pprof/", pprof.Index)
	pm.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
	pm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	pm.HandleFunc("/debug/pprof/trace", pprof.Trace)
	pl, err := net.Listen("tcp", pprofAddress)
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("listening on --pprof-address %q: %w", pprofAddress, err)
	}
	s.pprofListener, s.pprof = pl, &http.Server{Handler: pm, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

func (s *server) serve(logger klog.Logger) {
	if s.pprof != nil {
		logger.Info("Serving profiles", "address", s.pprofListener.Addr().String())
		go func() {
			if err := s.pprof.Serve(s.pprofListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "Profile server failed")
			}
		}()
	}
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
	if s.pprof != nil {
		if err := s.pprof.Shutdown(ctx); err != nil {
			logger.Error(err, "Stopping the profile server")
		}
	}
}

// readiness runs the export's writability check at most once per maxAge
// whatever the request rate: requests within maxAge of the last result get
// it, and requests during a check wait for that one.
type readiness struct {
	export  writableChecker
	maxAge  time.Duration
	timeout time.Duration

	mu      sync.Mutex
	checked time.Time     // when the last result was obtained
	result  error         // the last result
	running chan struct{} // closed when the check in flight ends; nil if none
}

func newReadiness(export writableChecker, maxAge, timeout time.Duration) *readiness {
	return &readiness{export: export, maxAge: maxAge, timeout: timeout}
}

// check returns a result at most maxAge old, waiting at most timeout for a
// fresh one: a hung export fails the request, it does not hang it.
func (r *readiness) check(ctx context.Context) error {
	r.mu.Lock()
	if !r.checked.IsZero() && time.Since(r.checked) < r.maxAge {
		err := r.result
		r.mu.Unlock()
		return err
	}
	done := r.running
	if done == nil {
		done = make(chan struct{})
		r.running = done
		// Not the request's context: the check is shared, and a hung one
		// is bounded by timeout, not by whoever asked first.
		go r.run(done)
	}
	r.mu.Unlock()
	if h, ok := r.export.(interface{ Hung() (time.Time, int) }); ok {
		// Known hung: no waiting. The check started above still runs (as
		// the export's probe when it is due) and tells when it answers.
		if since, _ := h.Hung(); !since.IsZero() {
			select {
			case <-done:
			default:
				return fmt.Errorf("not answering since %s: it may be hung or unreachable, check the NFS server and the mount", since.UTC().Format(time.RFC3339))
			}
		}
	}

	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case <-done:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.result
	case <-t.C:
		return fmt.Errorf("writability check still running after %s", r.timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *readiness) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	err := r.export.CheckWritable(ctx)
	r.mu.Lock()
	r.result, r.checked, r.running = err, time.Now(), nil
	r.mu.Unlock()
	close(done)
}
