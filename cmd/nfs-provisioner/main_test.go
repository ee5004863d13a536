package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRunRejectsArguments checks that a positional argument stops the
// process before anything starts, instead of being ignored.
func TestRunRejectsArguments(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		args []string
		want string
	}{
		"unknown subcommand":            {args: []string{"status"}, want: `unexpected argument "status"`},
		"report only as the first word": {args: []string{"--nfs-server=x", "report", "--workers=2"}, want: `unexpected argument "report"`},
		"stray word":                    {args: []string{"--version", "now"}, want: `unexpected argument "now"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			assert.Equal(t, 2, run(tc.args, &stdout, &stderr))
			assert.Contains(t, stderr.String(), tc.want)
			assert.Contains(t, stderr.String(), "this command takes flags, or report as its first argument")
			assert.Empty(t, stdout.String())
		})
	}
}

func TestReportArguments(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"bad format":      {[]string{"report", "-o", "yaml", "--provisioner-name=p", "--nfs-server=s", "--nfs-path=/x"}, `-o "yaml": use table or json`},
		"stray word":      {[]string{"report", "now"}, `unexpected argument "now"`},
		"missing setting": {[]string{"report"}, "--provisioner-name (or PROVISIONER_NAME) is required"},
	} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, 2, runReport(tc.args[1:], &stdout, &stderr), name)
		assert.Contains(t, stderr.String(), tc.want, name)
	}
}

func TestRunVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, run([]string{"--version"}, &stdout, &stderr))
	assert.NotEmpty(t, stdout.String())
	assert.Empty(t, stderr.String())
}
