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
		fmt.Fprintln(stderr, "Classifies every directory of each export against the cluster's PersistentVolumes: live, archived, orphan, missing. Only reads. Exit code 3 when it finds orphans or missing directories, 1 when an export can't be read (the others are still listed).")
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
	set, err := opts.ExportList()
	if err != nil {
		fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		return 2
	}
	entries, err := report.Run(ctx, report.Config{
		Client: client, Exports: set, Timeout: opts.FSTimeout,
		Bytes: *bytes, Wait: usage.NewRate(opts.UsageScanRate),
	})
	return writeReport(stdout, stderr, *format, entries, err)
}

// writeReport prints what report.Run returned and picks the exit code: 1
// when something couldn't be read, the entries of the exports that could
// still printed; else 3 on orphans or missing directories.
func writeReport(stdout, stderr io.Writer, format string, entries []report.Entry, err error) int {
	var exportErr *report.ExportError
	if err != nil && !errors.As(err, &exportErr) {
		fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		return 1
	}
	if err := report.Write(stdout, format, entries); err != nil {
		fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		return 1
	}
	if err != nil {
		errs := []error{err}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			errs = joined.Unwrap()
		}
		for _, err := range errs {
			fmt.Fprintln(stderr, "nfs-provisioner report:", err)
		}
		fmt.Fprintln(stderr, "nfs-provisioner report: the exports named above could not be read; the others' directories are listed")
		return 1
	}
	if report.Problems(entries) > 0 {
		return exitProblems
	}
	return 0
}
