package worker

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

func TestJSONLogsUseTheSharedSchema(t *testing.T) {
	var out bytes.Buffer
	logger, err := newLogger("json", slog.LevelDebug, &out)
	if err != nil {
		t.Fatal(err)
	}
	logger.Warn("task lost", "task_id", 7, "run_id", 9, "worker", "w1")
	logger.Debug("debug line")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", out.String())
	}
	var record map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &record); err != nil {
		t.Fatal(err)
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	if s, _ := record["time"].(string); !stamp.MatchString(s) {
		t.Errorf("time %q is not RFC 3339 UTC with milliseconds", record["time"])
	}
	want := map[string]any{"level": "WARNING", "logger": LoggerName, "message": "task lost",
		"task_id": 7.0, "run_id": 9.0, "worker": "w1"}
	for key, value := range want {
		if record[key] != value {
			t.Errorf("%s = %v, want %v (%s)", key, record[key], value, lines[0])
		}
	}
	for _, old := range []string{"msg", "level\":\"WARN\""} {
		if strings.Contains(lines[0], "\""+old+"\"") {
			t.Errorf("slog key %s left in %s", old, lines[0])
		}
	}
	if _, err := newLogger("xml", slog.LevelInfo, io.Discard); err == nil {
		t.Error("xml format accepted")
	}
}

func TestFlagsFromTheEnvironment(t *testing.T) {
	env := map[string]string{
		"TASKGRID_COORDINATOR": "c1:1,c2:2", "TASKGRID_CONCURRENCY": "3", "TASKGRID_GROUP": "a, b",
		"TASKGRID_LOG_FORMAT": "json", "TASKGRID_TLS": "true", "TASKGRID_NAME": "from-env",
	}
	getenv := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	o, err := parseEnv([]string{"--name", "from-flag"}, io.Discard, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.coordinator != "c1:1,c2:2" || o.concurrency != 3 || o.logFormat != "json" || !o.useTLS {
		t.Errorf("environment not applied: %+v", o)
	}
	if o.name != "from-flag" {
		t.Errorf("the command line must win: name %q", o.name)
	}
	if strings.Join(o.groups, ",") != "a,b" {
		t.Errorf("groups %v", o.groups)
	}
	o, err = parseEnv([]string{"--group", "x"}, io.Discard, getenv)
	if err != nil || strings.Join(o.groups, ",") != "x" {
		t.Errorf("a --group replaces TASKGRID_GROUP: %v %v", o, err)
	}
	env["TASKGRID_HEARTBEAT"] = "abc"
	if _, err = parseEnv(nil, io.Discard, getenv); err == nil || !strings.Contains(err.Error(), "TASKGRID_HEARTBEAT") {
		t.Errorf("bad TASKGRID_HEARTBEAT: %v", err)
	}
	if EnvName("max-empty-runs") != "TASKGRID_MAX_EMPTY_RUNS" {
		t.Error(EnvName("max-empty-runs"))
	}
}
