"""Resilience plumbing: rate limiting (token buckets, adaptive rates), circuit breakers and
retry backoff. Shared by the whatsapp sender, the API rate limits and the campaigns pacer."""
