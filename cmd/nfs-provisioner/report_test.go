package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kube-nfs/nfs-provisioner/pkg/exports"
	"github.com/kube-nfs/nfs-provisioner/pkg/report"
)

// TestWriteReportExitCodes: 3 on an orphan or a missing directory; 1 when
// an export couldn't be read, the others' entries printed still; 1 with
// nothing printed when the report as a whole failed.
func TestWriteReportExitCodes(t *testing.T) {
	t.Parallel()
	live := report.Entry{Export: "fast", Directory: "ns-a", State: report.Live}
	orphan := report.Entry{Export: "bulk", Directory: "stray", State: report.Orphan}
	dead := &report.ExportError{Export: exports.Export{Name: "dead", Server: "10.0.0.3", Path: "/gone", Dir: "/exports/dead"}, Err: errors.New("no answer within 30s")}
	for name, tc := range map[string]struct {
		entries []report.Entry
		err     error
		code    int
		stdout  []string
		stderr  []string
	}{
		"clean":              {entries: []report.Entry{live}, code: 0, stdout: []string{"fast    ns-a"}},
		"orphan on one":      {entries: []report.Entry{live, orphan}, code: exitProblems, stdout: []string{"fast    ns-a", "bulk    stray"}},
		"one export unread":  {entries: []report.Entry{live, orphan}, err: errors.Join(dead), code: 1, stdout: []string{"fast    ns-a", "bulk    stray"}, stderr: []string{"nfs-provisioner report: export dead (10.0.0.3:/gone at /exports/dead): no answer within 30s\n", "the others' directories are listed"}},
		"two exports unread": {err: errors.Join(dead, dead), code: 1, stdout: []string{"EXPORT"}, stderr: []string{"(10.0.0.3:/gone at /exports/dead): no answer within 30s\nnfs-provisioner report: export dead"}},
		"no PVs":             {err: errors.New("listing PersistentVolumes: forbidden"), code: 1, stderr: []string{"nfs-provisioner report: listing PersistentVolumes: forbidden"}},
	} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, tc.code, writeReport(&stdout, &stderr, "table", tc.entries, tc.err), name)
		for _, s := range tc.stdout {
			assert.Contains(t, stdout.String(), s, name)
		}
		if tc.stdout == nil {
			assert.Empty(t, stdout.String(), name)
		}
		for _, s := range tc.stderr {
			assert.Contains(t, stderr.String(), s, name)
		}
		if tc.stderr == nil {
			assert.Empty(t, stderr.String(), name)
		}
	}
}
