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

	"github.com/kube-nfs/nfs-provisioner/pkg/app"
	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/report"
	"github.com/kube-nfs/nfs-provisioner/pkg/usage"
)

// Exit codes of the report: found orphans or missing directories.
const exitProblems = 3

// runReport is `nfs-provisioner report [-o table|json] [flags]`: the same
// settings as the server (flags or environment), and the output format.
func runReport(args []string, stdout, stderr io.Writer) int {
	var opts config.Options
	fs := flag.NewFlagSet("nfs-provisioner report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts.Bind(fs)
	format := fs.String("o", "table", "Output format: table or json.")
	bytes := fs.Bool("bytes", false, "Also measure every directory listed, as the usage scanner does, within --usage-scan-rate.")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: nfs-provisioner report [-o table|json] [flags]")
		fmt.Fprintln(stderr, "Classifies every directory of the export against the cluster's PersistentVolumes: live, archived, orphan, missing. Only reads. Exit code 3 when it finds orphans or missing directories.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nfs-provisioner report: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if !settle(fs, &opts, "nfs-provisioner report", stderr) {
		return 2
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "nfs-provisioner report: -o %q: use table or json\n", *format)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	client, err := app.NewClient(opts)
	if err != nil {
		fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		return 1
	}
	entries, err := report.Run(ctx, report.Config{
		Client: client, Name: "default", ExportDir: opts.ExportDir, ExportPath: opts.NFSPath, Timeout: opts.FSTimeout,
		Bytes: *bytes, Wait: usage.NewRate(opts.UsageScanRate),
	})
	if err != nil {
		fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		return 1
	}
	if err := report.Write(stdout, *format, entries); err != nil {
		fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		return 1
	}
	if report.Problems(entries) > 0 {
		return exitProblems
	}
	return 0
}
