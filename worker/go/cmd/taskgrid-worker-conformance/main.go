// Command taskgrid-worker-conformance is the Go worker with the conformance
// handlers (package conformance) registered: tests/conformance runs the same
// scenarios against it and against the Python worker.
package main

import (
	"taskgrid.local/worker/conformance"
	"taskgrid.local/worker/worker"
)

func main() {
	conformance.Register()
	worker.Main()
}
