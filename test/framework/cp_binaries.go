package framework

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// KubernetesVersion is the version of the control-plane binaries, pinned in
// test/controlplane/go.mod and test/scripts/build-controlplane.sh.
const KubernetesVersion = "v1.33.13"

// mainModulePath identifies the repository root's go.mod.
const mainModulePath = "github.com/kube-nfs/nfs-provisioner"

// Names of the control-plane components: binary names, and the base names of
// their log files (<LogDir>/<name>.log).
const (
	ComponentEtcd              = "etcd"
	ComponentAPIServer         = "kube-apiserver"
	ComponentControllerManager = "kube-controller-manager"
	ComponentScheduler         = "kube-scheduler"
)

func controlPlaneBinaries() []string {
	return []string{ComponentEtcd, ComponentAPIServer, ComponentControllerManager, ComponentScheduler}
}

// RepoRoot returns the repository root: the nearest directory at or above the
// working directory whose go.mod declares the main module (go test runs with
// the package directory as working directory). Nested modules such as
// test/controlplane are skipped.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for {
		if modulePathOf(filepath.Join(dir, "go.mod")) == mainModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s at or above the working directory", mainModulePath)
		}
		dir = parent
	}
}

// modulePathOf returns the module path declared in the go.mod at path, or ""
// when there is none.
func modulePathOf(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// DefaultControlPlaneBinDir returns <repo root>/.cache/controlplane/<KubernetesVersion>/bin,
// where test/scripts/build-controlplane.sh puts the binaries.
func DefaultControlPlaneBinDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "controlplane", KubernetesVersion, "bin"), nil
}

// MissingControlPlaneBinaries lists the binaries that binDir lacks (or that
// are not executable). Empty means the directory is complete.
func MissingControlPlaneBinaries(binDir string) []string {
	var missing []string
	for _, b := range controlPlaneBinaries() {
		fi, err := os.Stat(filepath.Join(binDir, b))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

// BuildControlPlaneBinaries runs test/scripts/build-controlplane.sh, which
// builds the binaries into DefaultControlPlaneBinDir unless they are already
// up to date, and returns that directory. The script's output goes to out
// (may be nil). A cold build takes about ten minutes on two cores, longer than
// go test's default -timeout: give ctx (and go test) enough time.
func BuildControlPlaneBinaries(ctx context.Context, out io.Writer) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "test", "scripts", "build-controlplane.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("build script: %w", err)
	}
	if out == nil {
		out = io.Discard
	}
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout = out
	cmd.Stderr = out
	// On cancellation kill the whole group: the script's go build children
	// would otherwise keep running (and keep the script's lock).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(err, ctxErr)
		}
		return "", fmt.Errorf("run %s: %w", script, err)
	}
	binDir := filepath.Join(root, ".cache", "controlplane", KubernetesVersion, "bin")
	if missing := MissingControlPlaneBinaries(binDir); len(missing) > 0 {
		return "", fmt.Errorf("%s succeeded but %s lacks %s", script, binDir, strings.Join(missing, ", "))
	}
	return binDir, nil
}
