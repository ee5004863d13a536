package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BuildProvisioner builds cmd/nfs-provisioner into .cache/bin and returns the
// binary's path. go build's cache makes a rebuild of unchanged code quick.
func BuildProvisioner(ctx context.Context) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, ".cache", "bin", "nfs-provisioner")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/nfs-provisioner")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the provisioner: %w\n%s", err, out)
	}
	return bin, nil
}

// ProvisionerOptions start one provisioner process the way the Deployment
// does: settings through the incumbent's environment variables.
type ProvisionerOptions struct {
	Binary     string
	Kubeconfig string
	// Name, NFSServer and NFSPath become PROVISIONER_NAME, NFS_SERVER and
	// NFS_PATH; ExportDir is the local directory standing in for the mount.
	// With Exports, NFSServer, NFSPath and ExportDir may be left empty:
	// then NFS_SERVER and NFS_PATH are not set and --export-dir is not
	// passed, so the provisioner has no export named "default".
	Name, NFSServer, NFSPath, ExportDir string
	// Exports are passed as one --export flag each, entries like
	// "name=fast,server=127.0.0.1,path=/fast,dir=/mnt/fast" (see
	// ExportEntry and NFSServer.ExportEntry).
	Exports []string
	// Namespace and Identity become POD_NAMESPACE and POD_NAME.
	Namespace, Identity string
	// Args are extra flags; Env extra KEY=value settings.
	Args, Env []string
	LogPath   string
}

// ExportEntry is one --export (or NFS_EXPORTS) entry: the export called name
// is server:path on the NFS server and mounted at dir for the provisioner.
func ExportEntry(name, server, path, dir string) string {
	return "name=" + name + ",server=" + server + ",path=" + path + ",dir=" + dir
}

// ProvisionerProcess is one running provisioner.
type ProvisionerProcess struct {
	// HTTPAddress serves /metrics, /healthz and /readyz.
	HTTPAddress string
	// PprofAddress serves /debug/pprof/, on a port of its own as in a pod.
	PprofAddress string
	LogPath      string
	proc         *process
	launcher     *launcher
}

// StartProvisioner starts the binary and waits until /healthz answers.
func StartProvisioner(ctx context.Context, o ProvisionerOptions) (*ProvisionerProcess, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	addr := loopbackHostPort(ports[0])
	env := []string{"PROVISIONER_NAME=" + o.Name}
	// Without Exports the single export is always set, even empty, as
	// before.
	if len(o.Exports) == 0 || o.NFSServer != "" || o.NFSPath != "" {
		env = append(env, "NFS_SERVER="+o.NFSServer, "NFS_PATH="+o.NFSPath)
	}
	env = append(env,
		"POD_NAMESPACE="+o.Namespace,
		"POD_NAME="+o.Identity,
		"KUBECONFIG="+o.Kubeconfig,
	)
	env = append(env, o.Env...)
	var args []string
	if len(o.Exports) == 0 || o.ExportDir != "" {
		args = append(args, "--export-dir="+o.ExportDir)
	}
	for _, x := range o.Exports {
		args = append(args, "--export="+x)
	}
	args = append(args, "--http-address="+addr, "--enable-pprof", "--pprof-address="+loopbackHostPort(ports[1]))
	args = append(args, o.Args...)
	l := newLauncher()
	proc, err := l.start("nfs-provisioner", o.Binary, args, env, o.LogPath)
	if err != nil {
		l.close()
		return nil, err
	}
	p := &ProvisionerProcess{HTTPAddress: addr, PprofAddress: loopbackHostPort(ports[1]), LogPath: o.LogPath, proc: proc, launcher: l}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	if err := waitFor(waitCtx, proc, "the provisioner's /healthz", func(ctx context.Context) error {
		return httpGetOK(ctx, client, "http://"+addr+"/healthz")
	}); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// Get fetches a path from the provisioner's HTTP port and returns the status
// code and body.
func (p *ProvisionerProcess) Get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddress+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Terminate sends SIGTERM, as kubelet does, and waits up to grace before
// SIGKILL.
func (p *ProvisionerProcess) Terminate(grace time.Duration) {
	p.proc.stop(grace)
	p.launcher.close()
}

// Kill sends SIGKILL at once, like a node dying.
func (p *ProvisionerProcess) Kill() {
	_ = syscall.Kill(-p.proc.cmd.Process.Pid, syscall.SIGKILL)
	<-p.proc.done
	p.launcher.close()
}

// PID is the process id of the provisioner binary.
func (p *ProvisionerProcess) PID() int { return p.proc.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *ProvisionerProcess) Exited() bool { return p.proc.exited() }

// ExitCode is the exit status once Exited; -1 for a signal.
func (p *ProvisionerProcess) ExitCode() int { return p.proc.cmd.ProcessState.ExitCode() }

// Log returns the process's output so far.
func (p *ProvisionerProcess) Log() string {
	data, _ := os.ReadFile(p.LogPath)
	return string(data)
}

// Pid is the process id, for reading its resident memory.
func (p *ProvisionerProcess) Pid() int { return p.proc.cmd.Process.Pid }

// ResidentBytes reads VmRSS of the process from /proc.
func (p *ProvisionerProcess) ResidentBytes() (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.Pid())
}
