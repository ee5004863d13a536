package framework

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler; skipped with -short")
	}
	binDir := RequireControlPlaneBinaries(t)
	ctx := t.Context()

	start := time.Now()
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{BinDir: binDir})
	require.NoError(t, err)
	t.Cleanup(cp.Stop) // Stop is idempotent; this covers a failing assertion below
	t.Logf("control plane started in %s (apiserver %s, logs %s)", time.Since(start).Round(time.Millisecond), cp.APIServerURL, cp.LogDir)

	client := cp.Client()

	// The version ldflags were applied: clients parse these.
	v, err := client.Discovery().ServerVersion()
	require.NoError(t, err)
	assert.Equal(t, KubernetesVersion, v.GitVersion)
	assert.Equal(t, "1", v.Major)
	assert.Equal(t, "33", v.Minor)

	// The admin kubeconfig works on its own.
	adminFromFile, err := clientcmd.BuildConfigFromFlags("", cp.KubeconfigPath)
	require.NoError(t, err)
	_, err = kubernetes.NewForConfigOrDie(adminFromFile).CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
	require.NoError(t, err)

	const ns, saName = "cp-test", "provisioner"
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saName}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// A token kubeconfig: no client certificate, only the bearer token.
	saPath, err := cp.ServiceAccountKubeconfig(ctx, ns, saName)
	require.NoError(t, err)
	saConfig, err := clientcmd.BuildConfigFromFlags("", saPath)
	require.NoError(t, err)
	assert.NotEmpty(t, saConfig.BearerToken)
	assert.Empty(t, saConfig.CertData)
	assert.Empty(t, saConfig.CertFile)
	saClient, err := kubernetes.NewForConfig(saConfig)
	require.NoError(t, err)

	review, err := saClient.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, "system:serviceaccount:"+ns+":"+saName, review.Status.UserInfo.Username)

	// RBAC is on: nothing grants the ServiceAccount access to nodes...
	_, err = saClient.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.Error(t, err)
	assert.True(t, apierrors.IsForbidden(err), "listing nodes as the ServiceAccount: want Forbidden, got %v", err)

	// ...until a ClusterRoleBinding does (the authorizer's informers see it
	// shortly after).
	_, err = client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "cp-test-node-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "cp-test-node-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cp-test-node-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: saName}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := saClient.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		assert.NoError(c, err)
	}, 10*time.Second, 100*time.Millisecond)

	// A Ready, untainted node that the scheduler binds a pod to.
	require.NoError(t, cp.CreateReadyNode(ctx, "node-1"))
	node, err := client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, node.Spec.Taints)
	assert.True(t, nodeReady(node), "node conditions: %+v", node.Status.Conditions)

	// The pod's namespace needs its default ServiceAccount first (admission).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		assert.NoError(c, err)
	}, 30*time.Second, 100*time.Millisecond)
	_, err = client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pause"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "pause", Image: "registry.k8s.io/pause:3.10"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, "pause", metav1.GetOptions{})
		if assert.NoError(c, err) {
			assert.Equal(c, "node-1", pod.Spec.NodeName)
		}
	}, 30*time.Second, 100*time.Millisecond, "the scheduler did not bind the pod")

	// Stop leaves nothing behind: no child process, no process in their
	// groups, nothing running with the control plane's directory on its
	// command line, and no directory.
	pids := cp.pids()
	require.Len(t, pids, 4)
	dir := cp.Dir
	stopStart := time.Now()
	cp.Stop()
	t.Logf("control plane stopped in %s", time.Since(stopStart).Round(time.Millisecond))
	for _, pid := range pids {
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "process %d still exists", pid)
		assert.ErrorIs(t, syscall.Kill(-pid, 0), syscall.ESRCH, "process group %d still has members", pid)
	}
	assert.Empty(t, processesMentioning(t, dir))
	_, err = os.Stat(dir)
	assert.True(t, errors.Is(err, os.ErrNotExist), "control-plane directory %s still exists (%v)", dir, err)
}

func TestStartControlPlaneFailureStopsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver; skipped with -short")
	}
	binDir := RequireControlPlaneBinaries(t)
	dir, logDir := t.TempDir(), t.TempDir()
	_, err := StartControlPlane(t.Context(), ControlPlaneOptions{
		BinDir:        binDir,
		Dir:           dir,
		LogDir:        logDir,
		APIServerArgs: []string{"--no-such-flag"},
	})
	require.Error(t, err)
	apiserverLog := filepath.Join(logDir, ComponentAPIServer+".log")
	assert.Contains(t, err.Error(), "kube-apiserver exited early")
	assert.Contains(t, err.Error(), apiserverLog, "the error names the log file")
	assert.Contains(t, err.Error(), "no-such-flag", "the error quotes the end of the log")
	assert.FileExists(t, apiserverLog)
	// etcd had started (its --data-dir is in dir); it must be gone.
	assert.Empty(t, processesMentioning(t, dir), "processes left running")
}

func TestStartControlPlaneReportsMissingBinaries(t *testing.T) {
	_, err := StartControlPlane(context.Background(), ControlPlaneOptions{BinDir: t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kube-apiserver")
	assert.Contains(t, err.Error(), "build-controlplane.sh")
}

func TestGeneratePKI(t *testing.T) {
	p, err := generatePKI(t.TempDir())
	require.NoError(t, err)
	for _, f := range []string{p.caCert, p.caKey, p.servingCert, p.servingKey, p.saKey, p.saPub} {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		assert.NotZero(t, fi.Size(), f)
	}
	// Private keys are not world-readable.
	fi, err := os.Stat(p.saKey)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// The serving certificate is valid for loopback, and the client
	// certificates carry the identities the apiserver maps to users/groups.
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(p.caPEM))
	serving := parseCertFile(t, p.servingCert)
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		_, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: roots})
		assert.NoError(t, err, host)
	}
	admin := parseCertPEM(t, p.adminCertPEM)
	assert.Equal(t, []string{"system:masters"}, admin.Subject.Organization)
	_, err = admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.NoError(t, err)
	assert.Equal(t, "system:kube-controller-manager", parseCertPEM(t, p.controllerManagerCertPEM).Subject.CommonName)
	assert.Equal(t, "system:kube-scheduler", parseCertPEM(t, p.schedulerCertPEM).Subject.CommonName)
}

func parseCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return parseCertPEM(t, data)
}

func parseCertPEM(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// processesMentioning returns the command lines of running processes that
// contain s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var found []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		found = append(found, e.Name()+": "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return found
}
