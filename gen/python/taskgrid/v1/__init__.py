"""Generated protobuf and gRPC stubs for taskgrid.v1 (do not edit; make protos)."""
