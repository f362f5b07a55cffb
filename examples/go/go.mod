module example.com/taskgrid-example-go

go 1.26.0

require (
	google.golang.org/grpc v1.85.0
	taskgrid.local/worker v0.0.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// taskgrid.local/worker is not fetchable with `go get`: point it at a checkout of the
// taskgrid repository (this path is relative to this go.mod; use your own checkout's path).
replace taskgrid.local/worker => ../../worker/go
