package worker_test

import (
	"context"
	"fmt"

	"taskgrid.local/worker/worker"
)

// A worker binary with one Go handler: build it with
// `CGO_ENABLED=0 go build` and start it with the usual flags.
func Example() {
	worker.Register("greet", func(ctx context.Context, args []any, vars map[string]any) (any, error) {
		info, _ := worker.Current(ctx)
		_, _ = fmt.Fprintf(worker.Output(ctx), "greeting for task %d\n", info.ID)
		if len(args) == 0 {
			return nil, fmt.Errorf("greet needs a name")
		}
		return fmt.Sprintf("hello %v", args[0]), nil
	})
	// worker.Main() would now parse os.Args, register with the coordinator and serve.
}
