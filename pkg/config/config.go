// Package config defines the provisioner's process settings: command-line
// flags, each with an environment-variable fallback, and their validation.
package config

import (
	"errors"
	"flag"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
)

// Options are the process settings. Parse fills them.
type Options struct {
	ProvisionerName string
	NFSServer       string
	NFSPath         string
	ExportDir       string
	// Exports are the --export entries (or NFS_EXPORTS), unparsed.
	Exports    exportFlag
	Kubeconfig string

	LeaderElect              bool
	LeaderElectNamespace     string
	LeaderElectIdentity      string
	LeaderElectLeaseDuration time.Duration
	LeaderElectRenewDeadline time.Duration
	LeaderElectRetryPeriod   time.Duration

	KubeAPIQPS   float64
	KubeAPIBurst int
	Workers      int

	HTTPAddress  string
	EnablePprof  bool
	PprofAddress string
	FSTimeout    time.Duration

	ShutdownGracePeriod time.Duration

	UsageScanInterval time.Duration
	UsageScanRate     float64
	ArchiveRetention  time.Duration
}

// Defaults. The client and worker numbers let one replica provision
// hundreds of claims per second (client-go's own default, 5 QPS, is why the
// incumbent manages about 2 claims per second); see docs/benchmarks.md.
const (
	DefaultExportDir     = "/persistentvolumes"
	DefaultHTTPAddress   = ":8080"
	DefaultKubeAPIQPS    = 300
	DefaultKubeAPIBurst  = 600
	DefaultWorkers       = 64
	DefaultFSTimeout     = 30 * time.Second
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	// A standby retries every RetryPeriod plus up to 1.2× of jitter, so
	// 800ms keeps the takeover after a graceful shutdown under 2s.
	DefaultRetryPeriod = 800 * time.Millisecond
	// Below the pod's terminationGracePeriodSeconds (30s), which must leave
	// room for releasing the Lease after the wait.
	DefaultShutdownGracePeriod = 20 * time.Second
	// Loopback: profiles expose memory contents and cost CPU, so they are
	// reached with kubectl port-forward, never through the metrics Service.
	DefaultPprofAddress = "127.0.0.1:6060"
	// Each volume's usage is at most an hour old; the rate, not the
	// interval, bounds the load: 2000 calls/s is a few percent of what an
	// NFS server answers, and measures about 1.8 million entries an hour.
	DefaultUsageScanInterval = time.Hour
	DefaultUsageScanRate     = 2000
)

// flagEnv pairs each flag with the environment variable read when the flag
// is not given. The first four are the incumbent's.
var flagEnv = []struct{ flag, env string }{
	{"provisioner-name", "PROVISIONER_NAME"},
	{"nfs-server", "NFS_SERVER"},
	{"nfs-path", "NFS_PATH"},
	{"leader-elect", "ENABLE_LEADER_ELECTION"},
	{"export-dir", "EXPORT_DIR"},
	{"export", "NFS_EXPORTS"},
	{"kubeconfig", "KUBECONFIG"},
	{"leader-elect-namespace", "POD_NAMESPACE"},
	{"leader-elect-identity", "POD_NAME"},
	{"leader-elect-lease-duration", "LEADER_ELECT_LEASE_DURATION"},
	{"leader-elect-renew-deadline", "LEADER_ELECT_RENEW_DEADLINE"},
	{"leader-elect-retry-period", "LEADER_ELECT_RETRY_PERIOD"},
	{"kube-api-qps", "KUBE_API_QPS"},
	{"kube-api-burst", "KUBE_API_BURST"},
	{"workers", "WORKERS"},
	{"http-address", "HTTP_ADDRESS"},
	{"enable-pprof", "ENABLE_PPROF"},
	{"pprof-address", "PPROF_ADDRESS"},
	{"fs-timeout", "FS_TIMEOUT"},
	{"shutdown-grace-period", "SHUTDOWN_GRACE_PERIOD"},
	{"usage-scan-interval", "USAGE_SCAN_INTERVAL"},
	{"usage-scan-rate", "USAGE_SCAN_RATE"},
	{"archive-retention", "ARCHIVE_RETENTION"},
}

// EnvVar returns the environment variable behind a flag, or "".
func EnvVar(flagName string) string {
	for _, fe := range flagEnv {
		if fe.flag == flagName {
			return fe.env
		}
	}
	return ""
}

// Bind registers the flags on fs, writing into o.
func (o *Options) Bind(fs *flag.FlagSet) {
	help := func(name, text string) string {
		return fmt.Sprintf("%s (env %s)", text, EnvVar(name))
	}
	fs.StringVar(&o.ProvisionerName, "provisioner-name", "", help("provisioner-name", "Name StorageClasses give in their provisioner field. Required."))
	fs.StringVar(&o.NFSServer, "nfs-server", "", help("nfs-server", "NFS server of the export named default, written into its PersistentVolumes. Required unless --export is given."))
	fs.StringVar(&o.NFSPath, "nfs-path", "", help("nfs-path", "Absolute path on the NFS server of the export named default, mounted at --export-dir. Required with --nfs-server."))
	fs.StringVar(&o.ExportDir, "export-dir", DefaultExportDir, help("export-dir", "Where the export named default is mounted in this container."))
	fs.Var(&o.Exports, "export", help("export", "An export to serve besides or instead of the default one: name=<name>,server=<server>,path=<exported path>,dir=<mount dir>; repeat the flag, or separate entries with \";\"."))
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", help("kubeconfig", "Kubeconfig file, when running outside a cluster; in-cluster credentials when empty."))
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, help("leader-elect", "Elect one active replica through a coordination.k8s.io Lease."))
	fs.StringVar(&o.LeaderElectNamespace, "leader-elect-namespace", "", help("leader-elect-namespace", "Namespace of the Lease; the service account's namespace, else \"default\", when empty."))
	fs.StringVar(&o.LeaderElectIdentity, "leader-elect-identity", "", help("leader-elect-identity", "Identity written to the Lease; hostname plus a random suffix when empty."))
	fs.DurationVar(&o.LeaderElectLeaseDuration, "leader-elect-lease-duration", DefaultLeaseDuration, help("leader-elect-lease-duration", "How long standbys wait after the last renewal before taking over a leader that vanished."))
	fs.DurationVar(&o.LeaderElectRenewDeadline, "leader-elect-renew-deadline", DefaultRenewDeadline, help("leader-elect-renew-deadline", "How long the leader keeps trying to renew before it gives up and exits."))
	fs.DurationVar(&o.LeaderElectRetryPeriod, "leader-elect-retry-period", DefaultRetryPeriod, help("leader-elect-retry-period", "Interval between Lease renewals and acquisition attempts; bounds the takeover time after a graceful shutdown."))
	fs.Float64Var(&o.KubeAPIQPS, "kube-api-qps", DefaultKubeAPIQPS, help("kube-api-qps", "Sustained requests per second to the API server."))
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", DefaultKubeAPIBurst, help("kube-api-burst", "Requests allowed above --kube-api-qps in a burst."))
	fs.IntVar(&o.Workers, "workers", DefaultWorkers, help("workers", "Claims provisioned, and volumes deleted, concurrently."))
	fs.StringVar(&o.HTTPAddress, "http-address", DefaultHTTPAddress, help("http-address", "Address serving /metrics, /healthz and /readyz."))
	fs.BoolVar(&o.EnablePprof, "enable-pprof", false, help("enable-pprof", "Serve /debug/pprof/ on --pprof-address."))
	fs.StringVar(&o.PprofAddress, "pprof-address", DefaultPprofAddress, help("pprof-address", "Address serving /debug/pprof/ when --enable-pprof is set; never --http-address."))
	fs.DurationVar(&o.FSTimeout, "fs-timeout", DefaultFSTimeout, help("fs-timeout", "Bound on one filesystem operation on the export, so a hung NFS mount fails operations instead of hanging them."))
	fs.DurationVar(&o.ShutdownGracePeriod, "shutdown-grace-period", DefaultShutdownGracePeriod, help("shutdown-grace-period", "On SIGTERM, how long provisions and deletes in flight may take to finish before the Lease is released; keep it below the pod's terminationGracePeriodSeconds."))
	fs.DurationVar(&o.UsageScanInterval, "usage-scan-interval", DefaultUsageScanInterval, help("usage-scan-interval", "How often the leader measures each volume's usage for the per-volume metrics; 0 turns measuring off."))
	fs.Float64Var(&o.UsageScanRate, "usage-scan-rate", DefaultUsageScanRate, help("usage-scan-rate", "Filesystem calls per second the usage scans may make, all together; 0 means no bound."))
	fs.DurationVar(&o.ArchiveRetention, "archive-retention", 0, help("archive-retention", "Remove the archives of released volumes this provisioner made once they are older than this; 0 keeps them forever."))
}

// ApplyEnv sets, from the environment, every flag of fs not given on the
// command line. The flag's own parser checks the value, so a bad
// ENABLE_LEADER_ELECTION fails like a bad --leader-elect.
func ApplyEnv(fs *flag.FlagSet, lookupEnv func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, fe := range flagEnv {
		if given[fe.flag] {
			continue
		}
		v, ok := lookupEnv(fe.env)
		if !ok || v == "" {
			continue
		}
		if err := fs.Set(fe.flag, v); err != nil {
			return fmt.Errorf("environment variable %s=%q: %w", fe.env, v, err)
		}
	}
	return nil
}

// Validate reports every missing or invalid setting at once.
func (o *Options) Validate() error {
	var errs []error
	required := func(value, flagName string) {
		if strings.TrimSpace(value) == "" {
			errs = append(errs, fmt.Errorf("--%s (or %s) is required", flagName, EnvVar(flagName)))
		}
	}
	required(o.ProvisionerName, "provisioner-name")
	if len(o.Exports) == 0 || o.NFSServer != "" || o.NFSPath != "" {
		required(o.NFSServer, "nfs-server")
		required(o.NFSPath, "nfs-path")
	}
	if o.NFSPath != "" && !path.IsAbs(o.NFSPath) {
		errs = append(errs, fmt.Errorf("--nfs-path %q must be an absolute path on the NFS server", o.NFSPath))
	}
	if len(errs) == 0 {
		if _, err := o.ExportList(); err != nil {
			errs = append(errs, err)
		}
	}
	if strings.ContainsAny(o.ProvisionerName, " \t\n") {
		errs = append(errs, fmt.Errorf("--provisioner-name %q must not contain white space", o.ProvisionerName))
	}
	required(o.ExportDir, "export-dir")
	if o.KubeAPIQPS <= 0 || o.KubeAPIBurst <= 0 || o.Workers <= 0 {
		errs = append(errs, errors.New("--kube-api-qps, --kube-api-burst and --workers must be positive"))
	}
	if o.EnablePprof && (o.PprofAddress == "" || o.PprofAddress == o.HTTPAddress) {
		errs = append(errs, fmt.Errorf("--enable-pprof needs a --pprof-address of its own (got %q), not --http-address", o.PprofAddress))
	}
	if o.FSTimeout <= 0 {
		errs = append(errs, errors.New("--fs-timeout must be positive"))
	}
	if o.ShutdownGracePeriod < 0 {
		errs = append(errs, errors.New("--shutdown-grace-period must not be negative"))
	}
	if o.UsageScanInterval < 0 || o.UsageScanRate < 0 || o.ArchiveRetention < 0 {
		errs = append(errs, errors.New("--usage-scan-interval, --usage-scan-rate and --archive-retention must not be negative"))
	}
	if o.LeaderElect && !(o.LeaderElectLeaseDuration > o.LeaderElectRenewDeadline && o.LeaderElectRenewDeadline > o.LeaderElectRetryPeriod && o.LeaderElectRetryPeriod > 0) {
		errs = append(errs, fmt.Errorf("leader election needs lease duration (%s) > renew deadline (%s) > retry period (%s) > 0",
			o.LeaderElectLeaseDuration, o.LeaderElectRenewDeadline, o.LeaderElectRetryPeriod))
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	// One line, so a crash-looping pod's last log line says it all.
	return errors.New(strings.Join(msgs, "; "))
}

// ExportList returns the exports to serve: the one named default when
// --nfs-server (NFS_SERVER) is given, then the --export entries, validated.
func (o *Options) ExportList() (*exports.Set, error) {
	var list []exports.Export
	if o.NFSServer != "" || o.NFSPath != "" {
		list = append(list, exports.Export{Name: exports.DefaultName, Server: o.NFSServer, Path: o.NFSPath, Dir: o.ExportDir})
	}
	for _, entry := range o.Exports {
		parsed, err := exports.ParseList(entry)
		if err != nil {
			return nil, fmt.Errorf("--export (or %s): %w", EnvVar("export"), err)
		}
		list = append(list, parsed...)
	}
	set, err := exports.NewSet(list)
	if err != nil {
		return nil, fmt.Errorf("--export (or %s), --nfs-server and --nfs-path: %w", EnvVar("export"), err)
	}
	return set, nil
}

// exportFlag collects the --export entries; each value may hold several,
// separated by ";" as in NFS_EXPORTS.
type exportFlag []string

func (f *exportFlag) String() string { return strings.Join(*f, ";") }

func (f *exportFlag) Set(v string) error {
	if _, err := exports.ParseList(v); err != nil {
		return err
	}
	*f = append(*f, v)
	return nil
}

// PprofServeAddress is where /debug/pprof/ is served, "" when it is off.
func (o *Options) PprofServeAddress() string {
	if !o.EnablePprof {
		return ""
	}
	return o.PprofAddress
}

// LeaseName is the Lease the replicas compete for: the provisioner name with
// "/" replaced by "-", as the incumbent names it, so old and new never both
// provision during a migration.
func (o *Options) LeaseName() string {
	return strings.ReplaceAll(o.ProvisionerName, "/", "-")
}
