// Package version holds the build's version information, set with -ldflags
// "-X github.com/kube-nfs/nfs-provisioner/pkg/version.Version=...".
package version

import "fmt"

// Set at build time; the defaults mark a development build.
var (
	Version   = "dev"
	Commit    = "unknown"
	BuildDate = "unknown"
)

// String is one line for logs and --version.
func String() string {
	return fmt.Sprintf("nfs-provisioner %s (commit %s, built %s)", Version, Commit, BuildDate)
}
