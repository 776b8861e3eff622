"""Deliveries: where partners' files arrive, when a delivery is complete, how it is pulled
and kept."""
