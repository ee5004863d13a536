// Package chart renders and checks the Helm chart in charts/nfs-provisioner
// and the plain manifests in deploy/. Its helpers (RenderChart, Render,
// LoadManifests, ...) are exported so other tests, e.g. a server-side dry run
// against test/framework's API server, can reuse the rendered objects.
//
// helm is taken from <repo>/.cache/bin/helm, else from PATH, else installed
// with test/scripts/install-helm.sh (a build through the Go module proxy).
// Set HELM to use a specific binary.
package chart

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube-nfs/nfs-provisioner/test/framework"
)

// Defaults of a render.
const (
	// DefaultRelease is the release name the incumbent's README installs
	// with, so the default provisioner name is the incumbent's:
	// cluster.local/nfs-subdir-external-provisioner.
	DefaultRelease   = "nfs-subdir-external-provisioner"
	DefaultNamespace = "nfs-provisioner"
)

// RepoRoot is the repository's root directory (the one holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := framework.RepoRoot()
	require.NoError(t, err)
	return root
}

// ChartDir is charts/nfs-provisioner.
func ChartDir(t testing.TB) string {
	return filepath.Join(RepoRoot(t), "charts", "nfs-provisioner")
}

// DefaultValuesFile holds the chart's defaults plus the two values without
// one (nfs.server, nfs.path).
func DefaultValuesFile(t testing.TB) string {
	return filepath.Join(ChartDir(t), "ci", "default-values.yaml")
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// Helm returns the helm binary, installing it if needed. It skips the test
// in -short mode: rendering needs helm, which may need a build.
func Helm(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs helm; skipped with -short")
	}
	root := RepoRoot(t)
	helmOnce.Do(func() { helmPath, helmErr = findHelm(root) })
	require.NoError(t, helmErr)
	return helmPath
}

func findHelm(root string) (string, error) {
	if h := os.Getenv("HELM"); h != "" {
		return h, nil
	}
	cached := filepath.Join(root, ".cache", "bin", "helm")
	if fi, err := os.Stat(cached); err == nil && fi.Mode()&0o111 != 0 {
		return cached, nil
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h, nil
	}
	script := filepath.Join(root, "test", "scripts", "install-helm.sh")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
	}
	h := strings.TrimSpace(lastLine(stdout.String()))
	if _, err := os.Stat(h); err != nil {
		return "", fmt.Errorf("%s printed %q, not a file: %w", script, h, err)
	}
	return h, nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// RunHelm runs helm with args and returns its stdout and stderr. Helm's
// config, cache and data directories are private to the test.
func RunHelm(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	helm := Helm(t)
	home := t.TempDir()
	cmd := exec.Command(helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// RenderOptions says how to run `helm template`.
type RenderOptions struct {
	Release   string   // DefaultRelease when empty
	Namespace string   // DefaultNamespace when empty
	Chart     string   // ChartDir when empty
	Values    []string // -f files, in order
	Set       []string // --set key=value, after the files
	SetString []string // --set-string key=value
	// SkipSchema renders without values.schema.json, to reach the
	// templates' own checks with values the schema would stop first.
	SkipSchema bool
}

func (o RenderOptions) args(t testing.TB) []string {
	release, ns, chart := o.Release, o.Namespace, o.Chart
	if release == "" {
		release = DefaultRelease
	}
	if ns == "" {
		ns = DefaultNamespace
	}
	if chart == "" {
		chart = ChartDir(t)
	}
	args := []string{"template", release, chart, "--namespace", ns}
	for _, f := range o.Values {
		args = append(args, "--values", f)
	}
	for _, s := range o.Set {
		args = append(args, "--set", s)
	}
	for _, s := range o.SetString {
		args = append(args, "--set-string", s)
	}
	if o.SkipSchema {
		args = append(args, "--skip-schema-validation")
	}
	return args
}

// Render runs `helm template` and decodes its output. A failed render
// returns helm's stderr in the error.
func Render(t testing.TB, o RenderOptions) ([]*unstructured.Unstructured, error) {
	t.Helper()
	stdout, stderr, err := RunHelm(t, o.args(t)...)
	if err != nil {
		return nil, fmt.Errorf("helm template: %w\n%s", err, stderr)
	}
	return framework.DecodeManifests([]byte(stdout))
}

// RenderChart renders the chart with one values file (the chart's defaults
// plus nfs.server/nfs.path when empty) and --set overrides, failing the test
// if helm fails.
func RenderChart(t testing.TB, valuesFile string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	if valuesFile == "" {
		valuesFile = DefaultValuesFile(t)
	}
	objs, err := Render(t, RenderOptions{Values: []string{valuesFile}, Set: set})
	require.NoError(t, err)
	require.NotEmpty(t, objs, "helm rendered nothing")
	return objs
}

// RenderError renders and returns helm's error output; it fails the test if
// the render succeeds.
func RenderError(t testing.TB, o RenderOptions) string {
	t.Helper()
	_, err := Render(t, o)
	require.Error(t, err, "helm template succeeded, expected it to fail")
	return err.Error()
}

// LoadManifests reads and decodes YAML files.
func LoadManifests(t testing.TB, paths ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := framework.ReadManifests(paths...)
	require.NoError(t, err)
	return objs
}

// Find returns the object of that kind and name, or nil.
func Find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// OfKind returns the objects of a kind, in order.
func OfKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// One returns the only object of a kind, failing the test otherwise.
func One(t testing.TB, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := OfKind(objs, kind)
	require.Len(t, found, 1, "objects of kind %s", kind)
	return found[0]
}

// RenderNotes renders templates/NOTES.txt, which `helm template` leaves out:
// it renders a copy of the chart in which NOTES.txt is a named template
// printed into a ConfigMap.
func RenderNotes(t testing.TB, o RenderOptions) string {
	t.Helper()
	src := o.Chart
	if src == "" {
		src = ChartDir(t)
	}
	dst := filepath.Join(t.TempDir(), "nfs-provisioner")
	require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
	notes, err := os.ReadFile(filepath.Join(dst, "templates", "NOTES.txt"))
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dst, "templates", "NOTES.txt")))
	wrapped := "{{- define \"test.notes\" -}}\n" + string(notes) + "\n{{- end -}}\n"
	require.NoError(t, os.WriteFile(filepath.Join(dst, "templates", "_test_notes.tpl"), []byte(wrapped), 0o644))
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test-notes\ndata:\n  notes: {{ include \"test.notes\" . | quote }}\n"
	require.NoError(t, os.WriteFile(filepath.Join(dst, "templates", "test-notes.yaml"), []byte(cm), 0o644))
	o.Chart = dst
	objs, err := Render(t, o)
	require.NoError(t, err)
	cmObj := Find(objs, "ConfigMap", "test-notes")
	require.NotNil(t, cmObj)
	text, _, err := unstructured.NestedString(cmObj.Object, "data", "notes")
	require.NoError(t, err)
	return text
}
