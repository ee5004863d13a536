package framework

import (
	"bytes"
	"context"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNFSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nfs-ganesha; skipped with -short")
	}
	if err := NFSToolsAvailable(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := t.TempDir()
	start := time.Now()
	srv, err := StartNFSServer(ctx, NFSOptions{Dir: dir, WorkDir: t.TempDir(), Logf: t.Logf})
	require.NoError(t, err)
	t.Logf("server started in %v (rpcbind started by us: %v)", time.Since(start).Round(time.Millisecond), srv.StartedRPCBind)
	stopped := false
	defer func() {
		if !stopped {
			srv.Stop()
		}
	}()

	assert.Equal(t, "127.0.0.1", srv.Server)
	assert.Equal(t, "/export", srv.ExportPath)
	assert.Equal(t, dir, srv.Dir)
	assert.NotEqual(t, 2049, srv.Port)
	pid := srv.PID()
	require.NotZero(t, pid)
	config := srv.ConfigFile

	// A claim directory made the way the provisioner makes it: on local disk.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "ns-claim-pvc-1"), 0o777))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "other"), 0o777))
	nfsPath := path.Join(srv.ExportPath, "ns-claim-pvc-1")

	// Larger than what libnfs 4.0 can write over NFSv4, binary.
	data := bytes.Repeat([]byte("hello\x00nfs\n"), 100_000)
	start = time.Now()
	require.NoError(t, srv.WriteFile(ctx, srv.Server, nfsPath, "data.bin", data))
	t.Logf("WriteFile of %d bytes took %v", len(data), time.Since(start).Round(time.Millisecond))

	// It landed on local disk in exactly that directory.
	local, err := os.ReadFile(filepath.Join(dir, "ns-claim-pvc-1", "data.bin"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, local), "local content differs from what was written")
	_, err = os.Stat(filepath.Join(dir, "data.bin"))
	assert.True(t, os.IsNotExist(err), "file also appeared at the export root")
	entries, err := os.ReadDir(filepath.Join(dir, "other"))
	require.NoError(t, err)
	assert.Empty(t, entries)
	fi, err := os.Stat(filepath.Join(dir, "ns-claim-pvc-1", "data.bin"))
	require.NoError(t, err)
	t.Logf("file written through NFS: mode %v, uid %d", fi.Mode(), nfsTestFileUID(fi))
	// No_Root_Squash: root through NFS stays root.
	assert.Equal(t, os.Geteuid(), nfsTestFileUID(fi))

	start = time.Now()
	got, err := srv.ReadFile(ctx, srv.Server, nfsPath, "data.bin")
	require.NoError(t, err)
	t.Logf("ReadFile took %v", time.Since(start).Round(time.Millisecond))
	assert.True(t, bytes.Equal(data, got), "content read through NFS differs")

	names, err := srv.List(ctx, srv.Server, nfsPath)
	require.NoError(t, err)
	assert.Equal(t, []string{"data.bin"}, names)
	names, err = srv.List(ctx, srv.Server, srv.ExportPath)
	require.NoError(t, err)
	assert.Equal(t, []string{"ns-claim-pvc-1", "other"}, names)

	// A file written locally is visible through NFS.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other", "local.txt"), []byte("local"), 0o644))
	got, err = srv.ReadFile(ctx, srv.Server, path.Join(srv.ExportPath, "other"), "local.txt")
	require.NoError(t, err)
	assert.Equal(t, "local", string(got))

	// Paths that do not exist on the server fail; nothing is created.
	missing := path.Join(srv.ExportPath, "does-not-exist")
	assert.Error(t, srv.WriteFile(ctx, srv.Server, missing, "x", []byte("x")))
	_, err = srv.ReadFile(ctx, srv.Server, missing, "x")
	assert.Error(t, err)
	_, err = srv.ReadFile(ctx, srv.Server, nfsPath, "no-such-file")
	assert.Error(t, err)
	_, err = srv.List(ctx, srv.Server, missing)
	assert.Error(t, err)
	_, err = srv.List(ctx, srv.Server, dir) // the local path is not what clients mount
	assert.Error(t, err)
	_, err = os.Stat(filepath.Join(dir, "does-not-exist"))
	assert.True(t, os.IsNotExist(err))
	// nfs-cp creates exclusively.
	assert.Error(t, srv.WriteFile(ctx, srv.Server, nfsPath, "data.bin", []byte("again")))
	assert.Error(t, srv.WriteFile(ctx, srv.Server, nfsPath, "../escape", []byte("x")))

	srv.Stop()
	stopped = true
	srv.Stop() // idempotent
	assert.False(t, srv.Running())
	assert.Zero(t, srv.PID())
	assert.False(t, nfsTestProcessAlive(pid), "ganesha.nfsd pid %d still alive", pid)
	assert.Empty(t, nfsTestProcessesWithArg(config), "ganesha.nfsd processes left")
	_, err = srv.List(ctx, srv.Server, srv.ExportPath)
	assert.Error(t, err, "server still answers after Stop")
}

// Two servers at once share rpcbind and the "/export" path; clients reach
// each through its own ports.
func TestNFSServerConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nfs-ganesha; skipped with -short")
	}
	if err := NFSToolsAvailable(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	servers := make([]*NFSServer, 2)
	errs := make(chan error, len(servers))
	for i := range servers {
		go func() {
			var err error
			servers[i], err = StartNFSServer(ctx, NFSOptions{WorkDir: t.TempDir()})
			errs <- err
		}()
	}
	for range servers {
		assert.NoError(t, <-errs)
	}
	for _, s := range servers {
		if s != nil {
			defer s.Stop()
		}
	}
	require.NotNil(t, servers[0])
	require.NotNil(t, servers[1])
	require.NotEqual(t, servers[0].Port, servers[1].Port)

	for i, s := range servers {
		require.NoError(t, s.WriteFile(ctx, s.Server, s.ExportPath, "who", []byte(strconv.Itoa(i))))
	}
	for i, s := range servers {
		local, err := os.ReadFile(filepath.Join(s.Dir, "who"))
		require.NoError(t, err)
		assert.Equal(t, strconv.Itoa(i), string(local))
	}
	// Stopping the first (which may own rpcbind) leaves the second usable.
	servers[0].Stop()
	got, err := servers[1].ReadFile(ctx, servers[1].Server, servers[1].ExportPath, "who")
	require.NoError(t, err)
	assert.Equal(t, "1", string(got))
}

// A server on another loopback address is reached there and only there, as
// two NFS servers of two exports would be.
func TestNFSServerAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nfs-ganesha; skipped with -short")
	}
	if err := NFSToolsAvailable(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := StartNFSServer(ctx, NFSOptions{Address: "127.0.0.2", ExportPath: "/bulk", WorkDir: t.TempDir()})
	require.NoError(t, err)
	defer s.Stop()
	assert.Equal(t, "127.0.0.2", s.Server)
	assert.Equal(t, "name=bulk,server=127.0.0.2,path=/bulk,dir="+s.Dir, s.ExportEntry("bulk"))
	require.NoError(t, s.WriteFile(ctx, "127.0.0.2", "/bulk", "who", []byte("bulk")))
	got, err := s.ReadFile(ctx, "127.0.0.2", "/bulk", "who")
	require.NoError(t, err)
	assert.Equal(t, "bulk", string(got))
	short, cancelShort := context.WithTimeout(ctx, 10*time.Second)
	defer cancelShort()
	_, err = s.ReadFile(short, "127.0.0.1", "/bulk", "who")
	assert.Error(t, err, "nothing listens on 127.0.0.1 at its ports")

	_, err = StartNFSServer(ctx, NFSOptions{Address: "10.0.0.1"})
	assert.Error(t, err, "not loopback")
}

func TestNFSServerBadExport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nfs-ganesha; skipped with -short")
	}
	if err := NFSToolsAvailable(); err != nil {
		t.Skip(err)
	}
	_, err := StartNFSServer(context.Background(), NFSOptions{Dir: filepath.Join(t.TempDir(), "missing")})
	assert.Error(t, err)
	_, err = StartNFSServer(context.Background(), NFSOptions{ExportPath: "/"})
	assert.Error(t, err)
}

func nfsTestFileUID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

func nfsTestProcessAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie (state Z) is gone for our purposes.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// nfsTestProcessesWithArg lists live processes whose command line contains arg.
func nfsTestProcessesWithArg(arg string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte(arg)) {
			continue
		}
		if nfsTestProcessAlive(pid) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}
