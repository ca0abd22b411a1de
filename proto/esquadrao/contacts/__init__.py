"""Generated Protobuf code of esquadrao.contacts (run `make proto` to refresh)."""
