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

// New registers our collectors and the Go and process collectors on a new
// registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "operations_total",
			Help:      "Provision and delete operations on the export, by outcome: success, refused (bad claim, class or PV) or error (export or API failure).",
		}, []string{"operation", "outcome"}),
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
		for _, outcome := range []string{Success, Refused, Failed} {
			m.operations.WithLabelValues(op, outcome)
		}
		m.duration.WithLabelValues(op)
	}
	for _, outcome := range []string{Success, Infeasible, Failed} {
		m.resizes.WithLabelValues(outcome)
	}
	return m
}

// ObserveOperation counts one operation and its duration.
func (m *Metrics) ObserveOperation(op, outcome string, d time.Duration) {
	m.operations.WithLabelValues(op, outcome).Inc()
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

// RegisterExportUsage adds gauges of the export's free and total bytes and
// inodes, read at scrape time within timeout so a hung export can't hang a
// scrape, and of how long it has been hung.
func (m *Metrics) RegisterExportUsage(export ExportUsage, timeout time.Duration, logger klog.Logger) {
	m.Registry.MustRegister(&usageCollector{export: export, timeout: timeout, logger: logger})
}

var (
	descFreeBytes = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "free_bytes"),
		"Bytes available to the provisioner on the export.", nil, nil)
	descTotalBytes = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "size_bytes"),
		"Size of the export's filesystem in bytes.", nil, nil)
	descFreeInodes = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "free_inodes"),
		"Inodes available on the export.", nil, nil)
	descTotalInodes = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "inodes"),
		"Total inodes of the export's filesystem.", nil, nil)
	descUsageUp = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "usage_up"),
		"1 if the export's usage could be read at the last scrape, 0 if it failed or timed out.", nil, nil)
	descHung = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "hung_seconds"),
		"Seconds since a call on the export timed out with no call answering since; 0 while the export answers.", nil, nil)
	descBlocked = prometheus.NewDesc(prometheus.BuildFQName(namespace, "export", "blocked_calls"),
		"Filesystem calls given up after a timeout that are still blocked in the export, each holding an OS thread.", nil, nil)
)

type usageCollector struct {
	export  ExportUsage
	timeout time.Duration
	logger  klog.Logger
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFreeBytes, descTotalBytes, descFreeInodes, descTotalInodes, descUsageUp, descHung, descBlocked} {
		ch <- d
	}
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	since, blocked := c.export.Hung()
	hung := 0.0
	if !since.IsZero() {
		hung = time.Since(since).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(descHung, prometheus.GaugeValue, hung)
	ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.GaugeValue, float64(blocked))
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	u, err := c.export.Usage(ctx)
	if err != nil {
		c.logger.Error(err, "Reading the export's usage for metrics failed")
		ch <- prometheus.MustNewConstMetric(descUsageUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUsageUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descFreeBytes, prometheus.GaugeValue, float64(u.FreeBytes))
	ch <- prometheus.MustNewConstMetric(descTotalBytes, prometheus.GaugeValue, float64(u.TotalBytes))
	ch <- prometheus.MustNewConstMetric(descFreeInodes, prometheus.GaugeValue, float64(u.FreeInodes))
	ch <- prometheus.MustNewConstMetric(descTotalInodes, prometheus.GaugeValue, float64(u.TotalInodes))
}

// Operations returns the counter of one operation and outcome, for tests and
// for callers that want to read it.
func (m *Metrics) Operations(op, outcome string) prometheus.Counter {
	return m.operations.WithLabelValues(op, outcome)
}
