// Command nfs-provisioner provisions a directory on an NFS export for every
// PersistentVolumeClaim whose StorageClass names it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/kube-nfs/nfs-provisioner/pkg/app"
	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/version"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("nfs-provisioner", flag.ContinueOnError)
	var opts config.Options
	opts.Bind(fs)
	klog.InitFlags(fs)
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Println(version.String())
		return 0
	}
	if err := config.ApplyEnv(fs, os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "nfs-provisioner:", err)
		return 2
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "nfs-provisioner: invalid settings:", err)
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
