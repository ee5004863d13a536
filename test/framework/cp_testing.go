package framework

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// RequireControlPlaneEnv, when set to a non-empty value, turns the skips of
// RequireControlPlaneBinaries into failures: CI sets it so that a broken
// build cannot pass as "skipped".
const RequireControlPlaneEnv = "NFS_PROVISIONER_REQUIRE_CONTROLPLANE"

// coldBuildBudget is what a cold build of the binaries needs, with margin.
const coldBuildBudget = 20 * time.Minute

// RequireControlPlaneBinaries returns the directory with the control-plane
// binaries, building them when missing. It skips the test (fails it when
// RequireControlPlaneEnv is set) when they cannot be built, or when a build is
// needed but the test's deadline (go test -timeout) leaves too little time
// for it.
func RequireControlPlaneBinaries(tb testing.TB) string {
	tb.Helper()
	skip := tb.Skipf
	if os.Getenv(RequireControlPlaneEnv) != "" {
		skip = tb.Fatalf
	}
	binDir, err := DefaultControlPlaneBinDir()
	if err != nil {
		skip("control-plane binaries: %v", err)
		return ""
	}
	missing := MissingControlPlaneBinaries(binDir)
	if len(missing) == 0 {
		return binDir
	}

	ctx := context.Background()
	if t, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := t.Deadline(); ok {
			if time.Until(deadline) < coldBuildBudget {
				skip("control-plane binaries missing in %s (%s) and a cold build does not fit in the test timeout: "+
					"run test/scripts/build-controlplane.sh first, or go test -timeout 30m", binDir, strings.Join(missing, ", "))
				return ""
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, deadline.Add(-time.Minute))
			defer cancel()
		}
	}
	tb.Logf("control-plane binaries missing in %s (%s): building them (about 10 minutes cold)", binDir, strings.Join(missing, ", "))
	start := time.Now()
	var out bytes.Buffer
	binDir, err = BuildControlPlaneBinaries(ctx, &out)
	if err != nil {
		skip("cannot build the control-plane binaries: %v\n%s", err, lastLines(out.String(), 30))
		return ""
	}
	tb.Logf("built control-plane binaries in %s", time.Since(start).Round(time.Second))
	return binDir
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
