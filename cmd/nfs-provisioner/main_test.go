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
		"subcommand":              {args: []string{"report"}, want: `unexpected argument "report"`},
		"flags after an argument": {args: []string{"--nfs-server=x", "report", "--workers=2"}, want: `unexpected argument "report"`},
		"stray word":              {args: []string{"--version", "now"}, want: `unexpected argument "now"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			assert.Equal(t, 2, run(tc.args, &stdout, &stderr))
			assert.Contains(t, stderr.String(), tc.want)
			assert.Contains(t, stderr.String(), "this command takes flags only")
			assert.Empty(t, stdout.String())
		})
	}
}

func TestRunVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, run([]string{"--version"}, &stdout, &stderr))
	assert.NotEmpty(t, stdout.String())
	assert.Empty(t, stderr.String())
}
