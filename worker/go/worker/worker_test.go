package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	fn()
}

func TestRegisterRejectsBadAndDuplicateNames(t *testing.T) {
	noop := func(context.Context, []any, map[string]any) (any, error) { return nil, nil }
	name := fmt.Sprintf("test_noop_%d", time.Now().UnixNano()) // the registry is global: -count=N
	Register(name, noop)
	if _, ok := Handlers()[name]; !ok {
		t.Fatal("not registered")
	}
	mustPanic(t, "duplicate", func() { Register(name, noop) })
	mustPanic(t, "empty", func() { Register("", noop) })
	mustPanic(t, "reserved", func() { Register("@command", noop) })
	mustPanic(t, "nil", func() { Register("test_nil", nil) })
}

func TestOutputAndCurrentOutsideARun(t *testing.T) {
	if _, ok := Current(context.Background()); ok {
		t.Fatal("Current outside a run")
	}
	if Output(context.Background()) != io.Discard {
		t.Fatal("Output outside a run must discard")
	}
}

func TestFlags(t *testing.T) {
	o, err := parse([]string{"--coordinator", "h:1", "--group", "a", "--group", "b", "--heartbeat", "0.5",
		"--allow-commands", "--allow-executable", "/bin/sh", "--log-level", "debug"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.coordinator != "h:1" || strings.Join(o.groups, ",") != "a,b" || o.heartbeat != 0.5 ||
		!o.allowCommands || len(o.executables) != 1 {
		t.Fatalf("parsed %+v", o)
	}
	for _, bad := range [][]string{
		{"--heartbeat", "0"}, {"--concurrency", "0"}, {"--kill-grace", "-1"},
		{"--log-level", "loud"}, {"extra"},
	} {
		if _, err := parse(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestRunRefusesAPlainTextTokenToAnotherMachine(t *testing.T) {
	var stderr bytes.Buffer
	code := Run([]string{"--coordinator", "10.9.8.7:50051", "--token", "s3cret", "--allow-commands"}, &stderr)
	if code != ExitUsage || strings.Contains(stderr.String(), "s3cret") ||
		!strings.Contains(stderr.String(), "plain text") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
}

func TestRunRefusesABadCoordinatorList(t *testing.T) {
	var stderr bytes.Buffer
	code := Run([]string{"--coordinator", "10.9.8.7:50051,,10.9.8.8:50051", "--allow-commands"}, &stderr)
	if code != ExitUsage || !strings.Contains(stderr.String(), "empty address") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
}

func TestAllowExecutableImpliesAllowCommands(t *testing.T) {
	o, err := parse([]string{"--allow-executable", "/bin/sh"}, io.Discard)
	if err != nil || !o.allowCommands || len(o.executables) != 1 {
		t.Fatalf("parsed %+v, %v", o, err)
	}
	if o, err = parse(nil, io.Discard); err != nil || o.allowCommands {
		t.Fatalf("commands allowed by default: %+v, %v", o, err)
	}
}

func TestRunRefusesAWorkerThatCanRunNothing(t *testing.T) {
	var stderr bytes.Buffer
	code := run([]string{"--coordinator", "127.0.0.1:1"}, &stderr, nil)
	if code != ExitUsage || stderr.String() != "taskgrid-worker: "+NothingToRun+"\n" {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
	noop := func(context.Context, []any, map[string]any) (any, error) { return nil, nil }
	// with a handler, or with commands allowed, it gets past that check (and stops at the
	// next one here: a token in plain text to another machine)
	for _, c := range []struct {
		args     []string
		handlers map[string]Handler
	}{
		{nil, map[string]Handler{"noop": noop}},
		{[]string{"--allow-commands"}, nil},
		{[]string{"--allow-executable", "/bin/sh"}, nil},
	} {
		stderr.Reset()
		args := append([]string{"--coordinator", "10.9.8.7:50051", "--token", "s3cret"}, c.args...)
		if code := run(args, &stderr, c.handlers); code != ExitUsage ||
			!strings.Contains(stderr.String(), "plain text") {
			t.Fatalf("%v: code %d, stderr %q", c.args, code, stderr.String())
		}
	}
}
