package framework

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// process is one control-plane component running as a child process.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // valid after done is closed
}

// startProcess runs bin with args and this process's environment plus env,
// stdout and stderr appended to logPath.
//
// Every child gets its own process group (Setpgid) so that Stop can signal
// it together with anything it forked, and Pdeathsig so that the kernel kills
// it when the test binary dies without running Stop (a panic, a go test
// timeout, SIGKILL). Call it through a launcher (see below).
func startProcess(name, bin string, args, env []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file for %s: %w", name, err)
	}
	// Record the exact command line at the top of the log: the first thing one
	// wants when reading why a component failed.
	fmt.Fprintf(logFile, "+ %s %s\n", bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	// The child holds its own copy of the descriptor.
	logFile.Close()

	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// launcher runs startProcess on one OS thread that stays alive until close.
//
// Pdeathsig is delivered when the *thread* that forked the child exits, not
// the process. The Go runtime ends a thread when a goroutine exits while
// locked to it (LockOSThread, e.g. code that switches network namespaces); if
// that thread had earlier forked one of our children, the child would be
// killed in the middle of a test. Forking only from a goroutine that keeps its
// thread locked until Stop rules that out.
type launcher struct {
	reqs chan func()
	done chan struct{}
}

func newLauncher() *launcher {
	l := &launcher{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Unlocked (thread returned to the pool) only after close, when the
		// children are gone.
		defer runtime.UnlockOSThread()
		defer close(l.done)
		for f := range l.reqs {
			f()
		}
	}()
	return l
}

// start runs startProcess on the launcher's thread.
func (l *launcher) start(name, bin string, args, env []string, logPath string) (*process, error) {
	var (
		p   *process
		err error
	)
	ran := make(chan struct{})
	l.reqs <- func() {
		p, err = startProcess(name, bin, args, env, logPath)
		close(ran)
	}
	<-ran
	return p, err
}

// close ends the launcher's goroutine; call it after every child has exited.
func (l *launcher) close() {
	close(l.reqs)
	<-l.done
}

// exited reports whether the process has already ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an unexpected exit, with the end of the log.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited early (%v); log %s:\n%s", p.name, p.waitErr, p.logPath, logTail(p.logPath, 30))
}

// stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits until the process is reaped. The group is signalled (negative pid)
// so nothing the component forked survives either.
func (p *process) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// SIGKILL the group even after a clean exit of the leader: a grandchild
	// could still be in it. ESRCH (group already empty) is the normal case.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// logTail returns the last n lines of the file at path, for error messages.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	data = bytes.TrimRight(data, "\n")
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + string(bytes.Join(lines, []byte("\n  ")))
}
