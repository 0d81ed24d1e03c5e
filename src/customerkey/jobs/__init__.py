"""Background work: the durable job queue, workers, and the job kinds."""
