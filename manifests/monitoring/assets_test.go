package monitoring

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	rulePath       = "tessera-gpu-alerts.yaml"
	dashboardPath  = "tessera-gpu-dashboard.json"
	podMonitorPath = "gpu-agent-podmonitor.yaml"
	// gpu-scheduler's PodMonitor and the ServiceAccount, token Secret and RBAC
	// it scrapes with; manifests/monitoring_apply_test.go applies and checks them.
	schedulerPodMonitorPath = "gpu-scheduler-podmonitor.yaml"
	schedulerReaderPath     = "gpu-scheduler-metrics-reader.yaml"
	alertTestPath           = "testdata/alerts-test.yaml"
	dcgmQueryPath           = "testdata/dcgm-exporter-dashboard-queries.json"
)

// requireTool returns the path of a tool from the Debian prometheus package,
// skipping the test when it is absent; with TESSERA_REQUIRE_TOOLS=1 (CI) its
// absence fails the test instead.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s not found and TESSERA_REQUIRE_TOOLS=1: %v", name, err)
	}
	t.Skipf("%s not installed (Debian package prometheus): %v", name, err)
	return ""
}

// prometheusRule is the part of a monitoring.coreos.com/v1 PrometheusRule
// the rules use; decoding is strict, so a misspelt field fails.
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Spec struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func loadRule(t *testing.T) prometheusRule {
	t.Helper()
	data, err := os.ReadFile(rulePath)
	if err != nil {
		t.Fatal(err)
	}
	var r prometheusRule
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		t.Fatalf("%s: %v", rulePath, err)
	}
	if r.APIVersion != "monitoring.coreos.com/v1" || r.Kind != "PrometheusRule" {
		t.Fatalf("%s: %s %s, want monitoring.coreos.com/v1 PrometheusRule", rulePath, r.APIVersion, r.Kind)
	}
	if r.Metadata.Name == "" || r.Metadata.Namespace == "" {
		t.Fatalf("%s: metadata name and namespace are required", rulePath)
	}
	if len(r.Spec.Groups) == 0 {
		t.Fatalf("%s: no rule groups", rulePath)
	}
	return r
}

// rulesFile is the PrometheusRule's spec as a Prometheus rule file.
func rulesFile(t *testing.T, r prometheusRule) []byte {
	t.Helper()
	data, err := yaml.Marshal(map[string]any{"groups": r.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// alerts returns every alerting rule of r.
func alerts(r prometheusRule) []rule {
	var out []rule
	for _, g := range r.Spec.Groups {
		for _, ru := range g.Rules {
			if ru.Alert != "" {
				out = append(out, ru)
			}
		}
	}
	return out
}

// dashboard is the part of a Grafana dashboard JSON the tests check.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	GridPos     gridPos     `json:"gridPos"`
	Datasource  *datasource `json:"datasource"`
	Targets     []target    `json:"targets"`
	Panels      []panel     `json:"panels"` // of a collapsed row
}

type gridPos struct{ H, W, X, Y int }

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID        string      `json:"refId"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	Datasource   *datasource `json:"datasource"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Definition string          `json:"definition"`
	Query      json.RawMessage `json:"query"`
	AllValue   string          `json:"allValue"`
	Datasource *datasource     `json:"datasource"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// allPanels flattens rows, collapsed or not.
func allPanels(d dashboard) []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// query is one PromQL expression of a dashboard, named for messages.
type query struct {
	Name string
	Expr string
}

func dashboardQueries(d dashboard) []query {
	var out []query
	for _, p := range allPanels(d) {
		for _, tg := range p.Targets {
			out = append(out, query{Name: p.Title + "/" + tg.RefID, Expr: tg.Expr})
		}
	}
	return out
}

// labelValuesQuery parses Grafana's label_values(metric{...}, label) and
// label_values(label) variable queries.
var labelValuesQuery = regexp.MustCompile(`^label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)

// grafanaBuiltins are the interval variables Grafana fills in, with the
// values the tests use for a Prometheus scraping every second.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "1h",
}

var varRef = regexp.MustCompile(`\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))`)

// referencedVariables lists the $variables an expression uses.
func referencedVariables(expr string) []string {
	var out []string
	for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
		name := m[1] + m[2]
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// substitute replaces Grafana's interval builtins with fixed durations and
// every other variable with the regex .*, as "All" does with allValue .*.
func substitute(expr string) string {
	return varRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := varRef.FindStringSubmatch(ref)
		name := m[1] + m[2]
		if v, ok := grafanaBuiltins[name]; ok {
			return v
		}
		return ".*"
	})
}

// boolify turns every comparison operator of a PromQL expression into its
// bool form (a > 80 becomes a > bool 80), outside label matchers, strings
// and range selectors. The result returns a 0/1 series for every series the
// comparison sees, whatever the thresholds, so evaluating it proves that
// every selector, label, join and function of an alert matches the
// exporter's output even where the simulated values do not cross them.
func boolify(expr string) string {
	var b strings.Builder
	depthBrace, depthBracket := 0, 0
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch c {
		case '"', '\'', '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			b.WriteString(expr[i:min(j+1, len(expr))])
			i = j
			continue
		case '#':
			j := strings.IndexByte(expr[i:], '\n')
			if j < 0 {
				j = len(expr) - i
			}
			b.WriteString(expr[i : i+j])
			i += j - 1
			continue
		case '{':
			depthBrace++
		case '}':
			depthBrace--
		case '[':
			depthBracket++
		case ']':
			depthBracket--
		}
		if depthBrace > 0 || depthBracket > 0 {
			b.WriteByte(c)
			continue
		}
		op := ""
		switch {
		case strings.HasPrefix(expr[i:], "=="), strings.HasPrefix(expr[i:], "!="),
			strings.HasPrefix(expr[i:], ">="), strings.HasPrefix(expr[i:], "<="):
			op = expr[i : i+2]
		case c == '>' || c == '<':
			op = expr[i : i+1]
		}
		if op == "" {
			b.WriteByte(c)
			continue
		}
		b.WriteString(op)
		i += len(op) - 1
		rest := strings.TrimLeft(expr[i+1:], " \t\n")
		if !strings.HasPrefix(rest, "bool ") && !strings.HasPrefix(rest, "bool\n") {
			b.WriteString(" bool")
		}
	}
	return b.String()
}
