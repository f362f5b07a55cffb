// Command taskgrid-worker is the stock Go worker: it registers no handlers,
// so it runs command tasks only (start it with --allow-commands). To run Go
// functions, write your own main that calls worker.Register, then worker.Main.
package main

import "taskgrid.local/worker/worker"

func main() {
	worker.Main()
}
