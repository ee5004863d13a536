// Package metrics defines the provisioner's Prometheus metrics, all named
// nfs_provisioner_*, on a registry of their own.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
)

const namespace = "nfs_provisioner"

// Operations.
const (
	OpProvision = "provision"
	OpDelete    = "delete"
)

// Outcomes of an operation.
const (
	// Success: the directory was created, deleted, archived or retained.
	Success = "success"
	// Refused: the input (claim, class or PV) was unsafe or invalid; the
	// operator must fix it.
	Refused = "refused"
	// Failed: the export or the API failed; retried.
	Failed = "error"
	// Infeasible: a resize the feasibility check refused; the claim says
	// why (ControllerResizeInfeasible) until its request is lowered.
	Infeasible = "infeasible"
)

// ExportUsage reports the export's free space and whether it answers, for
// the export gauges; exportfs.FS implements it.
type ExportUsage interface {
	Usage(ctx context.Context) (exportfs.Usage, error)
	Hung() (since time.Time, blocked int)
}

// Metrics holds the collectors and the registry that serves them.
type Metrics struct {
	Registry   *prometheus.Registry
	operations *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	leader     prometheus.Gauge
	waiting    prometheus.Gauge
	resizes    *prometheus.CounterVec
}

// NoExport is the export label of a claim refused, or failed, before an
// export was chosen for it.
const NoExport = ""

// New registers our collectors and the Go and process collectors on a new
// registry; exports names the exports, whose series exist from the start.
func New(exports ...string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "operations_total",
			Help:      "Provision and delete operations, by export and outcome: success, refused (bad claim, class or PV) or error (export or API failure); export is empty for claims refused or failed before an export was chosen.",
		}, []string{"operation", "outcome", "export"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "operation_duration_seconds",
			Help:      "Time spent in one provision or delete operation, including filesystem calls on the export.",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"operation"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "leader",
			Help:      "1 while this replica holds the leader Lease and provisions, 0 while it stands by.",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "waiting_for_incumbent",
			Help:      "1 while this replica would provision but a running nfs-subdir-external-provisioner leads (or it cannot tell yet), 0 otherwise.",
		}),
		resizes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "resizes_total",
			Help:      "Volume expansion attempts, by outcome: success (recorded on the claim and its PV), infeasible (refused by the feasibility check) or error (API failure; retried).",
		}, []string{"outcome"}),
	}
	m.Registry.MustRegister(
		m.operations, m.duration, m.leader, m.waiting, m.resizes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every series exists from the start, so rate() and alerts see zeros.
	for _, op := range []string{OpProvision, OpDelete} {
		for _, export := range exports {
			for _, outcome := range []string{Success, Refused, Failed} {
				m.operations.WithLabelValues(op, outcome, export)
			}
		}
		m.duration.WithLabelValues(op)
	}
	m.operations.WithLabelValues(OpProvision, Refused, NoExport)
	m.operations.WithLabelValues(OpProvision, Failed, NoExport)
	for _, outcome := range []string{Success, Infeasible, Failed} {
		m.resizes.WithLabelValues(outcome)
	}
	return m
}

// ObserveOperation counts one operation on export (NoExport if none was
// chosen) and its duration.
func (m *Metrics) ObserveOperation(op, outcome, export string, d time.Duration) {
	m.operations.WithLabelValues(op, outcome, export).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}

// CountResize counts one resize attempt by outcome (Success, Infeasible or
// Failed).
func (m *Metrics) CountResize(outcome string) {
	m.resizes.WithLabelValues(outcome).Inc()
}

// Resizes returns the resize counter of one outcome, for tests.
func (m *Metrics) Resizes(outcome string) prometheus.Counter {
	return m.resizes.WithLabelValues(outcome)
}

// SetLeader records whether this replica is the leader.
func (m *Metrics) SetLeader(leading bool) {
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// SetWaitingForIncumbent records whether this replica defers to a running
// nfs-subdir-external-provisioner.
func (m *Metrics) SetWaitingForIncumbent(waiting bool) {
	if waiting {
		m.waiting.Set(1)
	} else {
		m.waiting.Set(0)
	}
}

// RegisterExport adds, for the export named name, gauges of its free and
// total bytes and inodes, read at scrape time within timeout so a hung
// export can't hang a scrape, of how long it has been hung, and of whether
// ready (the readiness check's cached result) says it is writable.
func (m *Metrics) RegisterExport(name string, export ExportUsage, ready func(context.Context) error, timeout time.Duration, logger klog.Logger) {
	m.Registry.MustRegister(newExportCollector(name, export, ready, timeout, logger))
}

type exportCollector struct {
	export  ExportUsage
	ready   func(context.Context) error
	timeout time.Duration
	logger  klog.Logger

	free, total, freeInodes, inodes, up, hung, blocked, writable *prometheus.Desc
}

func newExportCollector(name string, export ExportUsage, ready func(context.Context) error, timeout time.Duration, logger klog.Logger) *exportCollector {
	desc := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", metric), help, nil, prometheus.Labels{"export": name})
	}
	return &exportCollector{
		export: export, ready: ready, timeout: timeout, logger: logger.WithValues("export", name),
		free:       desc("free_bytes", "Bytes available to the provisioner on the export."),
		total:      desc("size_bytes", "Size of the export's filesystem in bytes."),
		freeInodes: desc("free_inodes", "Inodes available on the export."),
		inodes:     desc("inodes", "Total inodes of the export's filesystem."),
		up:         desc("usage_up", "1 if the export's usage could be read at the last scrape, 0 if it failed or timed out."),
		hung:       desc("hung_seconds", "Seconds since a call on the export timed out with no call answering since; 0 while the export answers."),
		blocked:    desc("blocked_calls", "Filesystem calls given up after a timeout that are still blocked in the export, each holding an OS thread."),
		writable:   desc("ready", "1 if the export was mounted and writable at the last readiness check, 0 if not."),
	}
}

func (c *exportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.free, c.total, c.freeInodes, c.inodes, c.up, c.hung, c.blocked, c.writable} {
		ch <- d
	}
}

func (c *exportCollector) Collect(ch chan<- prometheus.Metric) {
	since, blocked := c.export.Hung()
	hung := 0.0
	if !since.IsZero() {
		hung = time.Since(since).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.hung, prometheus.GaugeValue, hung)
	ch <- prometheus.MustNewConstMetric(c.blocked, prometheus.GaugeValue, float64(blocked))
	// Both reads at once, each with the whole timeout: a slow export must
	// not read as down because the other read came first, nor a scrape
	// take twice the timeout.
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	readyErr := make(chan error, 1)
	go func() { readyErr <- c.ready(ctx) }()
	u, err := c.export.Usage(ctx)
	ready := 1.0
	if <-readyErr != nil {
		ready = 0
	}
	ch <- prometheus.MustNewConstMetric(c.writable, prometheus.GaugeValue, ready)
	if err != nil {
		c.logger.Error(err, "Reading the export's usage for metrics failed")
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(u.FreeBytes))
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(u.TotalBytes))
	ch <- prometheus.MustNewConstMetric(c.freeInodes, prometheus.GaugeValue, float64(u.FreeInodes))
	ch <- prometheus.MustNewConstMetric(c.inodes, prometheus.GaugeValue, float64(u.TotalInodes))
}

// Operations returns the counter of one operation, outcome and export, for
// tests and for callers that want to read it.
func (m *Metrics) Operations(op, outcome, export string) prometheus.Counter {
	return m.operations.WithLabelValues(op, outcome, export)
}
