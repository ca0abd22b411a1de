"""Generated Protobuf code of esquadrao.common (run `make proto` to refresh)."""
