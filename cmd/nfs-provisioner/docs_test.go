package main

import (
	"context"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2/ktesting"

	"github.com/kube-nfs/nfs-provisioner/pkg/config"
	"github.com/kube-nfs/nfs-provisioner/pkg/exportfs"
	"github.com/kube-nfs/nfs-provisioner/pkg/metrics"
	"github.com/kube-nfs/nfs-provisioner/pkg/params"
	"github.com/kube-nfs/nfs-provisioner/pkg/retention"
	"github.com/kube-nfs/nfs-provisioner/pkg/usage"
)

// These tests pin the docs to the code: a row missing or extra in a table
// is named in the failure.

func readDoc(t *testing.T, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", rel))
	require.NoError(t, err)
	return string(data)
}

// section returns the text under heading up to the next heading of any level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	require.GreaterOrEqual(t, i, 0, "heading %q", heading)
	rest := doc[i+len(heading)+2:]
	if j := regexp.MustCompile(`(?m)^#`).FindStringIndex(rest); j != nil {
		rest = rest[:j[0]]
	}
	return rest
}

// tableRows returns the cells of each table row of text, header and rule
// lines left out.
func tableRows(text string) [][]string {
	var rows [][]string
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "|") || strings.HasPrefix(l, "|---") || (i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|---")) {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(l, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func spans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

func binaryFlags() (ours map[string]*flag.Flag, klogs []string) {
	var opts config.Options
	fs, _ := newFlagSet(&opts, io.Discard)
	var own config.Options
	ownFS := flag.NewFlagSet("own", flag.ContinueOnError)
	own.Bind(ownFS)
	ours = map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if ownFS.Lookup(f.Name) != nil || f.Name == "version" {
			ours[f.Name] = f
		} else {
			klogs = append(klogs, f.Name)
		}
	})
	return ours, klogs
}

func TestDocsFlagTables(t *testing.T) {
	t.Parallel()
	ours, klogs := binaryFlags()
	for doc, heading := range map[string]string{"README.md": "## Settings", "docs/design.md": "## Process settings"} {
		t.Run(doc, func(t *testing.T) {
			text := section(t, readDoc(t, doc), heading)
			seen := map[string]bool{}
			for _, row := range tableRows(text) {
				require.GreaterOrEqual(t, len(row), 3, "%s: row %v", doc, row)
				if row[0] == "—" {
					// Environment only: must be something the code reads.
					assert.Equal(t, "`GOGC`", row[1], "%s: env-only row %v", doc, row)
					continue
				}
				name := strings.TrimPrefix(strings.Trim(row[0], "`"), "--")
				f, ok := ours[name]
				if !assert.True(t, ok, "%s: row for --%s, which the binary does not have", doc, name) {
					continue
				}
				seen[name] = true
				wantEnv := "—"
				if e := config.EnvVar(name); e != "" {
					wantEnv = "`" + e + "`"
				}
				assert.Equal(t, wantEnv, row[1], "%s: env of --%s", doc, name)
				if f.DefValue != "" {
					assert.Equal(t, "`"+f.DefValue+"`", row[2], "%s: default of --%s", doc, name)
				}
			}
			for name := range ours {
				assert.True(t, seen[name], "%s: no row for --%s", doc, name)
			}
			if doc == "README.md" {
				for _, k := range klogs {
					assert.True(t, strings.Contains(text, "`--"+k+"`") || strings.Contains(text, "`-"+k+"`"), "%s: klog flag -%s not listed", doc, k)
				}
			}
		})
	}
}

func TestDocsParameterTables(t *testing.T) {
	t.Parallel()
	want := params.Keys()
	slices.Sort(want)
	for doc, heading := range map[string]string{"README.md": "## StorageClass parameters", "charts/nfs-provisioner/README.md": "### StorageClass parameters"} {
		var got []string
		for _, row := range tableRows(section(t, readDoc(t, doc), heading)) {
			if strings.HasPrefix(row[0], "PV annotation") || strings.HasPrefix(row[0], "`nfs.kube-nfs.io/") {
				continue
			}
			got = append(got, spans(row[0])...)
		}
		slices.Sort(got)
		assert.Equal(t, want, got, "%s: parameter rows vs params.Keys()", doc)
	}
}

func TestDocsMetricsTable(t *testing.T) {
	t.Parallel()
	logger, _ := ktesting.NewTestContext(t)
	m := metrics.New("default")
	m.RegisterExport("default", exportfs.New(t.TempDir(), time.Second), func(context.Context) error { return nil }, time.Second, logger)
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	var want []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "nfs_provisioner_") {
			want = append(want, f.GetName())
		}
	}
	// The leader's collectors have series only once there are volumes and
	// archives: their descriptions name them.
	descs := make(chan *prometheus.Desc, 64)
	usage.New(usage.Config{}).Collector().Describe(descs)
	retention.New(retention.Config{}).Collector().Describe(descs)
	close(descs)
	for d := range descs {
		m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())
		require.NotNil(t, m, d.String())
		want = append(want, m[1])
	}
	slices.Sort(want)
	var got []string
	for _, row := range tableRows(section(t, readDoc(t, "README.md"), "## Metrics and probes")) {
		for _, s := range spans(row[0]) {
			if name, _, _ := strings.Cut(s, "{"); strings.HasPrefix(name, "nfs_provisioner_") {
				got = append(got, name)
			}
		}
	}
	slices.Sort(got)
	assert.Equal(t, want, got, "README.md metrics rows vs the registry")
}

// goStrings returns every string literal of the non-test Go files under pkg/.
func goStrings(t *testing.T) []string {
	t.Helper()
	var out []string
	root := filepath.Join("..", "..", "pkg")
	require.NoError(t, filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					out = append(out, s)
				}
			}
			return true
		})
		return nil
	}))
	return out
}

var verb = regexp.MustCompile(`%[-+# 0-9.]*[a-zA-Z]`)

// producible reports whether piece can be a substring of what format
// expands to, each verb standing for any text.
func producible(piece, format string) bool {
	lits := verb.Split(format, -1)
	for i := range lits {
		if strings.Contains(lits[i], piece) {
			return true
		}
		for j := i + 1; j < len(lits); j++ {
			var b strings.Builder
			b.WriteString("^")
			for k := i; k <= j; k++ {
				l := lits[k]
				switch {
				case k == i:
					// A non-empty end of the first literal, and a non-empty
					// start of the last: the piece is anchored in text.
					alts := []string{}
					for n := range len(l) {
						alts = append(alts, regexp.QuoteMeta(l[n:]))
					}
					b.WriteString("(?:" + strings.Join(append(alts, "\x00"), "|") + ")")
				case k == j:
					alts := []string{}
					for n := 1; n <= len(l); n++ {
						alts = append(alts, regexp.QuoteMeta(l[:n]))
					}
					b.WriteString("(?:" + strings.Join(append(alts, "\x00"), "|") + ")")
				default:
					b.WriteString(regexp.QuoteMeta(l))
				}
				if k < j {
					b.WriteString(".*")
				}
			}
			b.WriteString("$")
			if regexp.MustCompile(b.String()).MatchString(piece) {
				return true
			}
		}
	}
	return false
}

// TestDocsTroubleshootingMessages checks that every "message contains"
// fragment (pieces between "...") is text a format string in pkg/ can
// produce.
func TestDocsTroubleshootingMessages(t *testing.T) {
	t.Parallel()
	formats := goStrings(t)
	rows := tableRows(section(t, readDoc(t, "README.md"), "## Troubleshooting"))
	require.NotEmpty(t, rows)
	for _, row := range rows {
		for _, frag := range spans(row[0]) {
			for _, piece := range strings.Split(frag, "...") {
				piece = strings.TrimSpace(piece)
				// A doc placeholder such as "x" stands for a quoted value.
				piece = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(piece, `%q`)
				found := false
				// Wrapped errors join at ": " (fmt.Errorf("...: %w")).
				for _, part := range regexp.MustCompile(`%q|: `).Split(piece, -1) {
					part = strings.TrimSpace(part)
					if part == "" {
						continue
					}
					found = slices.ContainsFunc(formats, func(f string) bool { return producible(part, f) })
					if !found {
						break
					}
				}
				assert.True(t, found, "README Troubleshooting: no message in pkg/ produces %q (of %q)", piece, frag)
			}
		}
	}
}

// TestMakeHelpListsEveryTarget checks that `make help` shows every target
// the Makefile declares .PHONY.
func TestMakeHelpListsEveryTarget(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	out, err := exec.Command("make", "-s", "-C", filepath.Join("..", ".."), "help").CombinedOutput()
	require.NoError(t, err, "%s", out)
	listed := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(l, "  ") {
			listed[f[0]] = true
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\.PHONY: (\S+)`).FindAllStringSubmatch(readDoc(t, "Makefile"), -1) {
		assert.True(t, listed[m[1]], "make help does not list %q", m[1])
	}
}

// TestDocsFolderTables: every package folder is in the maps of the code of
// README.md and docs/design.md, and every folder they name exists.
func TestDocsFolderTables(t *testing.T) {
	t.Parallel()
	for doc, heading := range map[string]string{"README.md": "## Development", "docs/design.md": "## Layout"} {
		t.Run(doc, func(t *testing.T) { checkFolderTable(t, doc, heading) })
	}
}

func checkFolderTable(t *testing.T, doc, heading string) {
	documented := map[string]bool{}
	for _, row := range tableRows(section(t, readDoc(t, doc), heading)) {
		for _, s := range spans(row[0]) {
			documented[strings.TrimSuffix(s, "/")] = true
		}
	}
	var folders []string
	for _, parent := range []string{"cmd", "pkg", "test"} {
		entries, err := os.ReadDir(filepath.Join("..", "..", parent))
		require.NoError(t, err)
		for _, en := range entries {
			if en.IsDir() {
				folders = append(folders, parent+"/"+en.Name())
			}
		}
	}
	for _, f := range folders {
		assert.True(t, documented[f], "%s is missing from %s's %s table", f, doc, heading)
	}
	for d := range documented {
		_, err := os.Stat(filepath.Join("..", "..", d))
		assert.NoError(t, err, "%s's %s table names %s", doc, heading, d)
	}
}
