package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// TestValuesTable: the chart README's Values table names every key of
// values.yaml (a map either as a whole or key by key), and nothing else.
func TestValuesTable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(ChartDir(t), "README.md"))
	require.NoError(t, err)
	text := string(readme)
	start := strings.Index(text, "\n## Values\n")
	require.GreaterOrEqual(t, start, 0)
	text = text[start+1:]
	if end := regexp.MustCompile(`(?m)^#`).FindAllStringIndex(text, 2); len(end) == 2 {
		text = text[:end[1][0]]
	}
	documented := map[string]bool{}
	required := map[string]bool{} // no default: absent from values.yaml
	span := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		first := cells[0]
		var parent string
		for _, m := range span.FindAllStringSubmatch(first, -1) {
			key := m[1]
			if strings.HasPrefix(key, ".") {
				key = parent + key // `a.b`, `.c`: a.c
			} else if i := strings.LastIndex(key, "."); i >= 0 {
				parent = key[:i]
			}
			documented[key] = true
			required[key] = len(cells) > 1 && strings.Contains(cells[1], "(required)")
		}
	}

	raw, err := os.ReadFile(filepath.Join(ChartDir(t), "values.yaml"))
	require.NoError(t, err)
	var values map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &values))

	var missing []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + k
			if documented[key] {
				continue
			}
			sub, isMap := v.(map[string]any)
			split := false
			for d := range documented {
				split = split || strings.HasPrefix(d, key+".")
			}
			if isMap && split {
				walk(key+".", sub)
				continue
			}
			missing = append(missing, key)
		}
	}
	walk("", values)
	assert.Empty(t, missing, "values.yaml keys without a row in the chart README's Values table")

	for key := range documented {
		if required[key] {
			continue
		}
		var cur any = values
		for _, part := range strings.Split(key, ".") {
			m, ok := cur.(map[string]any)
			if !assert.True(t, ok, "README documents %s, below a value that is not a map", key) {
				break
			}
			next, ok := m[part]
			if !assert.True(t, ok, "README documents %s, which values.yaml does not have", key) {
				break
			}
			cur = next
		}
	}
}
