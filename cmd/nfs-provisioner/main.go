// Command nfs-provisioner provisions a directory on an NFS export for every
// PersistentVolumeClaim whose StorageClass names it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/app"
	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// newFlagSet registers every flag the binary takes: ours (opts), klog's and
// --version.
func newFlagSet(opts *config.Options, stderr io.Writer) (fs *flag.FlagSet, showVersion *bool) {
	fs = flag.NewFlagSet("nfs-provisioner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts.Bind(fs)
	klog.InitFlags(fs)
	showVersion = fs.Bool("version", false, "Print the version and exit.")
	return fs, showVersion
}

// settle completes the parsed flags from the environment and validates
// them, saying on stderr what is wrong.
func settle(fs *flag.FlagSet, opts *config.Options, name string, stderr io.Writer) bool {
	if err := config.ApplyEnv(fs, os.LookupEnv); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return false
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: invalid settings: %v\n", name, err)
		return false
	}
	return true
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "report" {
		return runReport(args[1:], stdout, stderr)
	}
	var opts config.Options
	fs, showVersion := newFlagSet(&opts, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// The one subcommand is first; any other word would otherwise be
	// ignored, and the flags after it with it, and the server would start.
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nfs-provisioner: unexpected argument %q: this command takes flags, or report as its first argument (--help lists them)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String())
		return 0
	}
	if !settle(fs, &opts, "nfs-provisioner", stderr) {
		return 2
	}

	// SIGTERM cancels ctx: the Lease is released and a standby takes over.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	defer klog.Flush()
	if err := app.Run(ctx, opts); err != nil {
		klog.Background().Error(err, "Exiting")
		return 1
	}
	return 0
}
