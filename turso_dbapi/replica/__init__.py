"""What a remote connection is: the parts every replica shares, and the HTTP-range cache."""
