package usage

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	volumeLabels   = []string{"namespace", "persistentvolumeclaim", "persistentvolume", "export"}
	descUsedBytes  = prometheus.NewDesc("nfs_provisioner_volume_used_bytes", "Bytes allocated below the volume's directory at its last scan (du -s), hard-linked files once.", volumeLabels, nil)
	descUsedInodes = prometheus.NewDesc("nfs_provisioner_volume_used_inodes", "Files, directories and other entries below the volume's directory at its last scan, the directory included.", volumeLabels, nil)
	descCapacity   = prometheus.NewDesc("nfs_provisioner_volume_capacity_bytes", "The volume's capacity, from its PersistentVolume; NFS does not enforce it.", volumeLabels, nil)
	descLastScan   = prometheus.NewDesc("nfs_provisioner_volume_last_scan_timestamp_seconds", "When the volume's last scan completed, in seconds since the epoch.", volumeLabels, nil)
	descScans      = prometheus.NewDesc("nfs_provisioner_usage_scans_total", "Completed usage scans of volumes, by outcome: success or error.", []string{"outcome"}, nil)
)

// Collector exports the Scanner's measurements at scrape time.
func (s *Scanner) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Scanner }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUsedBytes, descUsedInodes, descCapacity, descLastScan, descScans} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, smp := range c.s.Samples() {
		labels := []string{smp.Namespace, smp.Claim, smp.PV, smp.Export}
		ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(smp.CapacityBytes), labels...)
		if smp.Scanned.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descUsedBytes, prometheus.GaugeValue, float64(smp.Tally.Bytes), labels...)
		ch <- prometheus.MustNewConstMetric(descUsedInodes, prometheus.GaugeValue, float64(smp.Tally.Inodes), labels...)
		ch <- prometheus.MustNewConstMetric(descLastScan, prometheus.GaugeValue, float64(smp.Scanned.UnixNano())/1e9, labels...)
	}
	for outcome, n := range c.s.Scans() {
		ch <- prometheus.MustNewConstMetric(descScans, prometheus.CounterValue, float64(n), outcome)
	}
}
