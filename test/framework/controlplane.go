package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
)

// ControlPlaneOptions configures StartControlPlane. The zero value is usable.
type ControlPlaneOptions struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and
	// kube-scheduler. Default: DefaultControlPlaneBinDir(); when binaries are
	// missing there, StartControlPlane runs the build script first (about ten
	// minutes cold). A BinDir that is set must be complete.
	BinDir string

	// Dir is the working directory: certificates, kubeconfigs, etcd data.
	// Default: a new temporary directory that Stop removes. A Dir that is set
	// is kept (and should be empty or absent).
	Dir string

	// LogDir receives one <component>.log per component (stdout and stderr),
	// plus build-controlplane.log when a build ran. Default: <Dir>/logs, gone
	// after Stop when Dir is temporary; set LogDir to keep the logs.
	LogDir string

	// ControllerManagerQPS and ControllerManagerBurst set the
	// controller-manager's --kube-api-qps and --kube-api-burst. Zero keeps the
	// component's defaults (20 and 30, as in a default cluster), which bound
	// how fast the PV binder can bind; performance tests raise them (e.g.
	// 1000). Burst defaults to twice the QPS when only QPS is set.
	ControllerManagerQPS   float32
	ControllerManagerBurst int

	// Controllers overrides --controllers of the controller-manager.
	// Default: DefaultControllers().
	Controllers []string

	// Extra command-line arguments appended after ours (a repeated flag
	// overrides an earlier one).
	APIServerArgs         []string
	ControllerManagerArgs []string
	SchedulerArgs         []string

	// Verbosity is the klog -v of the Kubernetes components (default 0).
	Verbosity int

	// StartTimeout bounds StartControlPlane once the binaries are there.
	// Default: 2 minutes.
	StartTimeout time.Duration
}

// DefaultControllers returns the controller-manager controllers the test
// control plane runs: what PVC provisioning, StatefulSets/Deployments and
// namespace deletion need, and nothing that expects a kubelet. In particular
// node-lifecycle-controller is absent: with no kubelet posting heartbeats it
// would mark every node NotReady and taint it.
func DefaultControllers() []string {
	return []string{
		// Service accounts and their tokens; root-ca publishes kube-root-ca.crt
		// into each namespace, which projected token volumes reference.
		"serviceaccount-controller",
		"serviceaccount-token-controller",
		"root-ca-certificate-publisher-controller",
		"clusterrole-aggregation-controller", // admin/edit/view roles
		"namespace-controller",
		"garbage-collector-controller",
		"pod-garbage-collector-controller",
		// Workloads.
		"deployment-controller",
		"replicaset-controller",
		"statefulset-controller",
		"job-controller",
		// Storage.
		"persistentvolume-binder-controller",
		"persistentvolume-expander-controller",
		"persistentvolume-protection-controller",
		"persistentvolumeclaim-protection-controller",
		"ephemeral-volume-controller",
	}
}

// ControlPlane is a running etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on loopback. There is no kubelet: pods get scheduled onto
// nodes made with CreateReadyNode but never run.
type ControlPlane struct {
	// KubeconfigPath is an admin kubeconfig (system:masters).
	KubeconfigPath string
	// AdminConfig is the same admin identity as a rest.Config, with client-side
	// rate limiting raised so tests are not throttled.
	AdminConfig *rest.Config
	// Dir is the working directory; LogDir holds the components' logs.
	Dir    string
	LogDir string
	// APIServerURL is https://127.0.0.1:<port>; CACertPath is the CA that
	// signed its serving certificate (and all client certificates).
	APIServerURL string
	CACertPath   string
	// EtcdURL is the etcd client URL (plain HTTP on loopback).
	EtcdURL string

	client    kubernetes.Interface
	pki       *controlPlanePKI
	removeDir bool // Dir is ours to delete

	launcher *launcher
	mu       sync.Mutex
	procs    []*process // in start order
	stopOnce sync.Once
}

// stopGrace is how long a component gets to exit after SIGTERM.
const stopGrace = 5 * time.Second

// StartControlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on free loopback ports and returns when the apiserver is
// ready, both components serve /healthz and the default ServiceAccount exists.
// On error everything started is stopped again and a temporary Dir is
// removed except for the logs the error names. The caller must call Stop.
func StartControlPlane(ctx context.Context, opts ControlPlaneOptions) (_ *ControlPlane, err error) {
	binDir, err := resolveBinDir(ctx, &opts)
	if err != nil {
		return nil, err
	}

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cp := &ControlPlane{Dir: opts.Dir, LogDir: opts.LogDir, launcher: newLauncher()}
	defer func() {
		if err != nil {
			// Keep the logs the error points at, drop the rest.
			cp.stop(true)
		}
	}()
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "nfs-provisioner-controlplane-"); err != nil {
			return nil, fmt.Errorf("create control-plane directory: %w", err)
		}
		cp.removeDir = true
	} else if err := os.MkdirAll(cp.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create control-plane directory %s: %w", cp.Dir, err)
	}
	if cp.LogDir == "" {
		cp.LogDir = filepath.Join(cp.Dir, "logs")
	}
	if err := os.MkdirAll(cp.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("create log directory %s: %w", cp.LogDir, err)
	}

	if cp.pki, err = generatePKI(filepath.Join(cp.Dir, "pki")); err != nil {
		return nil, fmt.Errorf("generate control-plane certificates: %w", err)
	}
	cp.CACertPath = cp.pki.caCert

	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	etcdClientPort, etcdPeerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	cp.EtcdURL = "http://" + loopbackHostPort(etcdClientPort)
	cp.APIServerURL = "https://" + loopbackHostPort(apiPort)

	// Clients and kubeconfigs. They only need the URL and the certificates,
	// so they are ready before anything runs.
	cp.AdminConfig = &rest.Config{
		Host: cp.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.pki.caPEM,
			CertData: cp.pki.adminCertPEM,
			KeyData:  cp.pki.adminKeyPEM,
		},
		QPS:   1000,
		Burst: 2000,
	}
	if cp.client, err = kubernetes.NewForConfig(cp.AdminConfig); err != nil {
		return nil, fmt.Errorf("create admin client: %w", err)
	}
	kubeconfigDir := filepath.Join(cp.Dir, "kubeconfig")
	cp.KubeconfigPath = filepath.Join(kubeconfigDir, "admin.kubeconfig")
	kcmKubeconfig := filepath.Join(kubeconfigDir, "controller-manager.kubeconfig")
	schedKubeconfig := filepath.Join(kubeconfigDir, "scheduler.kubeconfig")
	for _, kc := range []struct {
		path, user string
		cert, key  []byte
	}{
		{cp.KubeconfigPath, "admin", cp.pki.adminCertPEM, cp.pki.adminKeyPEM},
		{kcmKubeconfig, "system:kube-controller-manager", cp.pki.controllerManagerCertPEM, cp.pki.controllerManagerKeyPEM},
		{schedKubeconfig, "system:kube-scheduler", cp.pki.schedulerCertPEM, cp.pki.schedulerKeyPEM},
	} {
		err := writeKubeconfig(kc.path, cp.APIServerURL, cp.pki.caPEM, kc.user, &clientcmdapi.AuthInfo{
			ClientCertificateData: kc.cert,
			ClientKeyData:         kc.key,
		})
		if err != nil {
			return nil, err
		}
	}

	v := "--v=" + strconv.Itoa(opts.Verbosity)

	// etcd. No fsync: the data is thrown away, and fsync on a loaded CI disk
	// is the main source of etcd latency.
	etcd, err := cp.start(binDir, ComponentEtcd, []string{
		"--name=test",
		"--data-dir=" + filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls=" + cp.EtcdURL,
		"--advertise-client-urls=" + cp.EtcdURL,
		"--listen-peer-urls=http://" + loopbackHostPort(etcdPeerPort),
		"--initial-advertise-peer-urls=http://" + loopbackHostPort(etcdPeerPort),
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, etcd, "etcd /health", func(ctx context.Context) error {
		return httpGetOK(ctx, http.DefaultClient, cp.EtcdURL+"/health")
	}); err != nil {
		return nil, err
	}

	// kube-apiserver: secure port only, on loopback. RBAC is what the tests
	// are about (our manifests' permissions); Node is there as in any real
	// cluster. Default admission plugins (ServiceAccount, DefaultStorageClass,
	// StorageObjectInUseProtection, TaintNodesByCondition, ...).
	// --service-cluster-ip-range only feeds the Service IP allocator; nothing
	// is ever routed there.
	apiserver, err := cp.start(binDir, ComponentAPIServer, []string{
		"--etcd-servers=" + cp.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(cp.Dir, "apiserver"), // unused: the cert files below are given
		"--tls-cert-file=" + cp.pki.servingCert,
		"--tls-private-key-file=" + cp.pki.servingKey,
		"--client-ca-file=" + cp.pki.caCert,
		// Aggregation layer / request-header authentication, as kubeadm sets
		// it up. Without it the controller-manager and scheduler log errors
		// about a missing requestheader CA bundle over and over.
		"--requestheader-client-ca-file=" + cp.pki.frontProxyCACert,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + cp.pki.frontProxyClientCert,
		"--proxy-client-key-file=" + cp.pki.frontProxyClientKey,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + cp.pki.saPub,
		"--service-account-signing-key-file=" + cp.pki.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// The endpoint reconciler would publish the advertise address as the
		// "kubernetes" Service's endpoint, and Endpoints reject loopback
		// addresses (an error every 10s). No pod runs to use it anyway.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		v,
	}, opts.APIServerArgs)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, apiserver, "kube-apiserver /readyz", func(ctx context.Context) error {
		_, err := cp.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return nil, err
	}

	// kube-controller-manager. --use-service-account-credentials gives every
	// controller its own service account and RBAC role, as in real clusters.
	// The authentication/authorization kubeconfigs make its secure port
	// accept our client certificates (e.g. the admin's for /metrics); /healthz
	// is always allowed. Leader election is pointless with one instance and
	// only delays the start.
	controllers := opts.Controllers
	if controllers == nil {
		controllers = DefaultControllers()
	}
	kcmArgs := []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig,
		"--authorization-kubeconfig=" + kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--tls-cert-file=" + cp.pki.servingCert,
		"--tls-private-key-file=" + cp.pki.servingKey,
		"--controllers=" + strings.Join(controllers, ","),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + cp.pki.saKey,
		"--root-ca-file=" + cp.pki.caCert,
		// For the CSR signing controller, should a test enable it.
		"--cluster-signing-cert-file=" + cp.pki.caCert,
		"--cluster-signing-key-file=" + cp.pki.caKey,
		"--leader-elect=false",
		v,
	}
	if opts.ControllerManagerQPS > 0 {
		burst := opts.ControllerManagerBurst
		if burst <= 0 {
			burst = int(2 * opts.ControllerManagerQPS)
		}
		kcmArgs = append(kcmArgs,
			"--kube-api-qps="+strconv.FormatFloat(float64(opts.ControllerManagerQPS), 'f', -1, 32),
			"--kube-api-burst="+strconv.Itoa(burst))
	} else if opts.ControllerManagerBurst > 0 {
		kcmArgs = append(kcmArgs, "--kube-api-burst="+strconv.Itoa(opts.ControllerManagerBurst))
	}
	kcm, err := cp.start(binDir, ComponentControllerManager, kcmArgs, opts.ControllerManagerArgs)
	if err != nil {
		return nil, err
	}

	sched, err := cp.start(binDir, ComponentScheduler, []string{
		"--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig,
		"--authorization-kubeconfig=" + schedKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedPort),
		"--tls-cert-file=" + cp.pki.servingCert,
		"--tls-private-key-file=" + cp.pki.servingKey,
		"--leader-elect=false",
		v,
	}, opts.SchedulerArgs)
	if err != nil {
		return nil, err
	}

	// Both components log and retry until they are healthy; /healthz answers
	// once their informers and controllers are running.
	httpsClient, err := cp.loopbackHTTPSClient()
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, kcm, "kube-controller-manager /healthz", func(ctx context.Context) error {
		return httpGetOK(ctx, httpsClient, "https://"+loopbackHostPort(kcmPort)+"/healthz")
	}); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, sched, "kube-scheduler /healthz", func(ctx context.Context) error {
		return httpGetOK(ctx, httpsClient, "https://"+loopbackHostPort(schedPort)+"/healthz")
	}); err != nil {
		return nil, err
	}

	// The apiserver creates the default namespace; the serviceaccount
	// controller then creates its default ServiceAccount. Pods are rejected
	// by the ServiceAccount admission plugin until it exists.
	if err := waitFor(ctx, kcm, "the default ServiceAccount", func(ctx context.Context) error {
		_, err := cp.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	return cp, nil
}

// resolveBinDir returns the directory with the binaries, building them when
// the default directory is incomplete.
func resolveBinDir(ctx context.Context, opts *ControlPlaneOptions) (string, error) {
	if opts.BinDir != "" {
		if missing := MissingControlPlaneBinaries(opts.BinDir); len(missing) > 0 {
			return "", fmt.Errorf("control-plane binaries missing in %s: %s (build them with test/scripts/build-controlplane.sh)",
				opts.BinDir, strings.Join(missing, ", "))
		}
		return opts.BinDir, nil
	}
	binDir, err := DefaultControlPlaneBinDir()
	if err != nil {
		return "", err
	}
	if len(MissingControlPlaneBinaries(binDir)) == 0 {
		return binDir, nil
	}
	// The build's output goes to a log file next to the binaries' cache:
	// LogDir may not exist yet and is possibly temporary.
	logPath := filepath.Join(filepath.Dir(binDir), "build-controlplane.log")
	if opts.LogDir != "" {
		if err := os.MkdirAll(opts.LogDir, 0o755); err == nil {
			logPath = filepath.Join(opts.LogDir, "build-controlplane.log")
		}
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return "", fmt.Errorf("create directory for %s: %w", logPath, err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", fmt.Errorf("create build log: %w", err)
	}
	defer logFile.Close()
	if binDir, err = BuildControlPlaneBinaries(ctx, logFile); err != nil {
		return "", fmt.Errorf("build control-plane binaries (log %s): %w\n%s", logPath, err, logTail(logPath, 20))
	}
	return binDir, nil
}

// start runs one component from binDir with its log in LogDir and registers
// it for Stop.
func (cp *ControlPlane) start(binDir, name string, args, extra []string) (*process, error) {
	p, err := cp.launcher.start(name, filepath.Join(binDir, name), append(args, extra...), nil, cp.LogPath(name))
	if err != nil {
		return nil, err
	}
	cp.mu.Lock()
	cp.procs = append(cp.procs, p)
	cp.mu.Unlock()
	return p, nil
}

// LogPath returns the log file of a component (one of the Component*
// constants): everything it wrote to stdout and stderr.
func (cp *ControlPlane) LogPath(component string) string {
	return filepath.Join(cp.LogDir, component+".log")
}

// pids returns the process ids of the components started so far.
func (cp *ControlPlane) pids() []int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	pids := make([]int, 0, len(cp.procs))
	for _, p := range cp.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// Client returns a clientset with the admin identity.
func (cp *ControlPlane) Client() kubernetes.Interface {
	return cp.client
}

// Stop kills every component (SIGTERM, then SIGKILL after a short grace
// period), waits until they are gone and removes Dir when it was temporary.
// It is safe to call more than once and from t.Cleanup.
func (cp *ControlPlane) Stop() {
	cp.stop(false)
}

// stop is Stop; with keepLogs a temporary Dir keeps its logs subdirectory.
func (cp *ControlPlane) stop(keepLogs bool) {
	cp.stopOnce.Do(func() {
		cp.mu.Lock()
		procs := cp.procs
		cp.mu.Unlock()
		// Clients of the apiserver first, in parallel, so they do not spend
		// the grace period retrying a vanished apiserver; then the apiserver;
		// etcd last so the apiserver can shut down cleanly.
		var clients, servers []*process
		for _, p := range procs {
			switch p.name {
			case ComponentControllerManager, ComponentScheduler:
				clients = append(clients, p)
			default:
				servers = append(servers, p)
			}
		}
		var wg sync.WaitGroup
		for _, p := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.stop(stopGrace)
			}()
		}
		wg.Wait()
		for i := len(servers) - 1; i >= 0; i-- {
			servers[i].stop(stopGrace)
		}
		cp.launcher.close()
		if cp.removeDir && cp.Dir != "" {
			removeAllExcept(cp.Dir, keepLogs, cp.LogDir)
		}
	})
}

// removeAllExcept removes dir, or with keep everything in dir except the
// entry that contains path.
func removeAllExcept(dir string, keep bool, path string) {
	rel, err := filepath.Rel(dir, path)
	if !keep || err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		_ = os.RemoveAll(dir)
		return
	}
	keepName := strings.Split(rel, string(filepath.Separator))[0]
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != keepName {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount namespace/name with a one-hour token from the TokenRequest
// API and nothing else, so a process using it has exactly the RBAC
// permissions granted to that ServiceAccount. The ServiceAccount must exist.
func (cp *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	expiration := int64(time.Hour / time.Second)
	tr, err := cp.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiration},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	path := filepath.Join(cp.Dir, "kubeconfig", "sa-"+namespace+"-"+name+".kubeconfig")
	user := "system:serviceaccount:" + namespace + ":" + name
	if err := writeKubeconfig(path, cp.APIServerURL, cp.pki.caPEM, user, &clientcmdapi.AuthInfo{Token: tr.Status.Token}); err != nil {
		return "", err
	}
	return path, nil
}

// CreateReadyNode creates a Node that the scheduler considers schedulable:
// Ready, no pressure conditions, ample capacity. No kubelet backs it, so pods
// bound to it are never started. Since the node-lifecycle controller does
// not run (see DefaultControllers), it stays Ready.
func (cp *ControlPlane) CreateReadyNode(ctx context.Context, name string) error {
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourcePods:             resource.MustParse("1000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
	condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				corev1.LabelHostname:   name,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: "amd64",
			},
		},
		// Node status is kept on create (unlike on update), so one request
		// sets it.
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
				condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
				condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
				condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
				condition(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: name},
			},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          KubernetesVersion,
				OperatingSystem:         "linux",
				Architecture:            "amd64",
				ContainerRuntimeVersion: "fake://0",
			},
		},
	}
	if _, err := cp.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	// The TaintNodesByCondition admission plugin adds the not-ready taint to
	// every new node; normally the node-lifecycle controller removes it once
	// the node reports Ready.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cp.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		taints := n.Spec.Taints[:0]
		for _, t := range n.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
				taints = append(taints, t)
			}
		}
		if len(taints) == len(n.Spec.Taints) {
			return nil
		}
		n.Spec.Taints = taints
		_, err = cp.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("remove not-ready taint from node %s: %w", name, err)
	}
	return nil
}

// writeKubeconfig writes a single-context kubeconfig for server with the
// given credentials.
func writeKubeconfig(path, server string, caPEM []byte, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
	cfg.CurrentContext = "test"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create kubeconfig directory: %w", err)
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// loopbackHTTPSClient returns an HTTP client that trusts the control-plane CA.
func (cp *ControlPlane) loopbackHTTPSClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cp.pki.caPEM) {
		return nil, errors.New("parse control-plane CA certificate")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. All listeners are
// held until the last one is open so that no port is returned twice; another
// process could still take one before our component binds it, in which case
// the component fails with "address already in use" in its log.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func loopbackHostPort(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// httpGetOK returns nil when GET url answers 200.
func httpGetOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// waitFor polls check until it succeeds, the process p exits, or ctx ends.
// Each attempt gets a short timeout of its own so one hung request cannot use
// up the whole start timeout.
func waitFor(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	const interval = 100 * time.Millisecond
	var last error
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(attemptCtx)
		cancel()
		if last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("waiting for %s: %w", what, p.exitError())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v); log %s:\n%s",
				what, ctx.Err(), last, p.logPath, logTail(p.logPath, 30))
		case <-p.done:
			return fmt.Errorf("waiting for %s: %w", what, p.exitError())
		case <-time.After(interval):
		}
	}
}
