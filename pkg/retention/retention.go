// Package retention removes the archives of released volumes once they are
// older than --archive-retention, on the leader. Only archives this
// provisioner made are touched: those its ledger records under the name it
// gave them, never an archived-* directory of the incumbent's or an admin's,
// a retained directory or a live volume.
package retention

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/ledger"
)

// Archives lists and removes the provisioner's archives; the Provisioner
// implements it.
type Archives interface {
	Archives(ctx context.Context) ([]ledger.Record, error)
	RemoveArchive(ctx context.Context, rec ledger.Record) error
}

// Sizer measures an archive; exportfs.FS implements it.
type Sizer interface {
	Scan(ctx context.Context, rel string, opts exportfs.ScanOptions) (exportfs.Tally, error)
}

// Export is the archives of one export.
type Export struct {
	Name     string // the export's name, the metrics' export label
	Archives Archives
	// Sizes, when set, measures each archive of this export once for the
	// bytes metric.
	Sizes Sizer
}

// Config is what a Remover needs.
type Config struct {
	// Exports are handled each on its own: its archives listed, measured
	// and removed on it only.
	Exports []Export
	// Wait holds the measuring calls of every export to one rate (see
	// exportfs.ScanOptions).
	Wait func(ctx context.Context) error
	// Retention is how long an archive is kept; 0 keeps archives forever
	// (then only the metrics are kept up to date).
	Retention time.Duration
	Clock     clock.WithTicker
}

// Remover applies the retention. Run it only while leading.
type Remover struct {
	cfg Config

	mu    sync.Mutex
	state []*exportState // by index in cfg.Exports
}

// exportState is what the metrics say of one export.
type exportState struct {
	count   int
	bytes   map[string]uint64 // measured archives, by directory
	removed uint64
}

// New returns a Remover; cfg.Clock defaults to the real clock.
func New(cfg Config) *Remover {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	r := &Remover{cfg: cfg}
	for range cfg.Exports {
		r.state = append(r.state, &exportState{bytes: map[string]uint64{}})
	}
	return r
}

// Interval is how often Run looks at the archives: a quarter of the
// retention, between a second and an hour, so an archive goes at most that
// late.
func (r *Remover) Interval() time.Duration {
	if r.cfg.Retention <= 0 {
		return time.Hour
	}
	return min(max(r.cfg.Retention/4, time.Second), time.Hour)
}

// Run applies the retention every Interval until ctx ends, in a loop of
// its own for each export: a hung export, or a long removal on one,
// delays only that export's. It returns once every loop has.
func (r *Remover) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("retention")
	var wg sync.WaitGroup
	for i := range r.cfg.Exports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := r.cfg.Clock.NewTicker(r.Interval())
			defer t.Stop()
			for {
				r.once(ctx, logger, i)
				select {
				case <-ctx.Done():
					return
				case <-t.C():
				}
			}
		}()
	}
	wg.Wait()
}

// Once removes every archive past the retention and refreshes the metrics,
// one export after the other. An export whose archives can't be listed is
// logged and skipped, its metrics left as they were; the others go on.
func (r *Remover) Once(ctx context.Context, logger klog.Logger) {
	for i := range r.cfg.Exports {
		r.once(ctx, logger, i)
	}
}

// once is Once for the export cfg.Exports[i].
func (r *Remover) once(ctx context.Context, logger klog.Logger, i int) {
	ex, st := r.cfg.Exports[i], r.state[i]
	logger = logger.WithValues("export", ex.Name)
	archives, err := ex.Archives.Archives(ctx)
	if err != nil {
		logger.Info("Listing the archives of an export failed; retried later", "err", err.Error())
		return
	}
	now := r.cfg.Clock.Now()
	kept := map[string]bool{}
	for _, a := range archives {
		age := now.Sub(a.Time)
		if r.cfg.Retention > 0 && age > r.cfg.Retention {
			if err := ex.Archives.RemoveArchive(ctx, a); err != nil {
				logger.Info("Removing an archive past its retention failed; retried later", "archive", a.Dir, "PV", a.PV, "age", age.Round(time.Second), "err", err.Error())
				kept[a.Dir] = true
				continue
			}
			logger.Info("Removed an archive past its retention", "archive", a.Dir, "PV", a.PV, "age", age.Round(time.Second), "retention", r.cfg.Retention)
			r.mu.Lock()
			st.removed++
			r.mu.Unlock()
			continue
		}
		kept[a.Dir] = true
	}
	r.measure(ctx, logger, ex, st, kept)
}

// measure keeps the count and, once per archive, its size: an archive
// doesn't change, as no claim can reach it.
func (r *Remover) measure(ctx context.Context, logger klog.Logger, ex Export, st *exportState, kept map[string]bool) {
	r.mu.Lock()
	for dir := range st.bytes {
		if !kept[dir] {
			delete(st.bytes, dir)
		}
	}
	var todo []string
	for dir := range kept {
		if _, ok := st.bytes[dir]; !ok {
			todo = append(todo, dir)
		}
	}
	st.count = len(kept)
	r.mu.Unlock()
	if ex.Sizes == nil {
		return
	}
	for _, dir := range todo {
		t, err := ex.Sizes.Scan(ctx, dir, exportfs.ScanOptions{Wait: r.cfg.Wait})
		if err != nil {
			logger.V(2).Info("Measuring an archive failed; retried later", "archive", dir, "err", err.Error())
			continue
		}
		r.mu.Lock()
		st.bytes[dir] = t.Bytes
		r.mu.Unlock()
	}
}

var (
	exportLabel  = []string{"export"}
	descArchives = prometheus.NewDesc("nfs_provisioner_archives", "Archives of released volumes this provisioner made and keeps, at its last look.", exportLabel, nil)
	descBytes    = prometheus.NewDesc("nfs_provisioner_archive_bytes", "Bytes allocated by those archives (each measured once).", exportLabel, nil)
	descRemoved  = prometheus.NewDesc("nfs_provisioner_archives_removed_total", "Archives removed past --archive-retention.", exportLabel, nil)
)

// Collector exports the archive metrics.
func (r *Remover) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Remover }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descArchives
	ch <- descBytes
	ch <- descRemoved
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	for i, ex := range c.r.cfg.Exports {
		st := c.r.state[i]
		var total uint64
		for _, b := range st.bytes {
			total += b
		}
		ch <- prometheus.MustNewConstMetric(descArchives, prometheus.GaugeValue, float64(st.count), ex.Name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(total), ex.Name)
		ch <- prometheus.MustNewConstMetric(descRemoved, prometheus.CounterValue, float64(st.removed), ex.Name)
	}
}
