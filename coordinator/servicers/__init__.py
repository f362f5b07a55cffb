"""gRPC servicers: one per service, thin (convert, call one operation, convert).

Only this package (with the worker agent and the client's private modules)
imports the generated stubs.
"""
