"""The tracking server's start-up (start.sh) and its artifact-store plugin (proxied_s3)."""
