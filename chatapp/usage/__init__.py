"""Usage accounting: per-user totals of tokens and cost, and the monthly token budget."""
