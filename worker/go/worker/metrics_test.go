package worker

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestMetricsListenFlagAndEnvironment(t *testing.T) {
	o, err := parse([]string{"--metrics-listen", "127.0.0.1:9465"}, io.Discard)
	if err != nil || o.metricsListen != "127.0.0.1:9465" {
		t.Fatalf("--metrics-listen: %+v %v", o, err)
	}
	env := map[string]string{EnvName("metrics-listen"): "0.0.0.0:0"}
	getenv := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	if EnvName("metrics-listen") != "TASKGRID_METRICS_LISTEN" {
		t.Fatal(EnvName("metrics-listen"))
	}
	if o, err = parseEnv(nil, io.Discard, getenv); err != nil || o.metricsListen != "0.0.0.0:0" {
		t.Errorf("TASKGRID_METRICS_LISTEN: %+v %v", o, err)
	}
	if o, err = parseEnv([]string{"--metrics-listen", ":1"}, io.Discard, getenv); err != nil || o.metricsListen != ":1" {
		t.Errorf("the command line must win: %+v %v", o, err)
	}
	if o, err = parse(nil, io.Discard); err != nil || o.metricsListen != "" {
		t.Errorf("metrics are off by default: %+v %v", o, err)
	}
}

func TestRunRefusesABadMetricsAddress(t *testing.T) {
	var stderr bytes.Buffer
	code := Run([]string{"--metrics-listen", "no-port", "--allow-commands"}, &stderr)
	if code != ExitUsage || !strings.Contains(stderr.String(), "--metrics-listen") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
}
