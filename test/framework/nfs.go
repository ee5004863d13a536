package framework

// A real userspace NFS server (nfs-ganesha with the VFS FSAL) on 127.0.0.1 for
// end-to-end tests, and a userspace NFS client (libnfs-utils) that reaches a
// PersistentVolume's nfs.server/nfs.path over the network the way kubelet
// would, without any kernel NFS support.
//
// Facts this file relies on (Debian 12: nfs-ganesha 4.3, libnfs 4.0.0,
// rpcbind 1.2.6):
//
//   - ganesha.nfsd registers NFS and MOUNT with the portmapper at startup and
//     exits (status 2, "Cannot register NFS V3 on TCP") when that fails; there
//     is no option to skip it. So rpcbind must run: a single instance per
//     machine on port 111 and /run/rpcbind.sock. A running one is reused
//     (system or from another test process); otherwise the server starts one
//     and its Stop stops it. Servers started later, in this or other
//     processes, keep working after that: registration only matters at start,
//     and clients here never ask the portmapper, the URL carries the ports
//     (nfsport=, mountport=).
//   - ganesha unregisters and then registers its programs, so two instances
//     starting at once make each other fail. Starts (and stopping an rpcbind)
//     are serialized across processes with a flock on /run/lock, and a start
//     that still fails that way or on a port taken meanwhile is retried.
//   - rpcbind switches to the _rpc user, which clears the kernel's
//     parent-death signal, so it runs under a small shell that stops it when a
//     pipe from this process reports EOF, which also happens when this process
//     is killed.
//   - libnfs 4.0.0 writes over NFSv4 fail for files from about 4 KiB on
//     ("ZDR error: Failed to encode COMPOUND4args"), so the client helpers use
//     NFSv3 with nfsport= and mountport=, which needs no portmapper.
//   - nfs-cp creates the target exclusively: it fails if the file exists.
//   - The export is NFSv3 and NFSv4, TCP only, no NLM (no NFSv3 locking), no
//     RQUOTA, no UDP, grace period disabled (NFSv4 opens work at once), and
//     mount_path_pseudo = true so NFSv3 and NFSv4 clients use the same path
//     (ExportPath, "/export" by default) that is not the local directory.
//   - ganesha.nfsd must run as root (VFS FSAL uses open_by_handle_at), and the
//     exported directory must be on a filesystem that supports file handles
//     (ext4, xfs, tmpfs; not overlayfs without nfs_export=on).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	ganeshaBinary    = "ganesha.nfsd"
	rpcbindSocket    = "/run/rpcbind.sock"
	rpcbindTCPAddr   = "127.0.0.1:111"
	nfsStartLock     = "/run/lock/nfs-provisioner-test-nfs.lock"
	nfsLoopback      = "127.0.0.1"
	nfsDefaultExport = "/export"
	nfsStartTimeout  = 30 * time.Second
	nfsClientTimeout = 30 * time.Second
	nfsStopTimeout   = 15 * time.Second
	nfsStartAttempts = 5
	nfsLogTailLines  = 40
)

// NFSOptions configures StartNFSServer. The zero value is usable.
type NFSOptions struct {
	// Dir is the local directory to export. Empty: a new directory "export"
	// under WorkDir.
	Dir string
	// ExportPath is the path clients mount (ganesha's Pseudo path, used by
	// NFSv3 too). Empty: "/export". Must be absolute and not "/".
	ExportPath string
	// WorkDir holds the configuration, log, pid file and NFSv4 recovery
	// state. Empty: a new temporary directory that Stop removes.
	WorkDir string
	// Address is the loopback address the server listens on and clients
	// use, e.g. "127.0.0.2" so that two servers differ by address as two
	// NFS servers would. Empty: "127.0.0.1". Must be an IPv4 address in
	// 127.0.0.0/8.
	Address string
	// StartTimeout bounds the wait until the server answers. Zero: 30s.
	StartTimeout time.Duration
	// Logf, when set (e.g. t.Logf), receives start and stop messages.
	Logf func(format string, args ...any)
}

// NFSServer is a running ganesha.nfsd serving one export on 127.0.0.1 (or
// NFSOptions.Address).
// WriteFile, ReadFile, List and URL may be called concurrently; Stop must not
// run concurrently with Running or PID.
type NFSServer struct {
	// Server is the address clients use: "127.0.0.1" unless
	// NFSOptions.Address says otherwise.
	Server string
	// ExportPath is the path clients mount, e.g. "/export"; a PV's nfs.path
	// is ExportPath or below it.
	ExportPath string
	// Dir is the exported directory on local disk.
	Dir string
	// Port is the NFS port (NFSv3 and NFSv4, TCP).
	Port int
	// MountPort is the MOUNT protocol port (NFSv3 only, TCP).
	MountPort int
	// WorkDir, ConfigFile and LogFile are ganesha's own files.
	WorkDir    string
	ConfigFile string
	LogFile    string
	// StartedRPCBind is true when this server started rpcbind (and Stop
	// stops it); false when it reused a running one.
	StartedRPCBind bool

	ganesha *nfsProc // nil when not running
	outFile string   // ganesha's stdout/stderr
	rpcbind *nfsProc // non-nil when this server started rpcbind

	removeWorkDir bool
	logf          func(format string, args ...any)
	stopOnce      sync.Once
}

// NFSToolsAvailable reports what the NFS server and client need and is
// missing: the binaries, the VFS FSAL plugin and root privileges. The error
// names every missing piece; nil means StartNFSServer can work.
func NFSToolsAvailable() error {
	var errs []error
	for _, b := range []string{ganeshaBinary, "nfs-ls", "nfs-cp", "nfs-cat"} {
		if _, err := exec.LookPath(b); err != nil {
			errs = append(errs, fmt.Errorf("%s not found in PATH: %w", b, err))
		}
	}
	if _, err := findRPCBind(); err != nil {
		errs = append(errs, err)
	}
	if _, err := findFSALDir(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		errs = append(errs, errors.New("install them with test/scripts/install-deps.sh (as root)"))
	}
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("not root: ganesha.nfsd with the VFS FSAL must run as root"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("NFS test tools unavailable: %w", errors.Join(errs...))
}

func findRPCBind() (string, error) {
	if p, err := exec.LookPath("rpcbind"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/rpcbind", "/sbin/rpcbind"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("rpcbind not found in PATH, /usr/sbin or /sbin")
}

// findFSALDir returns the directory holding libfsalvfs.so (package
// nfs-ganesha-vfs), used as Plugins_Dir.
func findFSALDir() (string, error) {
	patterns := []string{
		"/usr/lib/*/ganesha/libfsalvfs.so",
		"/usr/lib/ganesha/libfsalvfs.so",
		"/usr/lib64/ganesha/libfsalvfs.so",
	}
	for _, p := range patterns {
		if m, _ := filepath.Glob(p); len(m) > 0 {
			return filepath.Dir(m[0]), nil
		}
	}
	return "", errors.New("libfsalvfs.so (package nfs-ganesha-vfs) not found under /usr/lib")
}

// StartNFSServer starts ganesha.nfsd in the foreground exporting opts.Dir and
// returns once an NFSv3 and an NFSv4 client can list the export. Stop must be
// called to end it. ctx bounds the start only; the server runs until Stop.
func StartNFSServer(ctx context.Context, opts NFSOptions) (*NFSServer, error) {
	if err := NFSToolsAvailable(); err != nil {
		return nil, err
	}
	pluginsDir, err := findFSALDir()
	if err != nil {
		return nil, err
	}
	s := &NFSServer{
		Server:     nfsLoopback,
		ExportPath: opts.ExportPath,
		logf:       opts.Logf,
	}
	if opts.Address != "" {
		ip := net.ParseIP(opts.Address)
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("invalid Address %q: want an IPv4 address in 127.0.0.0/8", opts.Address)
		}
		s.Server = ip.To4().String()
	}
	if s.ExportPath == "" {
		s.ExportPath = nfsDefaultExport
	}
	if !path.IsAbs(s.ExportPath) || path.Clean(s.ExportPath) == "/" || strings.ContainsAny(s.ExportPath, "\"\n?\\") {
		return nil, fmt.Errorf("invalid ExportPath %q: want an absolute path below /", s.ExportPath)
	}
	s.ExportPath = path.Clean(s.ExportPath)

	if opts.WorkDir == "" {
		if s.WorkDir, err = os.MkdirTemp("", "nfs-ganesha-"); err != nil {
			return nil, fmt.Errorf("creating work directory: %w", err)
		}
		s.removeWorkDir = true
	} else if s.WorkDir, err = filepath.Abs(opts.WorkDir); err != nil {
		return nil, fmt.Errorf("work directory %q: %w", opts.WorkDir, err)
	}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()

	for _, d := range []string{"recovery", "ccache"} {
		if err := os.MkdirAll(filepath.Join(s.WorkDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating %s directory: %w", d, err)
		}
	}
	s.Dir = opts.Dir
	if s.Dir == "" {
		s.Dir = filepath.Join(s.WorkDir, "export")
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating export directory: %w", err)
		}
	}
	if s.Dir, err = filepath.Abs(s.Dir); err != nil {
		return nil, fmt.Errorf("export directory %q: %w", opts.Dir, err)
	}
	realDir, err := filepath.EvalSymlinks(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("export directory: %w", err)
	}
	if fi, err := os.Stat(realDir); err != nil {
		return nil, fmt.Errorf("export directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("export directory %s is not a directory", realDir)
	}
	if strings.ContainsAny(realDir+s.WorkDir, "\"\n\\") {
		return nil, fmt.Errorf("paths %q and %q must not contain quotes, backslashes or newlines", realDir, s.WorkDir)
	}
	s.ConfigFile = filepath.Join(s.WorkDir, "ganesha.conf")
	s.LogFile = filepath.Join(s.WorkDir, "ganesha.log")
	s.outFile = filepath.Join(s.WorkDir, "ganesha.out")

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = nfsStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	start := time.Now()
	var lastErr error
	for attempt := 1; attempt <= nfsStartAttempts; attempt++ {
		if attempt > 1 {
			// Jitter, so that racing starts in other processes spread out.
			delay := time.Duration(attempt)*100*time.Millisecond + rand.N(200*time.Millisecond)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("starting nfs server: %w (previous attempt: %w)", ctx.Err(), lastErr)
			case <-time.After(delay):
			}
		}
		retry, err := s.startAttempt(ctx, pluginsDir, realDir)
		if err == nil {
			s.logff("nfs: ganesha.nfsd pid %d serving %s:%s (dir %s) on port %d, mount port %d, ready in %v",
				s.PID(), s.Server, s.ExportPath, s.Dir, s.Port, s.MountPort, time.Since(start).Round(time.Millisecond))
			ok = true
			return s, nil
		}
		lastErr = err
		if !retry || ctx.Err() != nil {
			break
		}
		s.logff("nfs: attempt %d failed, retrying: %v", attempt, err)
	}
	return nil, lastErr
}

// startAttempt makes sure rpcbind runs and starts ganesha, holding the
// machine-wide start lock: ganesha.nfsd unregisters and then registers the
// NFS and MOUNT programs at the portmapper and exits when another instance
// registered in between, and an rpcbind must not be stopped while a server
// registers.
func (s *NFSServer) startAttempt(ctx context.Context, pluginsDir, realDir string) (retry bool, err error) {
	unlock, err := lockNFSStart(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()
	if err := s.ensureRPCBind(ctx); err != nil {
		return false, err
	}
	return s.startGanesha(ctx, pluginsDir, realDir)
}

// lockNFSStart takes an exclusive flock on a file shared by all test
// processes on the machine. The kernel releases it when the process dies.
func lockNFSStart(ctx context.Context) (unlock func(), err error) {
	name := nfsStartLock
	if _, err := os.Stat(filepath.Dir(name)); err != nil {
		name = filepath.Join(os.TempDir(), filepath.Base(name))
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening nfs start lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for nfs start lock %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startGanesha runs one start attempt on fresh ports. retry reports whether
// the failure may go away with other ports or a restarted rpcbind.
func (s *NFSServer) startGanesha(ctx context.Context, pluginsDir, realDir string) (retry bool, err error) {
	ports, err := nfsFreePorts(s.Server, 2)
	if err != nil {
		return false, err
	}
	s.Port, s.MountPort = ports[0], ports[1]
	conf := ganeshaConfig(s.Server, s.Port, s.MountPort, pluginsDir, realDir, s.ExportPath, s.WorkDir)
	if err := os.WriteFile(s.ConfigFile, []byte(conf), 0o644); err != nil {
		return false, fmt.Errorf("writing ganesha config: %w", err)
	}
	// A fresh log per attempt so the tail shows this attempt.
	_ = os.Remove(s.LogFile)
	out, err := os.OpenFile(s.outFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return false, fmt.Errorf("creating ganesha output file: %w", err)
	}
	defer out.Close()

	cmd := exec.Command(ganeshaBinary,
		"-F",
		"-f", s.ConfigFile,
		"-L", s.LogFile,
		"-p", filepath.Join(s.WorkDir, "ganesha.pid"),
		"-N", "NIV_EVENT",
	)
	cmd.Dir = s.WorkDir
	cmd.Stdout, cmd.Stderr = out, out
	p, err := startNFSProc(cmd)
	if err != nil {
		return false, fmt.Errorf("starting %s: %w", ganeshaBinary, err)
	}
	s.ganesha = p

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		probeErr := s.probe(ctx)
		if probeErr == nil {
			return false, nil
		}
		select {
		case <-p.done:
			log := s.startFailureLog()
			retry := strings.Contains(log, "Address already in use") || strings.Contains(log, "Cannot register")
			s.ganesha = nil
			return retry, fmt.Errorf("ganesha.nfsd exited during start (%v):\n%s", p.err, log)
		case <-ctx.Done():
			log := s.startFailureLog()
			s.stopGanesha()
			return false, fmt.Errorf("nfs server did not answer (last probe: %v): %w\n%s", probeErr, ctx.Err(), log)
		case <-tick.C:
		}
		// ganesha keeps running without an export it could not create.
		if data, _ := os.ReadFile(s.LogFile); bytes.Contains(data, []byte("Could not create export")) {
			log := s.startFailureLog()
			s.stopGanesha()
			return false, fmt.Errorf("ganesha.nfsd could not export %s:\n%s", realDir, log)
		}
	}
}

// probe lists the export root over NFSv3 and NFSv4.
func (s *NFSServer) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := runNFSTool(ctx, "nfs-ls", s.url(s.Server, s.ExportPath, 3)); err != nil {
		return err
	}
	_, err := runNFSTool(ctx, "nfs-ls", s.url(s.Server, s.ExportPath, 4))
	return err
}

func ganeshaConfig(bindAddr string, nfsPort, mntPort int, pluginsDir, dir, pseudo, workDir string) string {
	// Dbus_Name_Prefix: without it every instance (and a system ganesha)
	// claims org.ganesha.nfsd on the system bus, and a systemd
	// "ExecStop=dbus-send ... shutdown" could stop ours. Not getting a bus
	// name is not fatal.
	return fmt.Sprintf(`# Written by test/framework/nfs.go
NFS_CORE_PARAM {
	Bind_Addr = %s;
	NFS_Port = %d;
	MNT_Port = %d;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Enable_UDP = false;
	Protocols = 3, 4;
	mount_path_pseudo = true;
	Plugins_Dir = "%s";
	Dbus_Name_Prefix = "nfsprovtest%d_%d";
}

NFS_KRB5 {
	Active_krb5 = false;
	CCacheDir = "%s";
}

LOG {
	# Each libnfs client disconnect logs an EVENT otherwise.
	COMPONENTS {
		TIRPC = CRIT;
	}
}

NFSV4 {
	Graceless = true;
	RecoveryBackend = fs;
	RecoveryRoot = "%s";
}

EXPORT {
	Export_Id = 1;
	Path = "%s";
	Pseudo = "%s";
	Protocols = 3, 4;
	Transports = TCP;
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	FSAL {
		Name = VFS;
	}
}
`, bindAddr, nfsPort, mntPort, pluginsDir, os.Getpid(), nfsPort, filepath.Join(workDir, "ccache"), filepath.Join(workDir, "recovery"), dir, pseudo)
}

// nfsFreePorts returns n distinct free TCP ports on addr. They are free
// when probed; a lost race shows up as "Address already in use" and the start
// is retried.
func nfsFreePorts(addr string, n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp4", net.JoinHostPort(addr, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func rpcbindReachable() bool {
	for _, a := range [][2]string{{"unix", rpcbindSocket}, {"tcp", rpcbindTCPAddr}} {
		c, err := net.DialTimeout(a[0], a[1], time.Second)
		if err == nil {
			_ = c.Close()
			return true
		}
	}
	return false
}

// ensureRPCBind makes sure a portmapper answers, starting rpcbind when none
// does. An rpcbind started by an earlier attempt of this server is kept.
func (s *NFSServer) ensureRPCBind(ctx context.Context) error {
	if s.rpcbind != nil {
		if s.rpcbind.running() {
			return nil
		}
		s.rpcbind.terminate(0) // closes our end of its pipe
		s.rpcbind, s.StartedRPCBind = nil, false
	}
	if rpcbindReachable() {
		s.logff("nfs: reusing the running rpcbind")
		return nil
	}
	bin, err := findRPCBind()
	if err != nil {
		return err
	}
	// rpcbind switches to the _rpc user, which clears the parent-death
	// signal, so it would outlive a killed test process. A shell keeps it
	// instead: it stops rpcbind when the pipe on fd 3 reports EOF, which
	// happens when Stop closes our end or when this process dies however it
	// dies. That shell has no parent-death signal of its own, since it must
	// live long enough to do that.
	const keeper = `exec 3<&0 </dev/null
"$0" -f 3<&- &
rb=$!
{ read -r line <&3; kill -TERM "$rb" 2>/dev/null; } &
rd=$!
exec 3<&-
wait "$rb"
st=$?
kill "$rd" 2>/dev/null
exit "$st"`
	outPath := filepath.Join(s.WorkDir, "rpcbind.out")
	out, err := os.Create(outPath)
	if err != nil {
		return fmt.Errorf("creating rpcbind output file: %w", err)
	}
	defer out.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting rpcbind: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", keeper, bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pr, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = pr.Close()
	if err != nil {
		_ = pw.Close()
		return fmt.Errorf("starting rpcbind: %w", err)
	}
	p := watchNFSProc(cmd)
	p.stdin = pw
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			_ = pw.Close()
			// Usually another process started one at the same moment and
			// holds /run/rpcbind.lock.
			if rpcbindReachable() {
				s.logff("nfs: reusing an rpcbind started concurrently")
				return nil
			}
			msg, _ := os.ReadFile(outPath)
			return fmt.Errorf("rpcbind exited (%v): %s", p.err, strings.TrimSpace(string(msg)))
		case <-ctx.Done():
			p.terminate(2 * time.Second)
			return fmt.Errorf("waiting for rpcbind: %w", ctx.Err())
		case <-tick.C:
			if rpcbindReachable() {
				s.rpcbind, s.StartedRPCBind = p, true
				s.logff("nfs: started rpcbind (keeper pid %d)", cmd.Process.Pid)
				return nil
			}
		}
	}
}

// Stop terminates ganesha.nfsd (SIGTERM, SIGKILL after 15s) and waits for
// it, stops rpcbind if this server started it, and removes WorkDir if
// StartNFSServer created it. Safe to call more than once.
func (s *NFSServer) Stop() {
	s.stopOnce.Do(func() {
		s.stopGanesha()
		if s.rpcbind != nil {
			// Not while another server registers with it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			unlock, err := lockNFSStart(ctx)
			cancel()
			if err != nil {
				s.logff("nfs: stopping rpcbind without the start lock: %v", err)
			}
			s.rpcbind.terminate(5 * time.Second)
			s.rpcbind = nil
			if unlock != nil {
				unlock()
			}
		}
		if s.removeWorkDir {
			if err := os.RemoveAll(s.WorkDir); err != nil {
				s.logff("nfs: removing %s: %v", s.WorkDir, err)
			}
		}
	})
}

func (s *NFSServer) stopGanesha() {
	p := s.ganesha
	if p == nil {
		return
	}
	start := time.Now()
	if killed := p.terminate(nfsStopTimeout); killed {
		s.logff("nfs: ganesha.nfsd did not stop on SIGTERM within %v and was killed; log tail:\n%s",
			nfsStopTimeout, s.LogTail(nfsLogTailLines))
	} else if p.err != nil {
		s.logff("nfs: ganesha.nfsd exited: %v", p.err)
	} else {
		s.logff("nfs: ganesha.nfsd stopped in %v", time.Since(start).Round(time.Millisecond))
	}
	s.ganesha = nil
}

// Running reports whether ganesha.nfsd is still running.
func (s *NFSServer) Running() bool {
	return s.ganesha != nil && s.ganesha.running()
}

// PID is the process id of ganesha.nfsd, 0 when it is not running.
func (s *NFSServer) PID() int {
	if !s.Running() {
		return 0
	}
	return s.ganesha.cmd.Process.Pid
}

// nfsProc is a started child process in its own process group, and the
// result of waiting for it.
type nfsProc struct {
	cmd   *exec.Cmd
	stdin io.Closer     // when set, closing it asks the process to stop
	done  chan struct{} // closed once cmd has been waited for
	err   error         // the Wait error, valid after done is closed
}

// startNFSProc starts cmd in its own process group, killed when we die.
func startNFSProc(cmd *exec.Cmd) (*nfsProc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return watchNFSProc(cmd), nil
}

func watchNFSProc(cmd *exec.Cmd) *nfsProc {
	p := &nfsProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *nfsProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// terminate asks the process to stop (closes stdin if set, else SIGTERM),
// waits up to grace, then SIGKILLs the process group and waits. It reports
// whether SIGKILL was needed.
func (p *nfsProc) terminate(grace time.Duration) (killed bool) {
	defer func() {
		if p.stdin != nil {
			_ = p.stdin.Close()
		}
	}()
	if !p.running() {
		return false
	}
	if p.stdin != nil {
		_ = p.stdin.Close()
	} else {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
	}
	// The leader has not been reaped yet, so the group id is still ours.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return true
}

// LogTail returns the last n lines of ganesha's log file and of its
// stdout/stderr.
func (s *NFSServer) LogTail(n int) string {
	var b strings.Builder
	for _, f := range []string{s.LogFile, s.outFile} {
		data, err := os.ReadFile(f)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "==> %s <==\n%s\n", f, strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return "(no ganesha output)"
	}
	return b.String()
}

// ganeshaNoise matches problems ganesha always logs here: no D-Bus, no
// Kerberos, no RADOS.
var ganeshaNoise = regexp.MustCompile(`(?i)dbus|rados|krb5|keytab|principal|realm|gssd`)

// startFailureLog returns ganesha's warnings and errors that matter,
// followed by the tail of its log and output.
func (s *NFSServer) startFailureLog() string {
	var b strings.Builder
	if data, err := os.ReadFile(s.LogFile); err == nil {
		var problems []string
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, " :WARN :") || strings.Contains(l, " :CRIT :") ||
				strings.Contains(l, " :MAJ :") || strings.Contains(l, " :FATAL :") {
				if !ganeshaNoise.MatchString(l) {
					problems = append(problems, l)
				}
			}
		}
		if len(problems) > 20 {
			problems = problems[:20]
		}
		if len(problems) > 0 {
			fmt.Fprintf(&b, "==> problems in %s <==\n%s\n", s.LogFile, strings.Join(problems, "\n"))
		}
	}
	b.WriteString(s.LogTail(15))
	return b.String()
}

func (s *NFSServer) logff(format string, args ...any) {
	if s.logf != nil {
		s.logf(format, args...)
	}
}

// ExportEntry is the provisioner's --export entry for this server's export
// under name, with the exported directory as the provisioner's mount (no NFS
// mount in between, as in the other tests).
func (s *NFSServer) ExportEntry(name string) string {
	return ExportEntry(name, s.Server, s.ExportPath, s.Dir)
}

// URL returns the libnfs URL for nfsPath on server using this server's ports
// over NFSv3, e.g. nfs://127.0.0.1/export/dir?nfsport=N&mountport=M. No
// portmapper is involved.
func (s *NFSServer) URL(server, nfsPath string) string {
	return s.url(server, nfsPath, 3)
}

func (s *NFSServer) url(server, nfsPath string, version int) string {
	q := "nfsport=" + strconv.Itoa(s.Port)
	if version == 4 {
		q = "version=4&" + q
	} else {
		q += "&mountport=" + strconv.Itoa(s.MountPort)
	}
	return "nfs://" + server + nfsPath + "?" + q
}

// checkNFSPath validates a PV-style nfs.server and nfs.path and returns the
// cleaned path. libnfs does not decode %-escapes, so a path is used as is,
// except that "?" (the start of the URL options) is rejected.
func checkNFSPath(server, nfsPath string) (string, error) {
	if server == "" || strings.ContainsAny(server, "/?@ ") {
		return "", fmt.Errorf("invalid NFS server %q", server)
	}
	if !path.IsAbs(nfsPath) || strings.ContainsAny(nfsPath, "?\x00\n") {
		return "", fmt.Errorf("invalid NFS path %q: want an absolute path without '?'", nfsPath)
	}
	return path.Clean(nfsPath), nil
}

func checkNFSName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/?\x00\n") {
		return fmt.Errorf("invalid file name %q", name)
	}
	return nil
}

// WriteFile writes data into a new file name in directory nfsPath on server
// through NFSv3 (nfs-cp from a local temporary file), as a pod would after
// kubelet mounted server:nfsPath. It fails when nfsPath does not exist on the
// server and when the file already exists. The file is created as the
// calling user (root in these tests, not squashed) with mode 0660.
func (s *NFSServer) WriteFile(ctx context.Context, server, nfsPath, name string, data []byte) error {
	dir, err := checkNFSPath(server, nfsPath)
	if err != nil {
		return err
	}
	if err := checkNFSName(name); err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "nfs-write-")
	if err != nil {
		return fmt.Errorf("creating local temporary file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing local temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing local temporary file: %w", err)
	}
	if _, err := runNFSTool(ctx, "nfs-cp", tmp.Name(), s.URL(server, path.Join(dir, name))); err != nil {
		return fmt.Errorf("writing %s:%s through NFS: %w", server, path.Join(dir, name), err)
	}
	return nil
}

// ReadFile reads file name in directory nfsPath on server through NFSv3
// (nfs-cat). It fails when the directory or the file does not exist.
func (s *NFSServer) ReadFile(ctx context.Context, server, nfsPath, name string) ([]byte, error) {
	dir, err := checkNFSPath(server, nfsPath)
	if err != nil {
		return nil, err
	}
	if err := checkNFSName(name); err != nil {
		return nil, err
	}
	out, err := runNFSTool(ctx, "nfs-cat", s.URL(server, path.Join(dir, name)))
	if err != nil {
		return nil, fmt.Errorf("reading %s:%s through NFS: %w", server, path.Join(dir, name), err)
	}
	return out, nil
}

// nfs-ls prints "mode nlink uid gid size name" per entry.
var nfsLsLine = regexp.MustCompile(`^\S+\s+\d+\s+\d+\s+\d+\s+\d+ (.+)$`)

// List returns the sorted names in directory nfsPath on server through
// NFSv3 (nfs-ls), without "." and "..". It fails when nfsPath does not exist
// or is not a directory.
func (s *NFSServer) List(ctx context.Context, server, nfsPath string) ([]string, error) {
	dir, err := checkNFSPath(server, nfsPath)
	if err != nil {
		return nil, err
	}
	out, err := runNFSTool(ctx, "nfs-ls", s.URL(server, dir))
	if err != nil {
		return nil, fmt.Errorf("listing %s:%s through NFS: %w", server, dir, err)
	}
	names := []string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		m := nfsLsLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("listing %s:%s through NFS: unexpected nfs-ls line %q", server, dir, line)
		}
		if m[1] != "." && m[1] != ".." {
			names = append(names, m[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("listing %s:%s through NFS: %w", server, dir, err)
	}
	sort.Strings(names)
	return names, nil
}

// runNFSTool runs a libnfs-utils command and returns its stdout. Without a
// deadline in ctx it is bounded by 30s.
func runNFSTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, nfsClientTimeout)
		defer cancel()
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w: %w (%s)", name, strings.Join(args, " "), err, ctx.Err(), msg)
		}
		return nil, fmt.Errorf("%s %s: %w (%s)", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}
