"""Generated Protobuf code of esquadrao.contacts.v1 (run `make proto` to refresh)."""
