// Command taskgrid-example-go queues one task on a taskgrid coordinator, waits
// for it to end and prints its result.
//
//	go run . -coordinator 127.0.0.1:50051 -function add -args '[1, 2]'
//
// It uses only the generated stubs of taskgrid.local/worker/gen/taskgridv1
// (see go.mod for the replace directive that makes them importable) and
// google.golang.org/grpc. The result (the run's JSON text) goes to stdout; the
// exit code is 0 when the task ends COMPLETED, 1 when it ends otherwise, 2 for
// bad flags and 3 when a call fails. docs/client-protocol.md explains the calls.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "taskgrid.local/worker/gen/taskgridv1"
)

// waitSlice is how long one WaitTask call waits at most (the server caps it at 3600 s;
// a short slice keeps each call well under proxies' idle limits).
const waitSlice = 30 * time.Second

func main() {
	os.Exit(run())
}

func run() int {
	defaultAddress := os.Getenv("TASKGRID_COORDINATOR")
	if defaultAddress == "" {
		defaultAddress = "127.0.0.1:50051"
	}
	coordinators := flag.String("coordinator", defaultAddress,
		"coordinator HOST:PORT, or a comma-separated list tried in order ($TASKGRID_COORDINATOR)")
	function := flag.String("function", "add", "the function to run")
	args := flag.String("args", "[1, 2]", "the positional arguments, a JSON list")
	vars := flag.String("vars", "{}", "the keyword arguments, a JSON object")
	group := flag.String("group", "", "the group (default: the coordinator's, \"main\")")
	caFile := flag.String("tls-ca", os.Getenv("TASKGRID_TLS_CA"), "PEM CA of the coordinator's certificate: use TLS ($TASKGRID_TLS_CA)")
	wait := flag.Duration("wait", 5*time.Minute, "give up waiting after this long (0 = never)")
	flag.Parse()

	// Check the arguments here: the coordinator would refuse them too, in QueueTaskResponse.errors.
	var list []any
	if err := json.Unmarshal([]byte(*args), &list); err != nil {
		fmt.Fprintf(os.Stderr, "-args must be a JSON list: %v\n", err)
		return 2
	}
	var object map[string]any
	if err := json.Unmarshal([]byte(*vars), &object); err != nil {
		fmt.Fprintf(os.Stderr, "-vars must be a JSON object: %v\n", err)
		return 2
	}
	var addresses []string
	for _, a := range strings.Split(*coordinators, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addresses = append(addresses, a)
		}
	}
	if len(addresses) == 0 {
		fmt.Fprintln(os.Stderr, "-coordinator: give at least one HOST:PORT")
		return 2
	}

	creds := insecure.NewCredentials()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "-tls-ca: %v\n", err)
			return 2
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "-tls-ca: no PEM certificate in %s\n", *caFile)
			return 2
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	}
	c := &client{addresses: addresses, creds: creds, token: os.Getenv("TASKGRID_TOKEN")}
	defer c.close()

	ctx := context.Background()
	if *wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *wait)
		defer cancel()
	}

	// Args travel as JSON text (`args`): exact for any number. `args_value`
	// (a google.protobuf.ListValue, numbers as doubles) would do as well here.
	spec := &pb.TaskSpec{FunctionName: *function, Args: args, Vars: vars}
	if *group != "" {
		spec.GroupName = group
	}
	// A uuid of our own makes a resend after UNAVAILABLE safe: a second QueueTask with
	// it is refused in `errors` ("uuid": "already in use"), and the task is found by uuid.
	uuid := newUUID()
	spec.Uuid = &uuid
	var queued *pb.QueueTaskResponse
	attempts := 0
	err := c.call(ctx, func(ctx context.Context, s pb.ClientServiceClient) (err error) {
		attempts++
		queued, err = s.QueueTask(ctx, &pb.QueueTaskRequest{Task: spec})
		return err
	})
	if err != nil {
		return failed("QueueTask", err)
	}
	if len(queued.Errors) > 0 {
		if _, taken := queued.Errors["uuid"]; taken && len(queued.Errors) == 1 && attempts > 1 {
			// Our uuid is taken after a resend: the first attempt went through, its
			// answer was lost. The task is ours; wait for it by uuid.
		} else {
			for field, message := range queued.Errors {
				fmt.Fprintf(os.Stderr, "not queued: %s: %s\n", field, message)
			}
			return 2
		}
	}
	fmt.Fprintf(os.Stderr, "queued task %d (uuid %s)\n", queued.Id, uuid)

	ref := &pb.TaskRef{Ref: &pb.TaskRef_Uuid{Uuid: uuid}}
	for {
		var answer *pb.WaitTaskResponse
		err := c.call(ctx, func(ctx context.Context, s pb.ClientServiceClient) (err error) {
			// The call's own deadline leaves the server time to answer "not done yet".
			callCtx, cancel := context.WithTimeout(ctx, waitSlice+10*time.Second)
			defer cancel()
			answer, err = s.WaitTask(callCtx, &pb.WaitTaskRequest{Ref: ref, Timeout: waitSlice.Seconds()})
			return err
		})
		if err != nil {
			return failed("WaitTask", err)
		}
		if !answer.Done {
			fmt.Fprintf(os.Stderr, "task %d is %s\n", answer.Task.GetId(), answer.Task.GetStatus())
			continue
		}
		return report(answer)
	}
}

// report prints the ended task's result (or traceback) and gives the exit code.
func report(answer *pb.WaitTaskResponse) int {
	task, run := answer.Task, answer.Run
	fmt.Fprintf(os.Stderr, "task %d ended %s\n", task.GetId(), task.GetStatus())
	if task.GetStatus() != pb.TaskStatus_TASK_STATUS_COMPLETED {
		if run.GetTraceback() != "" {
			fmt.Fprintln(os.Stderr, run.GetTraceback())
		}
		return 1
	}
	// run_result is JSON text, absent when the run returned nothing (or kept no run record).
	if run != nil && run.RunResult != nil {
		fmt.Println(run.GetRunResult())
	} else {
		fmt.Println("null")
	}
	return 0
}

func failed(call string, err error) int {
	fmt.Fprintf(os.Stderr, "%s failed: %s: %s\n", call, status.Code(err), status.Convert(err).Message())
	return 3
}

// client holds one channel to the current coordinator and moves to the next
// address when that one is away (UNAVAILABLE), as docs/connecting.md describes.
type client struct {
	addresses []string
	current   int
	conn      *grpc.ClientConn
	creds     credentials.TransportCredentials
	token     string
}

func (c *client) close() {
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// call runs fn on the current coordinator, trying each address once while the answer is
// UNAVAILABLE. Every call this example makes is safe to send again.
func (c *client) call(ctx context.Context, fn func(context.Context, pb.ClientServiceClient) error) error {
	if c.token != "" {
		ctx = bearer(ctx, c.token)
	}
	var err error
	for range c.addresses {
		if c.conn == nil {
			c.conn, err = grpc.NewClient(c.addresses[c.current], grpc.WithTransportCredentials(c.creds))
			if err != nil {
				return err
			}
		}
		err = fn(ctx, pb.NewClientServiceClient(c.conn))
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s is unavailable, trying the next address\n", c.addresses[c.current])
		c.close()
		c.conn = nil
		c.current = (c.current + 1) % len(c.addresses)
	}
	return err
}

// bearer adds the `authorization: Bearer <token>` metadata every call needs when the
// coordinator has tokens (a token of role client or admin).
func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])  // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
