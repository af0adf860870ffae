"""A local stand-in for Cloud Run Admin API v2 and Cloud Logging API v2.

The unmodified Google client libraries talk to it over REST/JSON; each revision runs as a
real container on a real Docker Engine (host networking, one port per instance on 127.0.0.1).
"""
