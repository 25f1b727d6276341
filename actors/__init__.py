"""Ray actors: conversation shards holding hot context, SQL behind them."""
