package worker

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// LoggerName is the `logger` of every record of the Go worker.
const LoggerName = "taskgrid.worker.go"

// EnvPrefix starts the environment variable of every flag: --max-empty-runs
// is TASKGRID_MAX_EMPTY_RUNS, --coordinator TASKGRID_COORDINATOR.
const EnvPrefix = "TASKGRID_"

// EnvName is the environment variable of flag `name`.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyEnv sets every flag of fs that the command line left alone from its
// environment variable, if set (so: command line > environment > default).
// A repeatable flag takes a comma-separated list. origin[flag] is set to the
// prefix of an error about a value taken from there: `TASKGRID_X="value": `.
func applyEnv(fs *flag.FlagSet, getenv func(string) (string, bool), origin map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := EnvName(f.Name)
		value, ok := getenv(name)
		if !ok {
			return
		}
		origin[f.Name] = fmt.Sprintf("%s=%q: ", name, value)
		values := []string{value}
		if _, isList := f.Value.(*listFlag); isList {
			values = nil
			for _, item := range strings.Split(value, ",") {
				if item = strings.TrimSpace(item); item != "" {
					values = append(values, item)
				}
			}
		}
		for _, v := range values {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("%s=%q: %v", name, value, setErr)
				return
			}
		}
	})
	return err
}

// newLogger writes records at `level` or above to w: "text" is slog's text
// format; "json" is one object per line with the keys of the Python side
// (taskgrid/logs.py): time (RFC 3339 UTC, milliseconds), level (DEBUG, INFO,
// WARNING, ERROR), logger, message, then the record's attributes.
func newLogger(format string, level slog.Level, w io.Writer) (*slog.Logger, error) {
	options := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, options)), nil
	case "json":
		options.ReplaceAttr = jsonAttr
		return slog.New(slog.NewJSONHandler(w, options)).With("logger", LoggerName), nil
	}
	return nil, fmt.Errorf("--log-format: unknown format %q (text or json)", format)
}

// jsonAttr renames slog's built-in keys to the shared schema.
func jsonAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		if t, ok := a.Value.Any().(time.Time); ok {
			return slog.String("time", t.UTC().Format("2006-01-02T15:04:05.000Z"))
		}
	case slog.LevelKey:
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String("level", levelName(l))
		}
	case slog.MessageKey:
		return slog.Attr{Key: "message", Value: a.Value}
	}
	return a
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	}
	return "ERROR"
}

func lookupEnv(name string) (string, bool) { return os.LookupEnv(name) }
