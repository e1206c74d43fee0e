"""Miss handlers: where the pages of a remote database come from."""
