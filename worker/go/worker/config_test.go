package worker

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes a TOML file into a temporary directory and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "taskgrid.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func envOf(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) { v, ok := env[name]; return v, ok }
}

func TestConfigPrecedence(t *testing.T) {
	path := writeConfig(t, `
[coordinator]
listen = "0.0.0.0:1"   # other tables are ignored
[worker]
name = "from-file"
concurrency = 4
heartbeat = 1.5
max_empty_runs = 7
kill-grace = 2
tls = true
log-format = "json"
`)
	for _, c := range []struct {
		about string
		args  []string
		env   map[string]string
		want  string
	}{
		{"default", nil, nil, ""},
		{"file", []string{"--config", path}, nil, "from-file"},
		{"file by TASKGRID_CONFIG", nil, map[string]string{EnvConfig: path}, "from-file"},
		{"env over file", []string{"--config", path}, map[string]string{"TASKGRID_NAME": "from-env"}, "from-env"},
		{"flag over file", []string{"--config", path, "--name", "from-flag"}, nil, "from-flag"},
		{"flag over env over file", []string{"--config=" + path, "--name", "from-flag"},
			map[string]string{"TASKGRID_NAME": "from-env"}, "from-flag"},
		{"flag over env", []string{"--name", "from-flag"}, map[string]string{"TASKGRID_NAME": "from-env"}, "from-flag"},
	} {
		o, err := parseEnv(c.args, io.Discard, envOf(c.env))
		if err != nil {
			t.Fatalf("%s: %v", c.about, err)
		}
		if o.name != c.want {
			t.Errorf("%s: name %q, want %q", c.about, o.name, c.want)
		}
	}
	o, err := parseEnv([]string{"--config", path, "--concurrency", "2"}, io.Discard,
		envOf(map[string]string{"TASKGRID_HEARTBEAT": "9", "TASKGRID_TLS": "false"}))
	if err != nil {
		t.Fatal(err)
	}
	if o.concurrency != 2 || o.heartbeat != 9 || o.useTLS || o.maxEmptyRuns != 7 || o.killGrace != 2 ||
		o.logFormat != "json" || o.name != "from-file" {
		t.Errorf("per-flag precedence: %+v", o)
	}
}

func TestConfigFlagBeatsTASKGRID_CONFIG(t *testing.T) {
	a := writeConfig(t, "[worker]\nname = \"a\"\n")
	b := writeConfig(t, "[worker]\nname = \"b\"\n")
	o, err := parseEnv([]string{"--config", a}, io.Discard, envOf(map[string]string{EnvConfig: b}))
	if err != nil || o.name != "a" {
		t.Fatalf("--config must win over %s: %+v %v", EnvConfig, o, err)
	}
	o, err = parseEnv(nil, io.Discard, envOf(map[string]string{EnvConfig: a}))
	if err != nil || o.name != "a" {
		t.Fatalf("%s: %+v %v", EnvConfig, o, err)
	}
}

func TestConfigLists(t *testing.T) {
	path := writeConfig(t, `
[worker]
group = ["main", "reports"]
allow-commands = true
allow_executable = "/bin/true"
`)
	o, err := parseEnv([]string{"--config", path}, io.Discard, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.groups, ",") != "main,reports" || strings.Join(o.executables, ",") != "/bin/true" {
		t.Errorf("lists from the file: %v %v", o.groups, o.executables)
	}
	o, err = parseEnv([]string{"--config", path}, io.Discard, envOf(map[string]string{"TASKGRID_GROUP": "x, y"}))
	if err != nil || strings.Join(o.groups, ",") != "x,y" {
		t.Errorf("TASKGRID_GROUP replaces the file's list: %v %v", o, err)
	}
	o, err = parseEnv([]string{"--config", path, "--group", "z"}, io.Discard,
		envOf(map[string]string{"TASKGRID_GROUP": "x, y"}))
	if err != nil || strings.Join(o.groups, ",") != "z" {
		t.Errorf("--group replaces the environment's and the file's list: %v %v", o, err)
	}
	path = writeConfig(t, "[worker]\ngroup = []\n")
	if o, err = parseEnv([]string{"--config", path}, io.Discard, envOf(nil)); err != nil || len(o.groups) != 0 {
		t.Errorf("an empty list: %v %v", o, err)
	}
	path = writeConfig(t, "[worker]\ngroup = \"a\"\ngroup_x = 1\n")
	if _, err = parseEnv([]string{"--config", path}, io.Discard, envOf(nil)); err == nil ||
		!strings.Contains(err.Error(), `"group_x"`) {
		t.Errorf("unknown key after a list: %v", err)
	}
	path = writeConfig(t, "[worker]\nmax-empty-runs = 1\nmax_empty_runs = 2\n")
	if o, err = parseEnv([]string{"--config", path}, io.Discard, envOf(nil)); err != nil || o.maxEmptyRuns != 2 {
		t.Errorf("the later of two spellings wins: %v %v", o, err)
	}
}

func TestConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	for _, c := range []struct {
		about, text string
		env         map[string]string
		want        []string // in the one error line
	}{
		{"unknown key", "[worker]\nname = \"w\"\ntasks = \"myapp.tasks\"\n", nil,
			[]string{`[worker] has an unknown key "tasks"`}},
		{"config is no key", "[worker]\nconfig = \"other.toml\"\n", nil, []string{`unknown key "config"`}},
		{"malformed", "[worker]\nname = \"unterminated\nconcurrency = 2\n", nil, []string{"not valid TOML", "line"}},
		{"not a table", "worker = 3\n", nil, []string{"worker must be a table ([worker])"}},
		{"bad float", "[worker]\nheartbeat = \"abc\"\n", nil, []string{`heartbeat = "abc": `, "parse error"}},
		{"float for an int", "[worker]\nconcurrency = 1.5\n", nil, []string{"concurrency = 1.5: "}},
		{"integral float for an int", "[worker]\nmax_empty_runs = 3.0\n", nil, []string{"max_empty_runs = 3.0: "}},
		{"string for a bool", "[worker]\ntls = \"yes\"\n", nil, []string{`tls = "yes": expected true or false`}},
		{"table for a string", "[worker]\nname = {a = 1}\n", nil, []string{"name = ", "expected a string or a number"}},
		{"bool in a list", "[worker]\ngroup = [\"a\", true]\n", nil,
			[]string{`group = ["a", true]: expected a string or a number`}},
		{"bad value of a flag set by the environment", "[worker]\nconcurrency = \"x\"\n",
			map[string]string{"TASKGRID_CONCURRENCY": "3"}, []string{`concurrency = "x": `}},
		{"out of range", "[worker]\nconcurrency = 0\n", nil, []string{"concurrency = 0: --concurrency must be at least 1"}},
		{"unknown level", "[worker]\nlog_level = \"loud\"\n", nil, []string{`log_level = "loud": --log-level: unknown level`}},
	} {
		path := writeConfig(t, c.text)
		_, err := parseEnv([]string{"--config", path}, io.Discard, envOf(c.env))
		if err == nil {
			t.Errorf("%s: accepted", c.about)
			continue
		}
		msg := err.Error()
		for _, want := range append([]string{"config file " + path + ": "}, c.want...) {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q does not contain %q", c.about, msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: not one line: %q", c.about, msg)
		}
	}
	_, err := parseEnv(nil, io.Discard, envOf(map[string]string{EnvConfig: missing}))
	if err == nil || !strings.Contains(err.Error(), "config file "+missing+": cannot read: no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestRunRejectsABadConfigFileWithOneLine(t *testing.T) {
	for _, text := range []string{"[worker]\nbogus = 1\n", "[worker\n", "[worker]\nkill-grace = \"soon\"\n"} {
		path := writeConfig(t, text)
		var stderr bytes.Buffer
		if code := Run([]string{"--config", path}, &stderr); code != ExitUsage {
			t.Errorf("%q: exit code %d, want %d", text, code, ExitUsage)
		}
		out := stderr.String()
		if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "taskgrid-worker: config file "+path+": ") {
			t.Errorf("%q: want one line naming the file, got %q", text, out)
		}
	}
}
