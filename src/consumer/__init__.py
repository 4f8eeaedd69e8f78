"""The consumer: Kafka -> PostgreSQL, batched, deduplicated, offsets committed after durability."""
