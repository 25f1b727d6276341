"""Ray Data batch jobs (knowledge-base index builds, retrieval evaluation)."""
