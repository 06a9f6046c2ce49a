"""I/O at the edge of the pledge service (Kafka, Redis); the domain knows none of it."""
