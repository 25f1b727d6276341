"""/v1/responses kept server-side: each stored response is a turn of a conversation."""
