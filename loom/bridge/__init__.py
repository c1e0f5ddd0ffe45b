"""The loom.v1 gRPC bridge. Generated protobuf code lives in ``loom.bridge._pb`` (see protogen)."""
