package monitoring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshingest/meshingest/internal/testkit"
	"github.com/meshingest/meshingest/receiver"
	"github.com/meshingest/meshingest/writer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.CleanupBinary()
	os.Exit(code)
}

// stack is a receiver and a writer process with their metrics listeners.
type stack struct {
	config           string
	receiver, writer string // base URLs
}

func startStack(t *testing.T) *stack {
	t.Helper()
	b := testkit.StartMosquitto(t, testkit.MosquittoOptions{})
	dir := t.TempDir()
	s := &stack{config: filepath.Join(dir, "config.json"),
		receiver: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), writer: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))}
	cfg, _ := json.Marshal(map[string]any{
		"dbPath":      filepath.Join(dir, "meshcore.db"),
		"mqttSources": []map[string]any{{"name": "local", "broker": b.MQTTURL()}},
		"receiver":    map[string]any{"metricsListen": s.receiver, "statsFile": filepath.Join(dir, "receiver-stats.json")},
		"writer":      map[string]any{"metricsListen": s.writer, "statsFile": filepath.Join(dir, "writer-stats.json")},
	})
	if err := os.WriteFile(s.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"receive", "write"} {
		c := exec.Command(testkit.BinaryPath(t), cmd, "--config", s.config)
		log, _ := os.Create(filepath.Join(dir, cmd+".log"))
		c.Stdout, c.Stderr = log, log
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Process.Signal(syscall.SIGTERM)
			c.Wait()
			log.Close()
			if t.Failed() {
				out, _ := os.ReadFile(log.Name())
				t.Logf("%s log:\n%s", cmd, out)
			}
		})
	}
	s.receiver, s.writer = "http://"+s.receiver, "http://"+s.writer
	for _, base := range []string{s.receiver, s.writer} {
		testkit.WaitFor(t, time.Minute, base+"/-/ready", func() bool { code, _ := get(base + "/-/ready"); return code == 200 })
	}
	return s
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// sampleNames are the metric names of the samples in a scrape (histogram
// series included: _bucket, _sum, _count).
func sampleNames(scrape string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(scrape, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// The dashboard's and the rules' expressions.
func expressions(t *testing.T) (dashboard, rules []string) {
	t.Helper()
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			dashboard = append(dashboard, tg.Expr)
		}
	}
	data, err = os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			rules = append(rules, r.Expr)
		}
	}
	if len(dashboard) < 10 || len(rules) < 10 {
		t.Fatalf("%d dashboard and %d rule expressions read", len(dashboard), len(rules))
	}
	return dashboard, rules
}

// metricRef is a name in an expression that is a meshingest metric.
var metricRef = regexp.MustCompile(`\bmeshingest_[a-z0-9_]+\b`)

// Every metric the dashboard and the alert rules name is one a running
// receiver or writer exports; the processes' /metrics pass promtool's
// lint and the rules promtool's check; /-/healthy and /-/ready answer;
// `meshingest status` says both are well.
func TestMonitoring_AgainstRunningProcesses(t *testing.T) {
	s := startStack(t)
	scrapes := map[string]string{}
	exported := map[string]bool{}
	for name, base := range map[string]string{"receiver": s.receiver, "writer": s.writer} {
		code, body := get(base + "/metrics")
		if code != 200 {
			t.Fatalf("%s /metrics: %d", name, code)
		}
		scrapes[name] = body
		for n := range sampleNames(body) {
			exported[n] = true
		}
		if code, body := get(base + "/-/healthy"); code != 200 || body != "OK\n" {
			t.Errorf("%s /-/healthy: %d %q", name, code, body)
		}
		if !strings.Contains(body, `meshingest_build_info{commit="`) {
			t.Errorf("%s exports no meshingest_build_info", name)
		}
	}

	// Every drop reason has its counter from the start.
	for _, r := range receiver.DropReasons() {
		if want := `meshingest_receiver_dropped_messages_total{reason="` + r + `",source="local"} 0`; !strings.Contains(scrapes["receiver"], want) {
			t.Errorf("receiver lacks %s", want)
		}
	}
	for _, r := range writer.DropReasons() {
		if want := `meshingest_writer_drops_total{reason="` + r + `"} 0`; !strings.Contains(scrapes["writer"], want) {
			t.Errorf("writer lacks %s", want)
		}
	}

	dashboard, rules := expressions(t)
	for what, exprs := range map[string][]string{"grafana-dashboard.json": dashboard, "alerts.yml": rules} {
		for _, e := range exprs {
			refs := metricRef.FindAllString(e, -1)
			if len(refs) == 0 && !strings.HasPrefix(e, "up{") {
				t.Errorf("%s: %q names no meshingest metric", what, e)
			}
			for _, m := range refs {
				if !exported[m] {
					t.Errorf("%s: %q names %s, which neither process exports", what, e, m)
				}
			}
		}
	}

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool is not installed (Debian: apt-get install prometheus); the metrics and the rules were not linted")
		}
		names := make([]string, 0, len(scrapes))
		for n := range scrapes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(scrapes[n])
			if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("promtool check metrics on the %s's /metrics: %v\n%s", n, err, out)
			}
		}
		if out, err := exec.Command(promtool, "check", "rules", "alerts.yml").CombinedOutput(); err != nil {
			t.Errorf("promtool check rules alerts.yml: %v\n%s", err, out)
		}
	})

	t.Run("status", func(t *testing.T) {
		var out []byte
		defer func() {
			if t.Failed() {
				t.Logf("meshingest status:\n%s", out)
			}
		}()
		testkit.WaitFor(t, 30*time.Second, "meshingest status exit 0", func() bool {
			var err error
			out, err = exec.Command(testkit.BinaryPath(t), "status", "--config", s.config).CombinedOutput()
			return err == nil
		})
		if !strings.Contains(string(out), "receiver: ok:") || !strings.Contains(string(out), "writer: ok:") {
			t.Errorf("meshingest status:\n%s", out)
		}
	})
}
