"""The taskgrid coordinator: owns the database and the task lifecycle, serves gRPC.

lifecycle.py decides every status; store.py is the only module that runs SQL;
servicers/ convert between protobuf and the operations (tasks, leasing,
workers, output, watch, reaper). Nothing here is imported by the worker or
the client packages.
"""
