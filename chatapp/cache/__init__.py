"""Response cache: exact-match answers in Redis, or in-process when Redis is not set."""
