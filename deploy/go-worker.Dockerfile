# The Go worker (worker/go) as its own small image: one static binary on distroless, non-root.
# Build from the repository root:  docker build -f deploy/go-worker.Dockerfile -t taskgrid-go-worker:0.1.0 .
# The stock binary runs command tasks only (--allow-commands); the executables it may run must
# be in the image: build your own image FROM this one (or with your own main, worker/go/README.md).

# ---- build stage
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY worker/go/go.mod worker/go/go.sum ./
RUN go mod download
COPY worker/go ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/taskgrid-worker ./cmd/taskgrid-worker

# ---- final stage: no shell, no package manager, uid 65532
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="taskgrid-go-worker" \
      org.opencontainers.image.description="taskgrid Go worker (command tasks)" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/taskgrid-worker /usr/local/bin/taskgrid-worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/taskgrid-worker"]
CMD ["--help"]
