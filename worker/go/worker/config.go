package worker

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// ConfigFlag names the TOML file of settings; EnvConfig is its environment
// variable (EnvName(ConfigFlag)), as for the Python coordinator and worker.
const (
	ConfigFlag = "config"
	EnvConfig  = "TASKGRID_CONFIG"
	// ConfigTable is the table of the file the worker reads; others are ignored.
	ConfigTable = "worker"
)

// applyConfig sets every flag of fs that neither the command line nor the
// environment set (fs.Visit) from the [worker] table of TOML file path. Keys
// are flag names, with dashes or underscores; an unknown key is an error, and
// so is a bad value, even of a flag set elsewhere. Every value goes through
// the flag's own Set: a string or a number as its text, an on/off flag only a
// TOML boolean, a repeatable flag a list (or one string), replacing rather than
// adding to nothing. Errors are one line naming the file and the key; origin[flag]
// gets the prefix for later checks of the values set here.
func applyConfig(fs *flag.FlagSet, path string, origin map[string]string) error {
	where := "config file " + path
	table, keys, err := loadConfig(path)
	if err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	byKey := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != ConfigFlag {
			byKey[f.Name] = f
			byKey[strings.ReplaceAll(f.Name, "-", "_")] = f
		}
	})
	type setting struct {
		key    string
		values []string
	}
	settings := map[string]setting{} // by flag name; a later key (max_empty_runs after max-empty-runs) wins
	var order []string
	for _, key := range keys {
		f, ok := byKey[key]
		if !ok {
			return fmt.Errorf("%s: [%s] has an unknown key %q", where, ConfigTable, key)
		}
		raw := table[key]
		values, err := configValues(f, raw)
		if err == nil {
			check := newFlagSet(&options{}, io.Discard) // every value is checked, even of a flag set elsewhere
			for _, v := range values {
				if err = check.Set(f.Name, v); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %s = %s: %v", where, key, tomlText(raw), oneLine(err.Error()))
		}
		if _, seen := settings[f.Name]; !seen {
			order = append(order, f.Name)
		}
		settings[f.Name] = setting{key, values}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, name := range order {
		if given[name] {
			continue
		}
		s := settings[name]
		origin[name] = fmt.Sprintf("%s: %s = %s: ", where, s.key, tomlText(table[s.key]))
		for _, v := range s.values {
			if err := fs.Set(name, v); err != nil { // checked above; kept for safety
				return fmt.Errorf("%s%v", origin[name], err)
			}
		}
	}
	return nil
}

// loadConfig reads the [worker] table of TOML file path (empty when it has
// none) and its keys in the order of the file.
func loadConfig(path string) (map[string]any, []string, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return nil, nil, fmt.Errorf("cannot read: %v", err)
	}
	var data map[string]any
	meta, err := toml.Decode(string(text), &data)
	if err != nil {
		return nil, nil, fmt.Errorf("not valid TOML: %s", oneLine(err.Error()))
	}
	raw, ok := data[ConfigTable]
	if !ok {
		return nil, nil, nil
	}
	table, ok := raw.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("%s must be a table ([%s])", ConfigTable, ConfigTable)
	}
	var keys []string
	for _, key := range meta.Keys() {
		if len(key) == 2 && key[0] == ConfigTable {
			keys = append(keys, key[1])
		}
	}
	return table, keys, nil
}

// configValues is the text(s) that TOML value raw gives to flag f's Set.
func configValues(f *flag.Flag, raw any) ([]string, error) {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		on, ok := raw.(bool)
		if !ok {
			return nil, errors.New("expected true or false")
		}
		return []string{strconv.FormatBool(on)}, nil
	}
	if _, isList := f.Value.(*listFlag); isList {
		items, ok := raw.([]any)
		if !ok {
			items = []any{raw}
		}
		values := make([]string, 0, len(items))
		for _, item := range items {
			text, err := scalarText(item)
			if err != nil {
				return nil, err
			}
			values = append(values, text)
		}
		return values, nil
	}
	text, err := scalarText(raw)
	if err != nil {
		return nil, err
	}
	return []string{text}, nil
}

// scalarText is a TOML string or number as text; a float keeps a decimal
// point (3.0 is "3.0", which an integer flag refuses, as in Python).
func scalarText(raw any) (string, error) {
	switch v := raw.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		text := strconv.FormatFloat(v, 'g', -1, 64)
		if !strings.ContainsAny(text, ".eEnN") {
			text += ".0"
		}
		return text, nil
	}
	return "", errors.New("expected a string or a number")
}

// tomlText shows a TOML value in an error: strings quoted, the rest as Go prints them.
func tomlText(raw any) string {
	switch v := raw.(type) {
	case string:
		return strconv.Quote(v)
	case int64, float64:
		text, _ := scalarText(v)
		return text
	case []any:
		items := make([]string, len(v))
		for i, item := range v {
			items[i] = tomlText(item)
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return oneLine(fmt.Sprint(raw))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
