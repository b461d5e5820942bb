"""Ingress legs: what a call does with one ingress kind's media (docs/architecture.md)."""
