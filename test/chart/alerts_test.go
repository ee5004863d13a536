package chart

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// promtool builds (once, cached in .cache/bin) and returns promtool.
var promtool = sync.OnceValues(func() (string, error) {
	root, err := findRoot()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "test", "scripts", "install-promtool.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("install-promtool.sh: %w\n%s", err, stderr.String())
	}
	return strings.TrimSpace(lastLine(stdout.String())), nil
})

func findRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	return strings.TrimSpace(string(out)), err
}

// TestAlertRules renders the chart's PrometheusRule, checks it with promtool
// and runs testdata/alerts_test.yaml against it: each alert fires where it
// should and stays quiet where it shouldn't. Every alert must have a case.
func TestAlertRules(t *testing.T) {
	Helm(t) // skips with -short
	// Release "nfs-provisioner": the series in the tests have job
	// "nfs-provisioner", the default selector's job for that release.
	objs, err := Render(t, RenderOptions{Release: "nfs-provisioner", Set: []string{"nfs.server=nfs.example.com", "metrics.prometheusRule.enabled=true"}})
	require.NoError(t, err)
	rule := One(t, objs, "PrometheusRule")
	spec, ok := rule.Object["spec"]
	require.True(t, ok)
	rules, err := yaml.Marshal(spec)
	require.NoError(t, err)

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644))
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644))

	bin, err := promtool()
	require.NoError(t, err)
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	}

	var defined []string
	for _, m := range regexp.MustCompile(`(?m)^\s+- alert: (\S+)$`).FindAllStringSubmatch(string(rules), -1) {
		defined = append(defined, m[1])
	}
	var tested []string
	for _, m := range regexp.MustCompile(`(?m)^\s+alertname: (\S+)$`).FindAllStringSubmatch(string(tests), -1) {
		if !slices.Contains(tested, m[1]) {
			tested = append(tested, m[1])
		}
	}
	require.NotEmpty(t, defined)
	assert.ElementsMatch(t, defined, tested, "alerts defined vs alerts with a promtool test")

	// Each alert has a case where it fires and one where it stays quiet.
	var suite struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(tests, &suite))
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range suite.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range defined {
		assert.True(t, fires[name], "%s has no case where it fires", name)
		assert.True(t, quiet[name], "%s has no case where it stays quiet", name)
	}
}

// TestMonitoringObjects: the dashboard is valid JSON naming only our
// metrics, and every object is off by default and takes its labels.
func TestMonitoringObjects(t *testing.T) {
	Helm(t)
	for _, kind := range []string{"PrometheusRule", "ConfigMap"} {
		assert.Empty(t, OfKind(RenderChart(t, ""), kind), "%s without being asked", kind)
	}
	objs := RenderChart(t, "", "metrics.dashboard.enabled=true", "metrics.prometheusRule.enabled=true",
		"metrics.prometheusRule.labels.release=kps", "metrics.prometheusRule.ruleLabels.team=storage",
		"metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kps")
	cm := One(t, objs, "ConfigMap")
	assert.Equal(t, "1", cm.GetLabels()["grafana_dashboard"])
	data, _, err := unstructured.NestedString(cm.Object, "data", "nfs-provisioner.json")
	require.NoError(t, err)
	known := knownMetrics(t)
	var dash map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(data), &dash), "dashboard JSON")
	assert.Equal(t, "NFS provisioner", dash["title"])
	for _, m := range regexp.MustCompile(`\b(nfs_provisioner_[a-z_]+)`).FindAllStringSubmatch(data, -1) {
		assert.Contains(t, known, strings.TrimSuffix(m[1], "_bucket"), "dashboard metric")
	}
	pr := One(t, objs, "PrometheusRule")
	assert.Equal(t, "kps", pr.GetLabels()["release"])
	rules, err := yaml.Marshal(pr.Object["spec"])
	require.NoError(t, err)
	assert.Equal(t, 8, strings.Count(string(rules), "team: storage"), "ruleLabels on every alert")
	for _, m := range regexp.MustCompile(`\b(nfs_provisioner_[a-z_]+)`).FindAllStringSubmatch(string(rules), -1) {
		assert.Contains(t, known, m[1], "alert metric")
	}
	sm := One(t, objs, "ServiceMonitor")
	assert.Equal(t, "kps", sm.GetLabels()["release"])
	endpoints, _ := sm.Object["spec"].(map[string]any)["endpoints"].([]any)
	require.Len(t, endpoints, 1)
	assert.Equal(t, true, endpoints[0].(map[string]any)["honorLabels"], "the claims' namespace label survives the scrape")
}

// knownMetrics are the series the binary serves (README's metrics table,
// pinned against the registry by cmd/nfs-provisioner's docs test).
func knownMetrics(t *testing.T) []string {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	var out []string
	for _, m := range regexp.MustCompile("`(nfs_provisioner_[a-z_]+)").FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	return out
}

// TestDashboardPanels: the panels about exports show one series per export,
// named in the legend, and honour the export variable; no two panels
// overlap.
func TestDashboardPanels(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(ChartDir(t), "files", "dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			GridPos struct {
				X, Y, W, H int
			} `json:"gridPos"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &dash))
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
	}
	assert.Contains(t, vars, "export")

	ids := map[int]bool{}
	exportPanels := 0
	for i, p := range dash.Panels {
		assert.False(t, ids[p.ID], "panel id %d twice", p.ID)
		ids[p.ID] = true
		for _, q := range dash.Panels[:i] {
			overlap := p.GridPos.X < q.GridPos.X+q.GridPos.W && q.GridPos.X < p.GridPos.X+p.GridPos.W &&
				p.GridPos.Y < q.GridPos.Y+q.GridPos.H && q.GridPos.Y < p.GridPos.Y+p.GridPos.H
			assert.False(t, overlap, "panels %q and %q overlap", p.Title, q.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "nfs_provisioner_export_") {
				continue
			}
			exportPanels++
			assert.Contains(t, tg.Expr, "by (export)", "panel %q: one series per export", p.Title)
			assert.Contains(t, tg.LegendFormat, "{{export}}", "panel %q: the export in the legend", p.Title)
			for _, m := range regexp.MustCompile(`nfs_provisioner_export_[a-z_]+\{[^}]*\}`).FindAllString(tg.Expr, -1) {
				assert.Contains(t, m, `export=~"$export"`, "panel %q", p.Title)
			}
		}
	}
	assert.GreaterOrEqual(t, exportPanels, 6)
}
