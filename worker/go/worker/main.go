package worker

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"taskgrid.local/worker/agent"
	"taskgrid.local/worker/runner"
)

// Exit codes besides 0 (done), agent.ExitRejected (1, registration
// rejected as invalid), agent.ExitAuth (5, credentials rejected) and
// agent.ExitNameTaken (6, another live worker kept this worker's name).
const ExitUsage = 2

// Environment variables read when the matching flag is not given (every
// flag has one, EnvName(flag); these are the ones shared with the Python
// worker and the client CLI).
const (
	EnvToken   = "TASKGRID_TOKEN"
	EnvTLSCA   = "TASKGRID_TLS_CA"
	EnvTLSCert = "TASKGRID_TLS_CERT"
	EnvTLSKey  = "TASKGRID_TLS_KEY"
)

// DefaultConcurrency is how many tasks run at once unless --concurrency says otherwise.
const DefaultConcurrency = 1

// NothingToRun is the one line (after "taskgrid-worker: ") with which a worker that could
// run no task refuses to start, exit code ExitUsage: no handler is registered and command
// tasks are not allowed. The Python worker refuses the same way without --tasks.
const NothingToRun = "nothing to run: no handlers are registered (worker.Register) and command tasks " +
	"are not allowed (--allow-commands or --allow-executable PATH)"

// Main runs the worker with os.Args and the registered handlers, then exits
// with its exit code. It is the only place that installs signal handlers:
// a first SIGTERM or SIGINT drains the worker like TERMINATE (no more
// leases, running tasks finish and are reported, exit 0); a second acts
// like KILL (running tasks are stopped and reported STOPPED, exit 0).
func Main() {
	os.Exit(Run(os.Args[1:], os.Stderr))
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	config                                       string
	coordinator, name, logLevel, logFormat       string
	metricsListen                                string
	groups, executables                          listFlag
	heartbeat, killGrace                         float64
	concurrency, maxEmptyRuns                    int
	token, tlsCA, tlsCert, tlsKey, tlsServerName string
	useTLS, insecure, allowCommands              bool
	inProcessHandlers                            bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	return parseEnv(args, stderr, lookupEnv)
}

// parseEnv parses args, then fills the flags they left out from TASKGRID_<FLAG>,
// then the ones still left from the [worker] table of the --config file
// (or $TASKGRID_CONFIG): command line > environment > config file > default.
func parseEnv(args []string, stderr io.Writer, getenv func(string) (string, bool)) (*options, error) {
	o := &options{}
	fs := newFlagSet(o, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	origin := map[string]string{}
	if err := applyEnv(fs, getenv, origin); err != nil {
		return nil, err
	}
	if o.config != "" {
		if err := applyConfig(fs, o.config, origin); err != nil {
			return nil, err
		}
	}
	// where prefixes a check of flag name's value with where that value came from.
	where := func(name string) string { return origin[name] }
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case o.heartbeat <= 0:
		return nil, fmt.Errorf("%s--heartbeat must be greater than 0", where("heartbeat"))
	case o.concurrency < 1:
		return nil, fmt.Errorf("%s--concurrency must be at least 1", where("concurrency"))
	case o.maxEmptyRuns < 0:
		return nil, fmt.Errorf("%s--max-empty-runs must be at least 0", where("max-empty-runs"))
	case o.killGrace < 0:
		return nil, fmt.Errorf("%s--kill-grace must be at least 0", where("kill-grace"))
	}
	// --allow-executable implies --allow-commands, as in the Python worker.
	o.allowCommands = o.allowCommands || len(o.executables) > 0
	if _, err := parseLevel(o.logLevel); err != nil {
		return nil, fmt.Errorf("%s%v", where("log-level"), err)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("%s--log-format: unknown format %q (text or json)", where("log-format"), o.logFormat)
	}
	return o, nil
}

// newFlagSet defines every flag of the worker on a new FlagSet, into o.
func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("taskgrid-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, ConfigFlag, "",
		"TOML file of settings, its [worker] table, keys named like the flags (`PATH`; also $"+EnvConfig+
			"); see docs/configuration.md")
	fs.StringVar(&o.coordinator, "coordinator", agent.DefaultCoordinator,
		"coordinator address (`HOST:PORT`), or several separated by commas, failed over in order; "+
			"a name stands for all its DNS records")
	fs.Var(&o.groups, "group", "`group` to take tasks from; repeatable (default main)")
	fs.StringVar(&o.name, "name", "", "unique worker name (default hostname#pid)")
	fs.Float64Var(&o.heartbeat, "heartbeat", agent.DefaultHeartbeat.Seconds(), "`SECONDS` between heartbeats")
	fs.IntVar(&o.concurrency, "concurrency", DefaultConcurrency, "tasks run at once (`N`)")
	fs.IntVar(&o.maxEmptyRuns, "max-empty-runs", 0, "exit after `N` consecutive empty lease calls while idle (0: never)")
	fs.Float64Var(&o.killGrace, "kill-grace", runner.DefaultKillGrace.Seconds(),
		"`SECONDS` between SIGTERM and SIGKILL on timeout or stop, for commands and handler processes "+
			"(with --in-process-handlers: how long a cancelled handler may take before it is abandoned)")
	fs.StringVar(&o.token, "token", "", "bearer `TOKEN` of role worker (default $"+EnvToken+"; prefer it: a command line is visible to other users)")
	fs.BoolVar(&o.useTLS, "tls", false, "use TLS, trusting the system's root CAs (implied by --tls-*)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "`PEM` CA bundle that signed the coordinator (default $"+EnvTLSCA+")")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "`PEM` client certificate for mTLS (default $"+EnvTLSCert+")")
	fs.StringVar(&o.tlsKey, "tls-key", "", "`PEM` private key of --tls-cert (default $"+EnvTLSKey+")")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "",
		"`NAME` to check the coordinator's certificate against instead of the host dialed (implies --tls)")
	fs.BoolVar(&o.insecure, "insecure", false, "allow sending the token in plain text to another machine")
	fs.BoolVar(&o.allowCommands, "allow-commands", false,
		"run command tasks: any program, as this worker's user (see --allow-executable)")
	fs.Var(&o.executables, "allow-executable",
		"run command tasks of this program only (a `PATH`, or a name looked up in PATH now); repeatable; implies --allow-commands")
	fs.BoolVar(&o.inProcessHandlers, "in-process-handlers", false,
		"run Go handlers on goroutines of the worker process instead of one child process per slot; "+
			"limits: a handler that ignores its context keeps running after TIMEOUT or STOPPED while its slot "+
			"takes other runs (so more than --concurrency may run, and a retry beside the old attempt), "+
			"a panic outside the handler's goroutine or an os.Exit ends the worker, and only worker.Output(ctx) "+
			"is captured (not os.Stdout, os.Stderr, log or subprocesses)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "",
		"serve Prometheus metrics on http://`HOST:PORT`/metrics (port 0 = any free; docs/metrics.md)")
	fs.StringVar(&o.logLevel, "log-level", "INFO", "DEBUG, INFO, WARNING or ERROR")
	fs.StringVar(&o.logFormat, "log-format", "text", "log lines on stderr: text, or json (one object per line)")
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "Usage of %s (every flag can also be set by %s<FLAG>, "+
			"e.g. %s, or by its key in the [%s] table of the --config file; "+
			"the command line wins over the environment, the environment over the file):\n",
			fs.Name(), EnvPrefix, EnvName("max-empty-runs"), ConfigTable)
		fs.PrintDefaults()
	}
	return fs
}

func parseLevel(name string) (slog.Level, error) {
	switch strings.ToUpper(name) {
	case "DEBUG":
		return slog.LevelDebug, nil
	case "INFO":
		return slog.LevelInfo, nil
	case "WARNING", "WARN":
		return slog.LevelWarn, nil
	case "ERROR", "CRITICAL":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level: unknown level %q", name)
}

func orEnv(value, name string) string {
	if value != "" {
		return value
	}
	return os.Getenv(name)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Run runs the worker with command-line args and the registered handlers,
// logging to stderr; it returns the exit code. In a handler process (the
// worker's binary re-executed with runner.ChildEnv set, one per slot) it
// serves the registered handlers to its parent worker instead: this is why
// handlers must be registered before Main or Run is called.
func Run(args []string, stderr io.Writer) int {
	if os.Getenv(runner.ChildEnv) == "1" {
		return runner.ServeChild(Handlers())
	}
	return run(args, stderr, Handlers())
}

// selfExecutable is the path that re-executes this binary: /proc/self/exe
// still works when the file was replaced or removed since the start.
func selfExecutable() (string, error) {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return "/proc/self/exe", nil
	}
	return os.Executable()
}

// run is Run with these handlers.
func run(args []string, stderr io.Writer, handlers map[string]runner.Handler) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "taskgrid-worker:", err)
		return ExitUsage
	}
	if len(handlers) == 0 && !o.allowCommands {
		_, _ = fmt.Fprintln(stderr, "taskgrid-worker: "+NothingToRun)
		return ExitUsage
	}
	level, _ := parseLevel(o.logLevel)
	logger, err := newLogger(o.logFormat, level, stderr)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "taskgrid-worker:", err)
		return ExitUsage
	}
	slog.SetDefault(logger)
	name := o.name
	if name == "" {
		host, _ := os.Hostname()
		name = fmt.Sprintf("%s#%d", host, os.Getpid())
	}
	var commands *runner.CommandPolicy
	if o.allowCommands {
		if commands, err = runner.NewCommandPolicy(o.executables); err != nil {
			logger.Error("bad --allow-executable", "error", err)
			return ExitUsage
		}
	}
	handlerExecutable := ""
	if len(handlers) > 0 && !o.inProcessHandlers {
		if handlerExecutable, err = selfExecutable(); err != nil {
			logger.Error("cannot find this binary to run handlers out of process (see --in-process-handlers)",
				"error", err)
			return ExitUsage
		}
	}
	token := o.token
	if token == "" {
		token = os.Getenv(EnvToken)
	}
	a, err := agent.New(agent.Config{
		Coordinator: o.coordinator,
		Security: agent.Security{
			Token: token, TLS: o.useTLS, CAFile: orEnv(o.tlsCA, EnvTLSCA),
			CertFile: orEnv(o.tlsCert, EnvTLSCert), KeyFile: orEnv(o.tlsKey, EnvTLSKey),
			ServerName: o.tlsServerName, Insecure: o.insecure,
		},
		GroupNames: o.groups, WorkerName: name, Heartbeat: seconds(o.heartbeat),
		MaxEmptyRuns: o.maxEmptyRuns, Concurrency: o.concurrency, KillGrace: seconds(o.killGrace),
		Handlers: handlers, HandlerExecutable: handlerExecutable, Commands: commands, Logger: logger, MetricsListen: o.metricsListen,
	})
	if err != nil {
		logger.Error("cannot start the worker", "error", err)
		return ExitUsage
	}
	stop := handleSignals(a, logger)
	defer stop()
	return a.Run()
}

// handleSignals drains on the first SIGTERM/SIGINT and stops tasks on the second.
func handleSignals(a *agent.Agent, logger *slog.Logger) func() {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		received := 0
		for {
			select {
			case sig := <-signals:
				received++
				if received == 1 {
					logger.Info("signal received: finishing running tasks, then leaving (send it again to stop them now)",
						"signal", sig.String())
					a.RequestDrain()
				} else {
					logger.Info("signal received again: stopping tasks and leaving", "signal", sig.String())
					a.RequestExit()
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(signals)
		close(done)
	}
}
