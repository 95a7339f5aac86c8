"""Daemon adapters: read what a daemon's own configuration says about its jail."""
