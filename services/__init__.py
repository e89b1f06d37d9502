"""Our services: the tracking server's start-up, the bucket init job, model serving, local mode."""
