// Command etcd is a minimal single-member etcd server for tests, built on
// go.etcd.io/etcd/server/v3/embed. It accepts the few flags of the real etcd
// that the test control plane needs (same names and meaning), serves until
// SIGTERM or SIGINT, then shuts down cleanly.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := embed.NewConfig()
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", "default", "human-readable name for this member")
	dataDir := fs.String("data-dir", "", "path to the data directory (required)")
	listenClient := fs.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated URLs to listen on for client traffic")
	advertiseClient := fs.String("advertise-client-urls", "", "comma-separated client URLs to advertise (default: listen-client-urls)")
	listenPeer := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "comma-separated URLs to listen on for peer traffic")
	advertisePeer := fs.String("initial-advertise-peer-urls", "", "comma-separated peer URLs to advertise (default: listen-peer-urls)")
	listenMetrics := fs.String("listen-metrics-urls", "", "comma-separated URLs to serve /metrics and /health on, in addition to the client URLs")
	fs.StringVar(&cfg.LogLevel, "log-level", "warn", "debug, info, warn, error, panic or fatal")
	fs.BoolVar(&cfg.UnsafeNoFsync, "unsafe-no-fsync", false, "disable fsync: faster, loses data on a crash (fine for throw-away test data)")
	// embed.NewConfig leaves this at zero, which makes etcd log every request
	// as slow; etcd's own command line defaults it to 300ms.
	fs.DurationVar(&cfg.WarningUnaryRequestDuration, "warning-unary-request-duration", embed.DefaultWarningUnaryRequestDuration,
		"log a warning for unary requests slower than this")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", 0, "backend size quota in bytes (0: etcd default)")
	readyTimeout := fs.Duration("ready-timeout", time.Minute, "give up if the server is not ready within this time")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *dataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}

	var err error
	cfg.Name = *name
	cfg.Dir = *dataDir
	if cfg.ListenClientUrls, err = parseURLs(*listenClient); err != nil {
		return fmt.Errorf("--listen-client-urls: %w", err)
	}
	if cfg.AdvertiseClientUrls, err = parseURLs(firstNonEmpty(*advertiseClient, *listenClient)); err != nil {
		return fmt.Errorf("--advertise-client-urls: %w", err)
	}
	if cfg.ListenPeerUrls, err = parseURLs(*listenPeer); err != nil {
		return fmt.Errorf("--listen-peer-urls: %w", err)
	}
	if cfg.AdvertisePeerUrls, err = parseURLs(firstNonEmpty(*advertisePeer, *listenPeer)); err != nil {
		return fmt.Errorf("--initial-advertise-peer-urls: %w", err)
	}
	if *listenMetrics != "" {
		if cfg.ListenMetricsUrls, err = parseURLs(*listenMetrics); err != nil {
			return fmt.Errorf("--listen-metrics-urls: %w", err)
		}
	}
	// A single-member cluster made of this member only.
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", *listenClient)
	case <-time.After(*readyTimeout):
		e.Server.Stop()
		return fmt.Errorf("not ready within %s", *readyTimeout)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %s received, shutting down\n", s)
		return nil
	case err := <-e.Err():
		return fmt.Errorf("serve: %w", err)
	case <-e.Server.StopNotify():
		return fmt.Errorf("server stopped unexpectedly")
	}
}

func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no URL in %q", s)
	}
	return out, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
