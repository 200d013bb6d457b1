"""A second front end: Modal's own gRPC protocol, so the official `modal` CLI and SDK,
unmodified, can use a ketch server (docs/modal-wire.md). Optional: it needs the
`modal-wire` extra (grpclib, protobuf and Modal's generated `modal_proto`)."""
