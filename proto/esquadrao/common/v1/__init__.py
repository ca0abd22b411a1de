"""Generated Protobuf code of esquadrao.common.v1 (run `make proto` to refresh)."""
