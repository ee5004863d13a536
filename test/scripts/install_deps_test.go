// Package scripts tests the shell scripts of test/scripts with fake
// dpkg-query, apt-get, systemctl and id on PATH: nothing on the host changes.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeHost writes fake tools into a directory: units enabled/active before
// the run are files under state/, apt-get "installs" by enabling and
// starting nfs-ganesha.service and rpcbind.socket, systemctl logs its calls.
func fakeHost(t *testing.T, installed bool, enabled, active []string) (dir string, env []string) {
	dir = t.TempDir()
	bin := filepath.Join(dir, "bin")
	state := filepath.Join(dir, "state")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "systemd"), 0o755))
	require.NoError(t, os.MkdirAll(state, 0o755))
	for _, u := range enabled {
		require.NoError(t, os.WriteFile(filepath.Join(state, u+".enabled"), nil, 0o644))
	}
	for _, u := range active {
		require.NoError(t, os.WriteFile(filepath.Join(state, u+".active"), nil, 0o644))
	}
	status := "deinstall ok config-files"
	if installed {
		status = "install ok installed"
	}
	tools := map[string]string{
		"id":           `echo 0`,
		"dpkg-query":   `[ -e "$STATE/installed" ] && s="install ok installed" || s="` + status + `"; printf '%s' "$s"`,
		"apt-get":      `[ "$1" = install ] || exit 0; touch "$STATE/installed"; for u in nfs-ganesha.service rpcbind.socket; do touch "$STATE/$u.enabled" "$STATE/$u.active"; done`,
		"systemctl":    `echo "$*" >>"$STATE/calls"; q=; [ "$2" = --quiet ] && { q=1; u=$3; } || u=$2; case $1 in is-enabled) [ -e "$STATE/$u.enabled" ];; is-active) [ -e "$STATE/$u.active" ];; stop) rm -f "$STATE/$u.active";; disable) rm -f "$STATE/$3.enabled" "$STATE/$2.enabled";; esac`,
		"ganesha.nfsd": `:`, "nfs-ls": `:`, "nfs-cp": `:`, "nfs-cat": `:`,
	}
	for name, body := range tools {
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/bash\n"+body+"\n"), 0o755))
	}
	env = append(os.Environ(),
		"PATH="+bin+":/usr/bin:/bin",
		"STATE="+state,
		"INSTALL_DEPS_SYSTEMD_DIR="+filepath.Join(dir, "systemd"),
		"INSTALL_DEPS_POLICY_RC_D="+filepath.Join(dir, "policy-rc.d"),
	)
	return dir, env
}

func runScript(t *testing.T, env []string) string {
	t.Helper()
	cmd := exec.Command("bash", "install-deps.sh")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

func calls(t *testing.T, dir string) string {
	data, _ := os.ReadFile(filepath.Join(dir, "state", "calls"))
	return string(data)
}

func TestInstallDepsLeavesHostServicesAlone(t *testing.T) {
	t.Parallel()
	t.Run("everything installed: touches nothing", func(t *testing.T) {
		t.Parallel()
		dir, env := fakeHost(t, true, []string{"nfs-ganesha.service"}, []string{"nfs-ganesha.service"})
		runScript(t, env)
		assert.Empty(t, calls(t, dir), "a system ganesha that runs must stay running and enabled")
		assert.FileExists(t, filepath.Join(dir, "state", "nfs-ganesha.service.active"))
	})
	t.Run("install undoes exactly what it did", func(t *testing.T) {
		t.Parallel()
		// rpcbind.socket was enabled and running before: kept.
		dir, env := fakeHost(t, false, []string{"rpcbind.socket"}, []string{"rpcbind.socket"})
		runScript(t, env)
		c := calls(t, dir)
		assert.Contains(t, c, "stop nfs-ganesha.service")
		assert.Contains(t, c, "disable --quiet nfs-ganesha.service")
		assert.NotContains(t, c, "stop rpcbind.socket")
		assert.NotContains(t, c, "disable --quiet rpcbind.socket")
		assert.FileExists(t, filepath.Join(dir, "state", "rpcbind.socket.active"))
		assert.NoFileExists(t, filepath.Join(dir, "policy-rc.d"), "policy-rc.d removed after the install")
		assert.False(t, strings.Contains(c, "--now"))
	})
}
